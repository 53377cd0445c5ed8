"""fastBPE's four commands (learnbpe, applybpe, applybpe_stream, getvocab) on the compiled fastBPE
when tools/install_fastbpe.sh could build it, else on xlm.data.bpe, which writes the same bytes.

Inputs go through the same checks either way, so bad input is one DataError naming the file and line
(fastBPE itself aborts on a failed assert, and reads invalid UTF-8 as it is). learnbpe and getvocab feed
the compiled tool every file as one stream on its standard input, each file checked for UTF-8 as it
streams and its last word dropped when nothing follows it, as fastBPE does when it reads files.
"""
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading

from . import bpe
from ..fileio import DataError, atomic_write, check_file, check_output, decode_utf8, remove_stale_tmp

BUILT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                     "tools", "fastBPE", "fast")


def binary():
    """The compiled fastBPE: $FASTBPE when set (set and empty: none), else tools/fastBPE/fast if built."""
    path = os.environ.get("FASTBPE", BUILT)
    if path and not os.access(path, os.X_OK):
        if "FASTBPE" in os.environ:
            raise DataError(f"FASTBPE={path}: not an executable")
        return None
    return path or None


def _check_exit(command, returncode, err):
    if returncode == -signal.SIGBUS:  # applybpe writes its output through a memory map
        raise DataError(f"fastBPE {command} failed (SIGBUS): its output could not be written (no space left on "
                        "the device?)")
    if returncode != 0:
        err.seek(0)
        lines = err.read().decode("utf-8", "replace").strip().splitlines() or ["no message"]
        raise DataError(f"fastBPE {command} failed (exit status {returncode}): {lines[-1]}")


def _run(args, pass_fds=()):
    with tempfile.TemporaryFile() as err:
        _check_exit(args[0], subprocess.run([binary(), *args], stderr=err, pass_fds=pass_fds).returncode, err)


def _check_utf8(path, sink=None, block_bytes=1 << 22):
    """Read a text file in blocks, checking that it is UTF-8; copy to `sink` what fastBPE reads of it
    (all up to the last ' ' or '\\n'). Returns (the number of bytes it reads, whether they hold a word)."""
    check_file(path)
    line_no, rest, n_read, has_word = 1, b"", 0, False
    with open(path, "rb") as f:
        while True:
            block = f.read(block_bytes)
            data = rest + block
            cut = len(data) if not block else max(data.rfind(b"\n"), data.rfind(b" ")) + 1
            decode_utf8(data[:cut], path, line_no)
            line_no += data.count(b"\n", 0, cut)
            if block:
                n_read += cut
                has_word = has_word or bool(data[:cut].replace(b"\n", b" ").strip(b" "))
                if sink:
                    sink.write(data[:cut])
            rest = data[cut:]
            if not block:
                if data:
                    bpe.warn_last_word_dropped(path)
                return n_read, has_word


def _copy_stdin_lines(sink):
    """Standard input to `sink` line by line (applybpe_stream answers each line), checked to be UTF-8."""
    for line_no, raw in enumerate(sys.stdin.buffer, 1):
        decode_utf8(raw, "<stdin>", line_no)
        sink.write(raw)
        sink.flush()


def _relay(source, out, failed, proc):
    """Copy `source` (a pipe) to the file `out` as it comes (applybpe_stream answers each line at once);
    a write that fails (a full disk, a closed reader) stops the tool, and the error goes into `failed`.
    It writes to the file descriptor, past `out`'s buffer, so that a thread stuck on a reader that stopped
    reading holds no lock the interpreter's exit would wait for."""
    try:
        while chunk := os.read(source.fileno(), 1 << 16):
            view = memoryview(chunk)
            while view:
                view = view[os.write(out.fileno(), view):]
    except (OSError, ValueError) as e:  # ValueError: `source` closed by a run that stopped without waiting
        failed.append(e)
        proc.kill()


