"""Reading text safely and writing files atomically.

Every error about user input is a `DataError` whose message names the file (and line when there is
one), so a command line tool can print it as one line and exit.
"""
import os
import tempfile
from contextlib import contextmanager


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


def check_writable(folder):
    """Raise OSError unless a file can be created in `folder` (what a later save will need), by creating
    and removing one: permission bits do not tell, e.g. for root or on a read-only mount."""
    fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
    os.close(fd)
    os.remove(probe)


def decode_utf8(data, path, first_line=1):
    """Decode bytes as UTF-8; on failure name the file and the line of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_line + data.count(b"\n", 0, e.start)
        raise DataError(f"{path}:{line}: invalid UTF-8 ({e.reason} at byte {e.start})") from None


def iter_line_blocks(path, block_bytes=1 << 22, desc=None):
    """Yield (first_line_number, list_of_lines) blocks of a UTF-8 text file, lines without '\\n'.

    Reading in blocks of whole lines keeps memory bounded and lets workers process blocks in parallel.
    With `desc`, a progress bar on stderr follows the bytes read (when stderr is a terminal).
    """
    check_file(path)
    from tqdm import tqdm

    line_no = 1
    rest = b""
    with open(path, "rb") as f, tqdm(total=os.path.getsize(path), unit="B", unit_scale=True, desc=desc,
                                     disable=None if desc else True, leave=False) as bar:
        while True:
            chunk = f.read(block_bytes)
            if not chunk:
                break
            bar.update(len(chunk))
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


def iter_stdin_blocks(block_lines=4096):
    """Yield (first_line_number, list_of_lines) blocks of standard input; a bad byte names its line."""
    import sys

    block, first = [], 1
    for line_no, raw in enumerate(sys.stdin.buffer, 1):
        block.append(decode_utf8(raw, "<stdin>", line_no).rstrip("\r\n"))
        if len(block) == block_lines:
            yield first, block
            block, first = [], line_no + 1
    if block:
        yield first, block


@contextmanager
def atomic_write(path, mode="wb"):
    """Write to a temporary file next to `path`, fsync, then rename over `path`.

    An interrupted writer leaves either the previous file or no file under `path`, never half a file.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        # mkstemp makes the file private (0600); the result gets the usual umask-based mode, as open() would
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
