"""Host memory kept for reuse when training on the CPU, within a bound.

glibc's malloc serves every allocation above 32 MiB with its own mmap and hands it back to the system
at free. A CPU training step makes several such tensors (the (predicted words, n_words) logits, their
log-softmax and gradients, attention scores) and frees them, so every step writes to fresh pages, which
the kernel must find and zero at first touch; in a virtual machine whose host takes freed pages back
(free page reporting, ballooning), each such fault goes out to the host. On the project's 2-core VM that
was a quarter of an MLM step (the log-softmax backward of 1,242 x 32,000 logits: 1.5-1.9 s in the step,
0.13 s on pages already in use). Kept in the process's heap instead, the next step's tensors reuse the
pages. The heap then holds freed blocks that do not fit the next requests (glibc's aligned allocations
fragment it), and the resident memory creeps up; `FreedMemoryCap` gives the free pages back whenever it
passes its first reading by a quarter."""
import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's malloc.h
GROWTH = 1.25


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory():
    """Make malloc take large blocks from the heap (no mmap) and never give the heap's top back by
    itself. Returns a FreedMemoryCap to check at log lines where it applied (Linux with glibc), else None."""
    libc = _libc()
    # mallopt returns 1 on success; musl's returns 0 and changes nothing
    if libc is None or libc.mallopt(M_MMAP_MAX, 0) != 1 or libc.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1) != 1:
        return None
    return FreedMemoryCap(libc)


def resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class FreedMemoryCap:
    """check() between steps: once the resident memory exceeds GROWTH x the first reading (taken after
    some steps: what they use), the heap's free pages go back to the system (malloc_trim), and the next
    steps fault in only what they use."""

    def __init__(self, libc):
        self.libc, self.reference, self.trims = libc, None, 0

    def check(self):
        rss = resident_bytes()
        if self.reference is None:
            self.reference = rss
        elif rss > GROWTH * self.reference:
            self.libc.malloc_trim(0)
            self.trims += 1
