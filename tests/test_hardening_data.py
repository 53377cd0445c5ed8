"""The data tools on bad input, bad output locations and kills (issue 12): each run either does its job or
exits non-zero with one `error:` line naming the file, line or flag — never a hang (every run has a
timeout), never a traceback — and leaves no temporary file behind."""
import contextlib
import errno
import importlib.util
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from xlm.data.binarized import load_binarized
from xlm.fileio import DataError

FAST = ROOT / "tools" / "fastBPE" / "fast"
# FASTBPE="" runs the Python fastBPE; the compiled one where tools/install_fastbpe.sh could build it
BACKENDS = [pytest.param("", id="python"),
            pytest.param(str(FAST), id="compiled",
                         marks=pytest.mark.skipif(not os.access(FAST, os.X_OK), reason="fastBPE not built"))]
ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0


def start(args, fastbpe=None, stdin=subprocess.DEVNULL, new_group=False):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    if fastbpe is not None:
        env["FASTBPE"] = fastbpe
    return subprocess.Popen([sys.executable, *map(str, args)], stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="surrogateescape", cwd=ROOT,
                            env=env, start_new_session=new_group)


def cli(args, fastbpe=None, stdin=None, timeout=60):
    """Run a command to its end; a hang is a TimeoutExpired, so a failed test."""
    proc = start(args, fastbpe, subprocess.PIPE if stdin is not None else subprocess.DEVNULL)
    try:
        proc.stdout_text, proc.stderr_text = proc.communicate(stdin, timeout=timeout)
    finally:
        proc.kill()
    return proc


def assert_one_error(proc, *fragments):
    """Non-zero exit, no traceback, exactly one `error:` line (other lines are logging), holding `fragments`."""
    errors = [line for line in proc.stderr_text.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr_text and len(errors) == 1, proc.stderr_text
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


def tmp_files(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture
def files(tmp_path):
    """Small valid inputs, and the bad ones a careless user hands over."""
    (tmp_path / "in").write_text("hello world\nthe cat\n", encoding="utf-8")
    (tmp_path / "codes").write_text("h e 5\nl l 4\n", encoding="utf-8")
    (tmp_path / "vocab").write_text("he@@ 3\nllo 2\n", encoding="utf-8")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "garbled").write_text("h e 5\nnot a codes line\n", encoding="utf-8")
    (tmp_path / "binary").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(random.Random(0).randrange(256) for _ in range(300)))
    (tmp_path / "bad_vocab").write_text("he@@ 3\nllo\n", encoding="utf-8")
    (tmp_path / "huge_count").write_text("he@@ 99999999999\n", encoding="utf-8")
    (tmp_path / "folder").mkdir()
    return tmp_path


# ----------------------------------------------------------------------------- fastbpe: codes and vocabulary

BAD_CODES = [("missing", "missing: no such file"), ("empty", "empty: file is empty"),
             ("garbled", "garbled:2: expected 'LEFT RIGHT COUNT'"), ("binary", "binary:1: invalid UTF-8"),
             ("folder", "folder: not a regular file")]
BAD_VOCABS = [("missing", "missing: no such file"), ("bad_vocab", "bad_vocab:2: expected 'TOKEN COUNT'"),
              ("binary", "binary:1: invalid UTF-8"),
              # fastBPE reads counts with std::stoi, which throws (an abort) past 32 bits
              ("huge_count", "huge_count:1: count 99999999999 does not fit in 32 bits")]


@pytest.mark.parametrize("fastbpe", BACKENDS)
def test_fastbpe_bad_codes_and_vocabularies_fail_at_once(files, fastbpe):
    """Each is one error line naming the file and line, before any output (the issue saw the worker
    pool of an earlier version restarted forever, and an UnboundLocalError for a binary codes file)."""
    cases = [(["applybpe", files / "out", files / "in", files / name], message) for name, message in BAD_CODES]
    cases += [(["applybpe", files / "out", files / "in", files / "codes", files / name], message)
              for name, message in BAD_VOCABS]
    if fastbpe:  # the compiled backend goes through the same checks: its own failure modes only
        cases = [cases[3], cases[-1]]
    for args, message in cases:
        assert_one_error(cli(["tools/fastbpe", *args], fastbpe, timeout=30), message)
        assert not (files / "out").exists() and tmp_files(files) == []
    for name, message in (BAD_CODES[3], BAD_CODES[2]):
        proc = cli(["tools/fastbpe", "applybpe_stream", files / name], fastbpe, stdin="hello\n", timeout=30)
        assert_one_error(proc, message)
        assert proc.stdout_text == ""
    proc = cli(["tools/fastbpe", "applybpe_stream", files / "codes", files / "bad_vocab"], fastbpe, stdin="x\n")
    assert_one_error(proc, BAD_VOCABS[1][1])


