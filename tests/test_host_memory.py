"""Large CPU tensors freed by a training step are kept for the next step's (xlm/host_memory.py)."""
import subprocess
import sys
from types import SimpleNamespace

import pytest

from conftest import ROOT
from xlm import host_memory
from xlm.data.dictionary import SPECIAL_WORDS, Dictionary
from xlm.model.checkpoint import checkpoint_payload, save_checkpoint
from xlm.model.transformer import TransformerConfig, TransformerModel

# in a fresh process: malloc's settings are the process's; glibc's counters (mallinfo2, glibc 2.33+) tell
# whether a 64 MiB tensor was mapped on its own (hblkhd) or taken from the heap (arena)
MALLINFO = """
import ctypes, torch

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
"""
CHECK = MALLINFO + """
from xlm.host_memory import keep_freed_memory, resident_bytes
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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_translate_py_keeps_freed_blocks_on_the_cpu(tmp_path):
    """translate.py sets malloc up as train.py does: after its run, a 64 MiB tensor comes from the heap."""
    words = SPECIAL_WORDS + ["a", "b", "c"]
    kw = dict(n_words=len(words), emb_dim=16, n_layers=1, n_heads=2, n_langs=2)
    params = dict(kw, lang2id={"en": 0, "fr": 1}, id2lang={0: "en", 1: "fr"}, encoder_only=False)
    model = tmp_path / "mt.pth"
    save_checkpoint(checkpoint_payload(Dictionary.from_words([(w, 0) for w in words]), params,
                                       encoder=TransformerModel(TransformerConfig(**kw)),
                                       decoder=TransformerModel(TransformerConfig(**kw, is_decoder=True))), model)
    run = MALLINFO + f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
import translate
translate.main(["--model_path", {str(model)!r}, "--src_lang", "en", "--tgt_lang", "fr", "--output_path",
                {str(tmp_path / "out")!r}, "--device", "cpu"])
x = torch.empty(2 ** 24)
print(libc.mallinfo2().hblkhd < 2 ** 26)
"""
    proc = subprocess.run([sys.executable, "-c", run], input="a b c\nc a\n", capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "True", proc.stdout + proc.stderr
    assert len((tmp_path / "out").read_text().splitlines()) == 2


def test_the_cap_gives_free_pages_back_past_a_quarter_over_its_first_reading(monkeypatch):
    trims = []
    libc = SimpleNamespace(malloc_trim=lambda pad: trims.append(pad) or 1)
    readings = iter([1000, 1200, 1250, 1251, 1100, 1300])
    monkeypatch.setattr(host_memory, "resident_bytes", lambda: next(readings))
    cap = host_memory.FreedMemoryCap(libc)
    for _ in range(6):
        cap.check()
    assert trims == [0, 0] and cap.trims == 2 and cap.reference == 1000  # at 1251 and 1300, against 1000