def _piped(command, feed, out):
    """Run `fast COMMAND...` on what `feed(pipe)` writes to its standard input; its output goes to `out`
    through this process, since the compiled tool does not check its writes (its output cut short by a
    full disk, it exits with status 0): a failed write is raised here, as this process's own."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([binary(), *command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        failed = []
        out.flush()  # what `out` holds goes first
        relay = threading.Thread(target=_relay, args=(proc.stdout, out, failed, proc), daemon=True)
        relay.start()
        stopped = True
        try:
            feed(proc.stdin)
            stopped = False
        except BrokenPipeError:
            stopped = False  # the tool stopped reading: its exit status and message say why
        except BaseException:
            proc.kill()
            raise
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
            proc.wait()
            # stopped (a signal, an error): not held by a relay stuck on a reader that stopped reading
            relay.join(1.0 if stopped else None)
            proc.stdout.close()
        if failed:
            raise failed[0]
        _check_exit(command[0], proc.returncode, err)


def _on_stdin(command, paths, out, if_no_words=None):
    """Run `fast COMMAND ... -` on the files streamed to its standard input; raise `if_no_words` rather
    than run it on nothing."""
    def feed(pipe):
        has_word = [_check_utf8(path, pipe)[1] for path in paths]
        if if_no_words and not any(has_word):
            raise if_no_words
    _piped([*command, "-"], feed, out)


def _checked_codes(codes_path, vocab_path, tmp_dir):
    """Check the codes and vocabulary; returns the codes path the compiled tool can read (subword-nmt
    codes are rewritten in fastBPE's three columns)."""
    merges = bpe.read_codes(codes_path)
    if vocab_path:
        bpe.read_vocab(vocab_path)
    if bpe.is_fastbpe_codes(codes_path):
        return codes_path
    converted = os.path.join(tmp_dir, "codes")
    with open(converted, "w", encoding="utf-8") as f:
        bpe.write_codes([(a, b, 0) for a, b in merges], f)
    return converted


def learnbpe(n_codes, paths, out):
    """Codes to the binary file `out`: fastBPE's, up to the last merge of a pair that occurs in the text.
    Past it (more codes asked for than the text has pairs to merge) fastBPE writes merges of count 0, one
    of them again and again, which its applybpe then aborts on: those are left out, with a warning."""
    for path in paths:
        check_file(path)
    # each merge of a pair that occurs shortens the text by a symbol at least: there are fewer than its
    # bytes, and past them fastBPE goes on writing merges of count 0 up to N (hours for a large N)
    n_learned = min(n_codes, sum(os.path.getsize(path) for path in paths))
    with tempfile.TemporaryFile() as codes:
        if binary():
            _on_stdin(["learnbpe", str(n_learned)], paths, codes, bpe.nothing_to_learn(paths))  # it crashes on it
        else:
            codes.write(bpe.codes_text(bpe.learn_bpe(paths, n_learned)).encode("utf-8"))
        codes.seek(0)
        n_kept = 0
        for line in codes:
            if line.split(b" ")[2].strip() == b"0":
                break
            out.write(line)
            n_kept += 1
    if n_kept < n_codes:
        print(f"warning: learnbpe: {' '.join(map(str, paths))} has {n_kept} pairs to merge, fewer than the "
              f"{n_codes} codes asked for: the codes stop there", file=sys.stderr)


def getvocab(paths, out):
    if not binary():
        out.write(bpe.vocab_text(bpe.get_vocab(paths)).encode("utf-8"))
        return
    _on_stdin(["getvocab"], paths, out)


def applybpe(output_path, input_path, codes_path, vocab_path=None):
    """BPE a file; the output appears under its name only when complete. A temporary output that a
    killed run left behind is removed first."""
    check_output(output_path)
    remove_stale_tmp(output_path)
    if not binary():
        bpe.apply_bpe_file(input_path, output_path, codes_path, vocab_path)
        return
    with tempfile.TemporaryDirectory() as tmp_dir:
        codes = _checked_codes(codes_path, vocab_path, tmp_dir)
        if _check_utf8(input_path)[0] == 0:
            raise bpe.nothing_to_apply(input_path)
        with atomic_write(output_path) as f:
            # the compiled tool opens its output by name: it gets the temporary file atomic_write renames
            _run(["applybpe", f"/dev/fd/{f.fileno()}", input_path, codes] + ([vocab_path] if vocab_path else []),
                 pass_fds=(f.fileno(),))


def applybpe_stream(codes_path, vocab_path=None):
    """Standard input to standard output, line by line."""
    if not binary():
        bpe.apply_bpe_stream(sys.stdin.buffer, sys.stdout.buffer, codes_path, vocab_path)
        return
    with tempfile.TemporaryDirectory() as tmp_dir:
        codes = _checked_codes(codes_path, vocab_path, tmp_dir)
        sys.stdout.flush()  # the text layer's too
        _piped(["applybpe_stream", codes] + ([vocab_path] if vocab_path else []), _copy_stdin_lines, sys.stdout.buffer)