@pytest.mark.parametrize("fastbpe", BACKENDS)
def test_fastbpe_bad_inputs(files, fastbpe):
    """Including what the compiled fastBPE crashes on (learnbpe without a word: a segmentation fault) or
    takes as it is (invalid UTF-8 on applybpe_stream's input)."""
    (files / "spaces").write_text("  \n\n", encoding="utf-8")
    (files / "one_word").write_text("hello", encoding="utf-8")  # fastBPE drops a last word without newline
    cases = [(["applybpe", files / "out", files / name, files / "codes"], message)
             for name, message in BAD_CODES[:2] + BAD_CODES[3:]]
    cases = (cases if not fastbpe else cases[2:3]) + [
        (["learnbpe", 10, files / "spaces"], "spaces: no word followed by a space or newline, nothing to learn"),
        (["applybpe", files / "out", files / "one_word", files / "codes"], "one_word: no word followed by")]
    for args, message in cases:
        assert_one_error(cli(["tools/fastbpe", *args], fastbpe), message)
    proc = cli(["tools/fastbpe", "applybpe_stream", files / "codes"], fastbpe, stdin="hello\nnot \udcc3 ok\n")
    assert_one_error(proc, "<stdin>:2: invalid UTF-8")
    assert not (files / "out").exists() and tmp_files(files) == []


# ----------------------------------------------------------------------------- output locations

def bad_outputs(files):
    """Output paths no file can be written at, and what the error says."""
    cases = [(files / "no" / "such" / "dir" / "out", "No such file or directory"),
             (files / "in" / "out", "Not a directory"),
             (files / "folder", "is a folder")]
    if not ROOT_USER:  # root writes anywhere
        (files / "read_only").mkdir(mode=0o555)
        cases.append((files / "read_only" / "out", "Permission denied"))
    return cases


@pytest.mark.parametrize("fastbpe", BACKENDS)
def test_fastbpe_output_location_checked_before_the_work(files, fastbpe):
    """The output is checked first: the bad vocabulary, read before any BPE, is not even reached."""
    for output, reason in bad_outputs(files):
        proc = cli(["tools/fastbpe", "applybpe", output, files / "in", files / "codes", files / "bad_vocab"], fastbpe)
        assert_one_error(proc, str(output), reason)
    assert tmp_files(files) == []


def test_preprocess_output_location_checked_before_the_work(files):
    for output, reason in bad_outputs(files)[:2]:
        proc = cli(["preprocess.py", files / "bad_vocab", files / "in", output])
        assert_one_error(proc, str(output), reason)
        assert "bad_vocab" not in proc.stderr_text  # refused before the vocabulary is read


@pytest.mark.parametrize("threads", ["-3", "0"])
def test_preprocess_refuses_threads_below_one(files, threads):
    proc = cli(["preprocess.py", files / "vocab", files / "in", files / "out.pth", "--threads", threads])
    assert_one_error(proc, "--threads", threads)
    assert not (files / "out.pth").exists()


def test_preprocess_bad_inputs(files):
    (files / "ok_vocab").write_text("hello 5\nworld 3\n", encoding="utf-8")
    for args, message in [((files / "ok_vocab", files / "empty"), "empty: file is empty"),
                          ((files / "ok_vocab", files / "binary"), "binary:1: invalid UTF-8"),
                          ((files / "ok_vocab", files / "folder", files / "out.pth"), "folder: not a regular file"),
                          ((files / "bad_vocab", files / "in"), "bad_vocab:2: expected 'WORD COUNT'"),
                          ((files / "ok_vocab", files / "in", files / "in"), "the output " + str(files / "in") +
                           " is the input"),
                          ((files / "ok_vocab", files / "in", files / "ok_vocab"), "is the vocab")]:
        assert_one_error(cli(["preprocess.py", *args]), message)
    assert tmp_files(files) == [] and not list(files.glob("*.pth"))


