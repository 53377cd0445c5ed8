"""Reading text safely and writing files atomically.

Every error about user input is a `DataError` whose message names the file (and line when there is
one), so a command line tool can print it as one line and exit.
"""
import contextlib
import errno
import json
import multiprocessing
import os
import re
import secrets
import shutil
import signal
import stat
import sys
import tempfile
from contextlib import contextmanager

from .progress import Progress


class DataError(ValueError):
    """Bad user input: a missing, empty or malformed file, or an impossible option."""


def check_file(path):
    """Fail early, naming the file, if `path` is not a readable non-empty file."""
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise DataError(f"{path}: not a regular file")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: file is empty")


def decode_utf8(data, path, first_line=1):
    """Decode bytes as UTF-8; on failure name the file and the line of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_line + data.count(b"\n", 0, e.start)
        column = e.start - data.rfind(b"\n", 0, e.start)  # 1-based, in bytes
        raise DataError(f"{path}:{line}: invalid UTF-8 ({e.reason} at byte {column} of the line)") from None


def read_lines(path):
    """A whole UTF-8 file's lines, without '\\n' ('\\r' stays; a last line needs no newline, as fastBPE's
    getline reads them); a missing or empty file, or a bad byte, is a DataError naming it."""
    check_file(path)
    with open(path, "rb") as f:
        lines = decode_utf8(f.read(), path).split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def iter_line_blocks(path, block_bytes=1 << 22, desc=None):
    """Yield (first_line_number, list_of_lines) blocks of a UTF-8 text file, lines without '\\n'.

    Reading in blocks of whole lines keeps memory bounded and lets workers process blocks in parallel.
    With `desc`, the bytes read are shown on stderr (xlm/progress.py: a bar, or a line a minute).
    """
    check_file(path)
    line_no = 1
    rest = b""
    with open(path, "rb") as f, Progress(desc, os.path.getsize(path), unit="B") as progress:
        while True:
            chunk = f.read(block_bytes)
            if not chunk:
                break
            progress.update(len(chunk))
            chunk = rest + chunk
            cut = chunk.rfind(b"\n") + 1
            if cut == 0:
                rest = chunk
                continue
            rest = chunk[cut:]
            lines = decode_utf8(chunk[:cut], path, line_no).split("\n")[:-1]
            yield line_no, lines
            line_no += len(lines)
    if rest:
        yield line_no, [decode_utf8(rest, path, line_no)]


def iter_stdin_blocks(block_lines=4096, desc=None):
    """Yield (first_line_number, list_of_lines) blocks of standard input; a bad byte names its line. With
    `desc`, the bytes read are shown on stderr, of the input's size where it is a file."""
    block, first, size = [], 1, 0
    with Progress(desc, _stdin_bytes_left(), unit="B") as progress:
        for line_no, raw in enumerate(sys.stdin.buffer, 1):
            block.append(decode_utf8(raw, "<stdin>", line_no).rstrip("\r\n"))
            size += len(raw)
            if len(block) == block_lines:
                progress.update(size)
                yield first, block
                block, first, size = [], line_no + 1, 0
        progress.update(size)
    if block:
        yield first, block


def _stdin_bytes_left():
    """What is left to read of standard input where it is a regular file (`< file`), else None."""
    try:
        st = os.fstat(sys.stdin.fileno())
        return st.st_size - sys.stdin.buffer.tell() if stat.S_ISREG(st.st_mode) else None
    except (OSError, ValueError):
        return None


def _tmp_place(path):
    """The folder and the name prefix of `atomic_write`'s temporary files for `path`."""
    return os.path.dirname(os.path.abspath(path)), os.path.basename(path) + "."


