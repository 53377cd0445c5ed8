"""Host memory kept for reuse when training on the CPU.

glibc's malloc serves every allocation above 32 MiB with its own mmap and hands it back to the system
at free. A CPU training step makes several such tensors (the (predicted words, n_words) logits, their
log-softmax and gradients, attention scores) and frees them, so every step writes to fresh pages, which
the kernel must find and zero at first touch; in a virtual machine whose host takes freed pages back
(free page reporting, ballooning), each such fault goes out to the host. On the project's 2-core VM that
was a quarter of an MLM step (the log-softmax backward of 1,242 x 32,000 logits: 1.5-1.9 s in the step,
0.13 s on pages already in use). Kept in the process's heap instead, the next step's tensors reuse the
pages: the resident memory stays near its peak, as with PyTorch's caching allocator on a GPU."""
import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's malloc.h


def keep_freed_memory():
    """Make malloc take large blocks from the heap (no mmap) and never give the heap's top back.
    True where it applied: Linux with glibc; elsewhere nothing changes."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; musl's returns 0 and changes nothing
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1) == 1
