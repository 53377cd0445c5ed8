"""Runs the original XLM's train.py (or another of its scripts: translate.py, glue-xnli.py, preprocess.py,
tools/lowercase_and_remove_accent.py), from the original's folder (the working directory), on current
PyTorch: an empty `apex` module (its trainer imports apex at the top and uses it only with --amp or several
GPUs), `six` if it is not installed (the lower-casing tool's Python 2 text types), torch.load allowed to
unpickle (the original reads its own .pth data files with it; here only files these benches wrote), and
without CUDA, `.cuda()` (of tensors, modules and the storages that --reload_model maps) and `set_device`
made no-ops.

Under torchrun, each rank gets the `--local_rank` and `NGPU` of the original's torch.distributed.launch
path (its other multi-process path is SLURM's), and without CUDA the original's NCCL process group becomes
gloo and its DistributedDataParallel takes no device ids (the same all-reduce of the gradients, on the CPU).
Without apex, that DistributedDataParallel stops at the first step that leaves a parameter without a
gradient (a translation step: the encoder's prediction layer); FIND_UNUSED=1 lets it find them, as apex's
did, to compare learning curves.

    cd ORIGINAL && python /path/to/xlm/bench/run_original.py TRAIN_PY_FLAGS...
    cd ORIGINAL && python /path/to/xlm/bench/run_original.py translate.py TRANSLATE_PY_FLAGS...
    cd ORIGINAL && torchrun --nproc_per_node 2 /path/to/xlm/bench/run_original.py TRAIN_PY_FLAGS...
"""
import os
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
    init_process_group = torch.distributed.init_process_group
    torch.distributed.init_process_group = lambda *args, **kwargs: init_process_group(*args, **{**kwargs,
                                                                                           "backend": "gloo"})
    ddp_init = torch.nn.parallel.DistributedDataParallel.__init__
    torch.nn.parallel.DistributedDataParallel.__init__ = (
        lambda self, module, *args, device_ids=None, output_device=None, **kwargs: ddp_init(
            self, module, find_unused_parameters=os.environ.get("FIND_UNUSED") == "1", **kwargs))
script = sys.argv.pop(1) if len(sys.argv) > 1 and sys.argv[1].endswith(".py") else "train.py"
sys.argv = [script] + sys.argv[1:]
if "LOCAL_RANK" in os.environ and "--local_rank" not in sys.argv:  # started by torchrun
    sys.argv += ["--local_rank", os.environ["LOCAL_RANK"]]
    os.environ.setdefault("NGPU", os.environ["LOCAL_WORLD_SIZE"])
sys.path.insert(0, ".")
runpy.run_path(script, run_name="__main__")
