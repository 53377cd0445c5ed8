"""Large CPU tensors freed by a training step are kept for the next step's (xlm/train/host_memory.py)."""
import subprocess
import sys
from types import SimpleNamespace

import pytest

from xlm.train import host_memory

# in a fresh process: malloc's settings are the process's; glibc's counters (mallinfo2, glibc 2.33+) tell
# whether a 64 MiB tensor was mapped on its own (hblkhd) or taken from the heap (arena)
CHECK = """
import ctypes, torch
from xlm.train.host_memory import keep_freed_memory, resident_bytes

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
before = resident_bytes()
x = torch.empty(2 ** 24).fill_(1)
assert libc.mallinfo2().hblkhd >= 2 ** 26, "without the setting, malloc maps a 64 MiB block on its own"
assert resident_bytes() - before > 48 * 2 ** 20, "its pages are new, and resident once written"
del x
assert keep_freed_memory() is not None
x = torch.empty(2 ** 24)
assert libc.mallinfo2().hblkhd < 2 ** 26 and libc.mallinfo2().arena >= 2 ** 26, "the block comes from the heap"
del x
sizes = []
for _ in range(30):
    x = torch.empty(2 ** 24).fill_(1)
    del x
    sizes.append(libc.mallinfo2().arena)
# glibc keeps a few freed blocks beside the one it reuses (an aligned request does not fit the exact block
# freed before it), then reuses them: the heap stops growing
assert sizes[-10:] == [sizes[-1]] * 10 and sizes[-1] < 16 * 2 ** 26, sizes
print("kept")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_blocks_are_reused_not_given_back():
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "kept", proc.stderr


def test_the_cap_gives_free_pages_back_past_a_quarter_over_its_first_reading(monkeypatch):
    trims = []
    libc = SimpleNamespace(malloc_trim=lambda pad: trims.append(pad) or 1)
    readings = iter([1000, 1200, 1250, 1251, 1100, 1300])
    monkeypatch.setattr(host_memory, "resident_bytes", lambda: next(readings))
    cap = host_memory.FreedMemoryCap(libc)
    for _ in range(6):
        cap.check()
    assert trims == [0, 0] and cap.trims == 2 and cap.reference == 1000  # at 1251 and 1300, against 1000