# ----------------------------------------------------------------------------- kills and stale temporary files

def bpe_job(folder, n_words=300_000):
    """An input long enough to kill `applybpe` in the middle of, and codes for it."""
    rng = random.Random(0)
    letters = "abcdefghij"
    words = ("".join(rng.choice(letters) for _ in range(rng.randrange(3, 9))) for _ in range(n_words))
    (folder / "big").write_text("".join(w + ("\n" if i % 20 == 19 else " ") for i, w in enumerate(words)))
    (folder / "big_codes").write_text("".join(f"{a} {b} 1\n" for a in letters for b in letters))
    return ["tools/fastbpe", "applybpe", folder / "big.bpe", folder / "big", folder / "big_codes"]


def wait_for(condition, proc, what, timeout=30):
    end = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"exited ({proc.returncode}) before {what}: {proc.stderr.read()}"
        assert time.monotonic() < end, f"no {what} after {timeout} s"
        time.sleep(0.01)


def handles(pid, signum):
    """Whether the process has a handler for `signum` (its SigCgt mask in /proc)."""
    with open(f"/proc/{pid}/status") as f:
        mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return mask >> (signum - 1) & 1


def a_lasting_tmp(folder):
    """A temporary file there on two looks 30 ms apart (not the output check's instant probe)."""
    first = tmp_files(folder)
    time.sleep(0.03)
    return bool(first) and first == tmp_files(folder)


