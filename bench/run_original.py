"""Runs the original XLM's train.py (or another of its scripts: translate.py, glue-xnli.py, preprocess.py,
tools/lowercase_and_remove_accent.py), from the original's folder (the working directory), on current
PyTorch: an empty `apex` module (its trainer imports apex at the top and uses it only with --amp or several
GPUs), `six` if it is not installed (the lower-casing tool's Python 2 text types), torch.load allowed to
unpickle (the original reads its own .pth data files with it; here only files these benches wrote), and
without CUDA, `.cuda()` (of tensors, modules and the storages that --reload_model maps) and `set_device`
made no-ops.

    cd ORIGINAL && python /path/to/xlm/bench/run_original.py TRAIN_PY_FLAGS...
    cd ORIGINAL && python /path/to/xlm/bench/run_original.py translate.py TRANSLATE_PY_FLAGS...
"""
import runpy
import sys
import types

import torch

sys.modules.setdefault("apex", types.ModuleType("apex"))
try:
    import six  # noqa: F401 (tools/lowercase_and_remove_accent.py's only use: Python 2's text types)
except ImportError:
    sys.modules["six"] = types.SimpleNamespace(binary_type=bytes, text_type=str)
load = torch.load
torch.load = lambda *args, **kwargs: load(*args, **{**kwargs, "weights_only": False})
if not torch.cuda.is_available():
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    torch.UntypedStorage.cuda = lambda self, *args, **kwargs: self  # --reload_model's map_location
    torch.cuda.set_device = lambda *args, **kwargs: None
script = sys.argv.pop(1) if len(sys.argv) > 1 and sys.argv[1].endswith(".py") else "train.py"
sys.argv = [script] + sys.argv[1:]
sys.path.insert(0, ".")
runpy.run_path(script, run_name="__main__")
