"""One process, torchrun, or SLURM: who am I, and on which device.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT. Under SLURM (srun, one task
per GPU) the same facts come from SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID, and the master is the
first host of the nodes (`scontrol show hostnames`) on --master_port. NCCL on GPUs, gloo on CPUs.
"""
import itertools
import os
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..fileio import DataError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_master(self):
        return self.rank == 0

    @property
    def multi(self):
        return self.world_size > 1


def slurm_env(params, environ=os.environ):
    """The torchrun variables of an srun task (one task per GPU), {} when there is nothing to set up: not a
    SLURM job, one task, --debug_slurm, or torchrun started inside the job. The master is the first host
    of the step's nodes (the job's when srun does not say), where task 0 runs."""
    # torchrun (and torch.distributed.launch, through it) marks its workers with TORCHELASTIC_RUN_ID; a RANK
    # alone may be one an sbatch script exported itself, which SLURM's variables then replace
    if "SLURM_JOB_ID" not in environ or params.debug_slurm or "TORCHELASTIC_RUN_ID" in environ:
        return {}
    n_tasks = environ.get("SLURM_NTASKS", "1")
    if not n_tasks.isdecimal():
        raise DataError(f"SLURM_NTASKS={n_tasks!r} is not a number of tasks")
    n_tasks = int(n_tasks)
    if n_tasks == 1:
        return {}
    if "SLURM_STEP_ID" not in environ or "SLURM_PROCID" not in environ:
        # a batch script or salloc shell has SLURM_NTASKS too: task 0 would wait for the others forever
        raise DataError(f"SLURM_NTASKS={n_tasks} but this process was not started by srun: run `srun python "
                        "train.py ...` (one task per GPU), or set SLURM_NTASKS=1 for a single process")
    if not 10001 <= params.master_port <= 20000:
        raise DataError("a multi-task SLURM job needs --master_port in 10001..20000")
    missing = [v for v in ("SLURM_JOB_NODELIST", "SLURM_LOCALID") if v not in environ]
    if missing:
        raise DataError(f"SLURM_NTASKS={n_tasks} but {' and '.join(missing)} not set: start the tasks with srun")
    nodes = environ.get("SLURM_STEP_NODELIST") or environ["SLURM_JOB_NODELIST"]
    try:
        hosts = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=True,
                               timeout=60).stdout.split()
    except (OSError, subprocess.SubprocessError) as e:
        raise DataError(f"`scontrol show hostnames {nodes}` failed ({e}): cannot find the master host") from None
    if not hosts:
        raise DataError(f"`scontrol show hostnames {nodes}` printed no host: cannot find the master host")
    return dict(MASTER_ADDR=hosts[0], MASTER_PORT=str(params.master_port), WORLD_SIZE=str(n_tasks),
                RANK=environ["SLURM_PROCID"], LOCAL_RANK=environ["SLURM_LOCALID"])


def to_device(t, device):
    """t (a tensor, or None) copied to the device without waiting for the copy (pinned memory makes it
    asynchronous)."""
    return None if t is None else t.to(device, non_blocking=True)


def cuda_device(local_rank):
    """The GPU of a local rank. A task that sees a single GPU uses it: SLURM often gives each task its own
    (srun --gpus-per-task=1, or cgroups), where local rank 1 would ask for a second GPU that is not there."""
    visible = torch.cuda.device_count()
    if visible == 1:
        sharing = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # torchrun's processes on this node
        if sharing > 1:
            raise DataError(f"{sharing} processes on this node (torchrun --nproc_per_node) but one GPU is "
                            "visible: NCCL gives each process a GPU of its own; start one process per GPU")
        return torch.device("cuda", 0)
    if local_rank >= visible:
        raise DataError(f"local rank {local_rank} but only {visible} GPUs are visible: start one task per GPU")
    return torch.device("cuda", local_rank)


def init_distributed(params):
    os.environ.update(slurm_env(params))
    enable_tf32()
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        return DistInfo(device=device)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", params.local_rank if params.local_rank >= 0 else 0))
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise DataError(f"RANK and WORLD_SIZE={world_size} are set but not {' and '.join(missing)}: start the "
                        "processes with torchrun (or srun, with --master_port)")
    if torch.cuda.is_available():
        device, backend = cuda_device(local_rank), "nccl"
        torch.cuda.set_device(device)
    else:
        device, backend = torch.device("cpu"), "gloo"
    try:
        dist.init_process_group(backend=backend, init_method="env://")
    except (RuntimeError, ValueError) as e:  # DistNetworkError included: a port in use
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise DataError(f"cannot start the process group at {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} "
                        f"({reason}): another job may hold the port (--master_port)") from None
    return DistInfo(rank, world_size, local_rank, device)


def all_reduce_sum(values, info):
    """Sum a list of floats over ranks (one collective)."""
    if not info.multi:
        return values
    return all_reduce_tensors([torch.tensor(values, dtype=torch.float64, device=info.device)], info)[0].tolist()


def all_reduce_tensors(tensors, info):
    """Sum tensors of one dtype on info.device (a GPU under NCCL, the CPU under gloo) over ranks, in one
    collective; returns the sums."""
    if not info.multi:
        return tensors
    flat = torch.cat([t.flatten() for t in tensors])
    dist.all_reduce(flat)
    return [part.view_as(t) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)]


def own_share(items, info, check=None, every=1):
    """Items i ≡ rank (mod world size): one rank's share of work that every rank walks through. `check`, if
    given, is called before each `every` rounds of world-size items, as many times on every rank however
    unequal the shares (it may be a collective, and may raise to end the walk on every rank)."""
    if check is None:
        return itertools.islice(items, info.rank, None, info.world_size)
    return _checked_share(iter(items), info, check, every * info.world_size)


def _checked_share(items, info, check, chunk_size):
    while chunk := list(itertools.islice(items, chunk_size)):
        check()
        yield from itertools.islice(chunk, info.rank, None, info.world_size)


def gather_to_master(obj, info):
    """[every rank's obj] on rank 0, None on the others (a picklable object per rank)."""
    if not info.multi:
        return [obj]
    gathered = [None] * info.world_size if info.is_master else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def broadcast_from_master(obj, info):
    """Rank 0's obj on every rank: the decisions and scores that every rank must share."""
    if not info.multi:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown(info):
    """End the process group. Gloo's worker threads drop the tensors of the last collectives after
    completing them, which needs the GIL; destroying the group joins those threads while holding it, so
    a thread still dropping one deadlocks the exit (seen: a glue-xnli.py rank hung after its last
    broadcast). A barrier and a short sleep, both waiting without the GIL, let them finish first."""
    if not info.multi:
        return
    dist.barrier()
    time.sleep(0.05)
    dist.destroy_process_group()


def enable_tf32():
    """TF32 for float32 matmuls on CUDA (~8x the float32 rate on Ampere and later, with a 10-bit
    mantissa; cuDNN uses it by default), by the switch torch.compile also reads. Not
    `set_float32_matmul_precision("high")`, which would also let oneDNN use TF32 for the CPU's matmuls
    where the processor has it. bf16/fp16 autocast is unaffected. Evaluation turns it off (`full_float32`)."""
    torch.backends.cuda.matmul.allow_tf32 = True


@contextmanager
def full_float32():
    """Float32 matmuls without TF32 inside: evaluation scores and decodes as the original does in float32
    (a TF32 rounding can flip a close argmax, and with it a hypothesis and the BLEU)."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