def written_tmp(folder, output):
    """Whether a temporary file of `output` has bytes in it; the output check's empty probe can vanish
    between the listing and the look."""
    for path in folder.glob(f"{output}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_size > 0:
                return True
    return False


def kill_and_check(proc, signum, folder, output, group=False):
    if group:  # as Ctrl-C in a terminal, or `kill -- -PGID`: the workers get it too
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    errors = [line for line in err.splitlines() if not line.startswith("INFO")]
    assert proc.returncode == 128 + signum and errors == [f"error: stopped by {signal.Signals(signum).name}"], err
    assert tmp_files(folder) == [] and not output.exists()


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
@pytest.mark.parametrize("fastbpe", BACKENDS)
def test_killed_fastbpe_leaves_no_tmp(tmp_path, fastbpe):
    """SIGTERM (or Ctrl-C) ends applybpe with one line and removes its temporary output; the compiled
    fastBPE, which holds one during all its run, is killed too."""
    proc = start(bpe_job(tmp_path), fastbpe)
    try:
        wait_for(lambda: handles(proc.pid, signal.SIGTERM), proc, "a SIGTERM handler")
        if fastbpe:
            wait_for(lambda: a_lasting_tmp(tmp_path), proc, "temporary output")
        kill_and_check(proc, signal.SIGTERM if fastbpe else signal.SIGINT, tmp_path, tmp_path / "big.bpe")
    finally:
        proc.kill()


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_killed_preprocess_leaves_no_tmp(tmp_path, signum):
    """The signal reaches the workers too: they must not die in a way that blocks their parent (a
    multiprocessing.Pool whose worker died halfway through reading a task waits forever)."""
    (tmp_path / "vocab").write_text("".join(f"w{i} {1000 - i}\n" for i in range(1000)), encoding="utf-8")
    line = " ".join(f"w{i * 37 % 1100}" for i in range(20)) + "\n"  # some unknown words
    (tmp_path / "corpus").write_text(line * 60_000, encoding="utf-8")
    proc = start(["preprocess.py", tmp_path / "vocab", tmp_path / "corpus", "--threads", 2], new_group=True)
    try:
        wait_for(lambda: written_tmp(tmp_path, "corpus.pth"), proc, "temporary output being written")
        kill_and_check(proc, signum, tmp_path, tmp_path / "corpus.pth", group=True)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def test_stale_tmp_of_a_killed_run_removed_on_the_next_start(files):
    """What a SIGKILL leaves (atomic_write's `NAME.XXXXXXXX.tmp`) goes at the next run for that output;
    other files stay."""
    stale = ["out.k3_x9a0b.tmp", "out.pth.zz0ab1cd.tmp", "out.pth.xlmbin.tmp", "out.pth.xlmbin.tmp.a1b2c3d4.tmp"]
    kept = ["out.mine.tmp", "other.k3_x9a0b.tmp", "out.k3_x9a0b.tmp.bak"]
    for name in stale + kept:
        (files / name).write_text("half a file")
    assert cli(["tools/fastbpe", "applybpe", files / "out", files / "in", files / "codes"], "").returncode == 0
    (files / "ok_vocab").write_text("hello 5\nworld 3\n", encoding="utf-8")
    assert cli(["preprocess.py", files / "ok_vocab", files / "in", files / "out.pth"]).returncode == 0
    assert tmp_files(files) == sorted(n for n in kept if n.endswith(".tmp"))
    assert (files / "out").read_text() == "he@@ ll@@ o w@@ o@@ r@@ l@@ d\nt@@ h@@ e c@@ a@@ t\n"


def test_the_write_check_of_a_folder_is_not_taken_for_a_stale_file(tmp_path, monkeypatch):
    """Every rank of a distributed run checks that it can write the dump folder (`check_output`: a file
    made and removed at once) while rank 0 removes the stale temporary files there: a CI run of
    test_faults saw rank 0 find another rank's check and fail. The check's file is named otherwise."""
    from xlm import fileio
    made, real_open = [], os.open
    monkeypatch.setattr(os, "open", lambda path, *args: made.append(path) or real_open(path, *args))
    fileio.check_output(tmp_path / "checkpoint.pth")
    monkeypatch.undo()
    (probe,) = made
    open(probe, "w").close()
    assert fileio.remove_stale_tmp(str(tmp_path / "*.pth")) == [] and os.path.exists(probe)


def test_a_stale_tmp_gone_since_the_listing_is_skipped(tmp_path, monkeypatch):
    """A temporary file may go between the listing and the removal: the others go, and nothing fails."""
    from xlm import fileio
    names = ["checkpoint.pth.0123abcd.tmp", "checkpoint.pth.4567cdef.tmp", "best.pth.89abcdef.tmp"]
    for name in names:
        (tmp_path / name).write_text("half a file")
    isfile = os.path.isfile

    def removed_after_the_check(path):
        found = isfile(path)
        if path.endswith(names[0]):
            os.remove(path)
        return found
    monkeypatch.setattr(fileio.os.path, "isfile", removed_after_the_check)
    assert fileio.remove_stale_tmp(str(tmp_path / "*.pth")) == [str(tmp_path / n) for n in sorted(names[1:])]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("interrupted", ["check_output", "atomic_write"])
def test_a_signal_just_after_the_tmp_file_is_made_leaves_nothing(tmp_path, monkeypatch, interrupted):
    """A signal's exception can land between the system call that makes the temporary file and the
    Python line that records it (as CI once saw with applybpe and Ctrl-C); the file must go all the same."""
    from xlm import fileio
    real_open = os.open

    def open_then_interrupted(path, flags, *args):
        fd = real_open(path, flags, *args)
        if str(path).endswith(".tmp"):
            os.close(fd)
            raise KeyboardInterrupt
        return fd

    monkeypatch.setattr(os, "open", open_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        if interrupted == "check_output":
            fileio.check_output(tmp_path / "out")
        else:
            with fileio.atomic_write(tmp_path / "out") as f:
                f.write(b"x")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- silently wrong before

def test_control_characters_in_a_corpus_warned_once(files):
    """Kept inside their word, as the original's str.split() does ('\\x1c'-'\\x1f' are spaces to it),
    with one warning that counts the lines and names the first."""
    lines = ["hello world", "x", "hello\0world x", "a\x1fb", "bell\x07 x", "hello\x85world"]
    (files / "corpus").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (files / "ok_vocab").write_text("hello 5\nworld 3\nx 2\n", encoding="utf-8")
    proc = cli(["preprocess.py", files / "ok_vocab", files / "corpus", files / "out.pth", "--threads", "2"])
    assert proc.returncode == 0, proc.stderr_text
    warnings = [line for line in proc.stderr_text.splitlines() if "control characters" in line]
    assert len(warnings) == 1 and "2 lines" in warnings[0] and "first at line 3" in warnings[0], proc.stderr_text
    corpus = load_binarized(files / "out.pth")
    assert [len(corpus[i]) for i in range(len(lines))] == [len(line.split()) for line in lines]
    assert corpus.unk_words == {"hello\0world": 1, "a": 1, "b": 1, "bell\x07": 1}


def test_tokenize_language_codes():
    """Upper case is lower-cased (EN tokenizes as en); a language Moses has no nonbreaking prefixes for
    gets one warning and Moses's generic rules (an apostrophe is split off, not kept with the 't)."""
    out = {}
    for lang, n_lines in (("en", 1), ("EN", 1), ("xx", 2001)):  # 2,001 lines: two blocks, still one warning
        proc = subprocess.run(["bash", "tools/tokenize.sh", lang], input="Mr. Smith isn't here.\n" * n_lines,
                              capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        out[lang] = (proc.stdout, proc.stderr)
    assert out["en"] == out["EN"] == ("Mr. Smith isn 't here .\n", "")
    assert out["xx"][0] == "Mr. Smith isn ' t here .\n" * 2001
    assert len(out["xx"][1].splitlines()) == 1 and "warning" in out["xx"][1] and "'xx'" in out["xx"][1]


def test_binarize_in_parallel_writes_the_same_bytes(tmp_path, monkeypatch):
    """The workers that replace multiprocessing.Pool keep the blocks in order (3 workers, 4 blocks, whatever
    the cores)."""
    from xlm.data import binarized
    from xlm.data.binarized import binarize
    from xlm.data.dictionary import Dictionary
    monkeypatch.setattr(binarized.os, "cpu_count", lambda: 8)

    (tmp_path / "vocab").write_text("".join(f"w{i} {500 - i}\n" for i in range(500)), encoding="utf-8")
    rng = random.Random(0)
    lines = (" ".join(f"w{rng.randrange(600)}" for _ in range(rng.randrange(0, 30))) for _ in range(50_000))
    (tmp_path / "text").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    assert (tmp_path / "text").stat().st_size > 3 << 20
    dico = Dictionary.read_vocab(tmp_path / "vocab")
    for threads in (1, 3):
        binarize(tmp_path / "text", dico, tmp_path / f"out{threads}", threads)
    assert (tmp_path / "out1").read_bytes() == (tmp_path / "out3").read_bytes()


def test_preprocess_starts_no_more_workers_than_blocks_or_cores(files, monkeypatch):
    """--threads 100000 on a small file starts one worker, not 100,000 (which filled the memory); a worker
    that cannot be started is one error naming --threads."""
    proc = cli(["preprocess.py", files / "vocab", files / "in", files / "out.pth", "--threads", "100000"])
    assert proc.returncode == 0, proc.stderr_text
    from xlm.data import binarized
    from xlm.data.dictionary import Dictionary
    (files / "big").write_text("a b c\n" * (1 << 19), encoding="utf-8")  # 3 MiB: 3 blocks
    monkeypatch.setattr(binarized.os, "cpu_count", lambda: 8)
    started = []

    def start(self):
        started.append(self)
        raise OSError(errno.EMFILE, "Too many open files")
    monkeypatch.setattr(multiprocessing.context.ForkProcess, "start", start)
    with pytest.raises(DataError, match=r"cannot start 3 worker processes \(Too many open files\): use fewer "
                                        r"\(--threads\)"):
        binarized.binarize(files / "big", Dictionary.read_vocab(files / "vocab"), files / "big.pth", threads=100)
    assert len(started) == 1 and not (files / "big.pth").exists()


def test_a_failed_write_is_one_error_and_the_previous_file_stays(tmp_path):
    """A full disk while atomic_write's block writes (preprocess.py, convert_binarized.py, a checkpoint, the
    hypotheses) is one error naming the file; the previous file stays and no temporary one is left. Other
    errors go through as they are."""
    from xlm.fileio import atomic_write
    path = tmp_path / "out.pth"
    path.write_bytes(b"before")
    with pytest.raises(DataError, match=r"out.pth: cannot write it \(No space left on device\); the previous file"):
        with atomic_write(path) as f:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(RuntimeError, match="a bug"):
        with atomic_write(path) as f:
            raise RuntimeError("a bug")
    assert path.read_bytes() == b"before" and [p.name for p in tmp_path.iterdir()] == ["out.pth"]


@pytest.mark.parametrize("command", [["preprocess.py", "{vocab}", "{in}", "{out}"],
                                     ["tools/fastbpe", "applybpe", "{out}", "{in}", "{codes}"]],
                         ids=["preprocess", "applybpe"])
def test_an_output_named_as_a_folder_is_refused_before_the_work(files, command):
    """`nope/` names a folder, not a file: refused up front (it used to pass the check, then fail at the end)."""
    out = str(files / "nope") + os.sep
    proc = cli([a.format(vocab=files / "vocab", codes=files / "codes", out=out, **{"in": files / "in"})
                for a in command])
    assert_one_error(proc, "nope/: is a folder, expected an output file name")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("fastbpe", BACKENDS)
@pytest.mark.parametrize("command", [["applybpe_stream", "{codes}"], ["getvocab", "{in}"], ["learnbpe", "5", "{in}"]],
                         ids=["applybpe_stream", "getvocab", "learnbpe"])
def test_fastbpe_on_a_full_disk_is_one_error(files, fastbpe, command):
    """The compiled tool does not check its writes: its output cut short, it exited with status 0."""
    args = [a.format(codes=files / "codes", **{"in": files / "in"}) for a in command]
    with open(files / "in", "rb") as stdin, open("/dev/full", "wb") as full:
        proc = subprocess.run([sys.executable, "tools/fastbpe", *args], stdin=stdin, stdout=full,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "FASTBPE": fastbpe},
                              timeout=60)
    proc.stderr_text = proc.stderr
    assert_one_error(proc, "cannot write the output (No space left on device)")


@pytest.mark.parametrize("fastbpe", BACKENDS)
def test_learnbpe_asked_for_far_more_codes_than_pairs_ends_at_once(files, fastbpe):
    """fastBPE writes merges of count 0 up to N (hours for N = 2^31 - 1): N is bounded by the text's size;
    above fastBPE's int it is refused."""
    start_time = time.monotonic()
    proc = cli(["tools/fastbpe", "learnbpe", "2147483647", files / "in"], fastbpe)
    assert proc.returncode == 0 and time.monotonic() - start_time < 30, proc.stderr_text
    codes = proc.stdout_text.splitlines()
    assert codes and all(int(line.split()[2]) > 0 for line in codes), codes
    assert "fewer than the 2147483647 codes asked for" in proc.stderr_text
    assert_one_error(cli(["tools/fastbpe", "learnbpe", "2147483648", files / "in"], fastbpe),
                     "learnbpe N: at most 2147483647 merges (fastBPE reads N as an int), got '2147483648'")


ATOMIC_WRITE_UNDER_A_LIMIT = """
import resource, signal, sys
sys.path.insert(0, {root!r})
from xlm.fileio import DataError, atomic_write
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))
try:
    with atomic_write({path!r}, {mode!r}) as f:
        f.write({data!r})
except DataError as e:
    sys.exit(f"error: {{e}}")
"""


@pytest.mark.skipif(importlib.util.find_spec("resource") is None or not hasattr(signal, "SIGXFSZ"),
                    reason="needs POSIX resource limits")
@pytest.mark.parametrize("mode, data", [("w", "x" * 300), ("wb", b"x" * 300), ("wb", b"x" * 20_000)],
                         ids=["text_in_the_buffer", "bytes_in_the_buffer", "bytes_past_the_buffer"])
def test_a_write_that_fails_at_its_flush_is_one_error(tmp_path, mode, data):
    """A file that fits Python's write buffer fails at the flush or the close, not at write(): one error too."""
    path = tmp_path / "out"
    path.write_text("before")
    proc = subprocess.run([sys.executable, "-c", ATOMIC_WRITE_UNDER_A_LIMIT.format(root=str(ROOT), path=str(path),
                                                                                  mode=mode, data=data)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stderr == f"error: {path}: cannot write it (File too large); the previous " \
        "file, if any, is kept\n", proc.stderr
    assert path.read_text() == "before" and [p.name for p in tmp_path.iterdir()] == ["out"]