def check_output(path):
    """Fail before any work, naming `path`, if a file cannot be written there: the folder is missing,
    not a folder, read-only or not ours, or `path` is a folder. Tries it for real (an empty temporary
    file, removed at once), which also catches read-only file systems and ACLs."""
    if os.path.isdir(path) or os.fspath(path).endswith(os.sep):
        raise DataError(f"{path}: is a folder, expected an output file name")
    try:
        # named unlike atomic_write's files: rank 0 of a distributed run removes those it finds at start
        # (`remove_stale_tmp`), while the other ranks may be probing the same folder
        with _private_tmp(path, "probe.") as (fd, probe):
            os.close(fd)
            os.remove(probe)
    except OSError as e:
        raise DataError(f"{path}: cannot write in {_tmp_place(path)[0]} ({e.strerror})") from None


def check_output_folder(path):
    """Fail before any work, naming `path`, if it cannot be made an output folder (os.makedirs): it, or
    the nearest of its parents that exists, is not a folder."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise DataError(f"{path}: {existing} is not a folder")


def remove_stale_tmp(path):
    """Remove what an `atomic_write(path)` killed by SIGKILL (or a power cut) left beside `path`; a `*` in
    the file name stands for any characters (`dump/*.pth`: beside every checkpoint). Returns the paths
    removed. Only for files that no running process is writing."""
    directory, prefix = _tmp_place(path)
    # `_private_tmp`'s 8 random characters: nothing else of that shape is taken for ours
    stale = re.compile(".*".join(map(re.escape, prefix.split("*"))) + r"[a-z0-9_]{8}\.tmp")
    removed = []
    for name in sorted(os.listdir(directory)):
        tmp = os.path.join(directory, name)
        if stale.fullmatch(name) and os.path.isfile(tmp):
            try:
                os.remove(tmp)
            except FileNotFoundError:  # gone since the listing: nothing left to do
                continue
            removed.append(tmp)
    return removed


def exit_on_signals():
    """Make SIGTERM, SIGINT and SIGHUP end this process by SystemExit, so that `finally` blocks run and
    `atomic_write` removes its temporary file (a plain SIGTERM would skip them). A process forked from
    this one later exits silently on them unless it sets its own handlers."""
    main_pid = os.getpid()
    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def stop(signum, frame):
        if os.getpid() != main_pid:
            raise SystemExit(128 + signum)
        for s in signals:  # a second signal must not interrupt the cleaning up
            signal.signal(s, signal.SIG_IGN)
        print(f"error: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        raise SystemExit(128 + signum)

    for signum in signals:
        signal.signal(signum, stop)


def check_streams(*names, hint=""):
    """Fail before any work where a standard stream the command uses ("stdin", "stdout") was closed by its
    caller (`<&-`, `>&-`): Python then makes it None, and print() drops what it writes, silently."""
    for name in names:
        if getattr(sys, name) is None:
            raise DataError(f"standard {'input' if name == 'stdin' else 'output'} is closed{hint}")


@contextmanager
def writing_stdout():
    """Around a filter that writes to standard output: a reader that stopped early (`| head`) ends the
    process quietly with the shell's status of SIGPIPE, as `cat` ends; a write that fails otherwise (a
    full disk) is one error line. Either way the process ends at once, its worker processes killed: a
    worker pool's orderly shutdown would wait for a task still being sent to them, forever."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        _end_now(128 + signal.SIGPIPE)
    except OSError as e:
        if e.errno not in WRITE_ERRORS:
            raise
        print(f"error: cannot write the output ({e.strerror})", file=sys.stderr, flush=True)
        _end_now(1)


def _end_now(status):
    for child in multiprocessing.active_children():
        child.kill()
    os._exit(status)


@contextmanager
def atomic_write(path, mode="wb"):
    """Write to a temporary file next to `path`, fsync, then rename over `path`.

    An interrupted writer leaves either the previous file or no file under `path`, never half a file.
    A file that cannot be made there (a missing or read-only folder) is a DataError naming `path`, as
    `check_output`'s, before anything is written.
    """
    with _private_tmp(path) as (fd, tmp):
        # the file was made private (0600); the result gets the usual umask-based mode, as open() would
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        f = os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"}))
        try:
            yield f
            f.flush()
            os.fsync(f.fileno())
        except BaseException as e:
            with contextlib.suppress(OSError):  # what its buffer still holds cannot be written either
                f.close()
            reason = failed_write(e, tmp) if isinstance(e, (OSError, RuntimeError)) else None
            if reason is None:
                raise
            raise DataError(f"{path}: cannot write it ({reason}); the previous file, if any, is kept") from None
        f.close()
        os.replace(tmp, path)


WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)


def failed_write(error, path):
    """Why writing `path` failed, if `error` is a failed write: a full disk or quota, a file too large, an I/O
    error (torch.save reports them as a RuntimeError of its own, which names no cause: a file system
    with no space left is taken to be it); else None."""
    if isinstance(error, OSError):
        return error.strerror if error.errno in WRITE_ERRORS else None
    if "PytorchStreamWriter" not in str(error) and "unexpected pos" not in str(error):
        return None
    try:
        full = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free < (1 << 20)
    except OSError:
        full = False
    return os.strerror(errno.ENOSPC) if full else str(error).strip().splitlines()[0]


@contextmanager
def atomic_folder(out_dir):
    """A temporary folder `NAME.<8 characters>.tmp` beside `out_dir`, renamed to `out_dir` when the block
    ends without error (its files fsynced first), removed otherwise: `out_dir` appears only complete."""
    path = os.path.abspath(out_dir)
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=parent)
    except OSError as e:
        raise DataError(f"{out_dir}: cannot write in {parent} ({e.strerror})") from None
    try:
        umask = os.umask(0)  # mkdtemp's folder is private (0700): give the result the mode os.mkdir would
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        yield tmp
        for name in os.listdir(tmp):
            fd = os.open(os.path.join(tmp, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        try:
            os.replace(tmp, path)  # replaces an empty folder only
        except OSError as e:
            raise DataError(f"{out_dir}: cannot be replaced ({e.strerror}); nothing was kept") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def _private_tmp(path, kind=""):
    """A new private file `NAME.<kind><8 random hex digits>.tmp` beside `path`, as (fd, its path), removed if
    the block fails; one that cannot be made is a DataError naming `path` and its folder.

    Its name is chosen before the file is made, so an exception at any instant, even a signal's between
    the creation and the return (where `tempfile.mkstemp` would leave the file to no one), removes it.
    """
    directory, prefix = _tmp_place(path)
    tmp = None
    try:
        while True:
            tmp = os.path.join(directory, f"{prefix}{kind}{secrets.token_hex(4)}.tmp")
            try:
                fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
                break
            except FileExistsError:
                tmp = None  # another file's name: not ours to remove
            except OSError as e:
                tmp = None
                raise DataError(f"{path}: cannot write in {directory} ({e.strerror})") from None
        yield fd, tmp
    except BaseException:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_json(path, kind):
    """The JSON value of a file, checked to be of type `kind` (dict or list); a missing, empty, non-UTF-8 or
    malformed file is a DataError naming it."""
    check_file(path)
    with open(path, "rb") as f:
        text = decode_utf8(f.read(), path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    except RecursionError:
        raise DataError(f"{path}: not valid JSON (nested too deeply)") from None
    if not isinstance(value, kind):
        raise DataError(f"{path}: expected a JSON {'object' if kind is dict else 'array'}, "
                        f"found {type(value).__name__}")
    return value


def check_output_file(out_path):
    """Fail before any work, naming `out_path`, if save_checkpoint cannot write it: it is a folder, the
    folder it would be in cannot be written, or one of its missing parents would be below a file."""
    if os.path.lexists(out_path) or os.path.isdir(os.path.dirname(os.path.abspath(out_path))):
        check_output(out_path)
    else:
        check_output_folder(out_path)  # save_checkpoint makes the missing parents
