"""What the step benchmarks share: generated data that xlm's Trainer reads, a Trainer built as train.py
builds it and fed as train.py feeds it (rounds of its Plan, made ahead in a Prefetcher, through
`train_round`), and its rounds timed with the split of their time (data wait, forward, backward,
optimizer, generation). The data wait is the Trainer's own (`data_wait`); the rest of the split comes
from timers the bench installs around xlm's own calls (model forwards, autograd's backward, optimizer
steps, the generate functions), each with a device synchronisation; nothing of it is in xlm.
"""
import contextlib
import json
import os
import signal
import sys
import time
import types

import numpy as np
import torch

import xlm.model.generate
from xlm.data.binarized import binarize
from xlm.data.dictionary import SPECIAL_WORDS, Dictionary
from xlm.train.loop import Trainer
from xlm.train.options import parse_params
from xlm.train.pipeline import Prefetcher
from xlm.train.signals import HANDLED

LANGS = ("la", "lb")
PHASES = ("data", "forward", "backward", "optimizer", "generation")


def write_data(folder, n_words, n_sentences, min_len=5, max_len=30, seed=0):
    """A vocabulary of n_words (specials included), and random sentences of min_len..max_len words for
    la, lb and la-lb (train: n_sentences, valid/test: 50), binarized by xlm."""
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(n_words - len(SPECIAL_WORDS))])
    with open(os.path.join(folder, "vocab"), "w") as f:
        f.writelines(f"{w} {10 ** 7 - i}\n" for i, w in enumerate(words))
    dico = Dictionary.read_vocab(os.path.join(folder, "vocab"))
    for split, n in (("train", n_sentences), ("valid", 50), ("test", 50)):
        for name in [f"{split}.{lg}" for lg in LANGS] + [f"{split}.la-lb.{lg}" for lg in LANGS]:
            text = os.path.join(folder, name)
            lengths = rng.integers(min_len, max_len + 1, n)
            ids = rng.integers(0, len(words), int(lengths.sum()))
            with open(text, "w") as f:
                for sentence in np.split(words[ids], np.cumsum(lengths)[:-1]):
                    f.write(" ".join(sentence) + "\n")
            binarize(text, dico, text + ".pth", threads=1)
            os.remove(text)
    return dico


def build_trainer(data, dump, exp_id, flags):
    """xlm's Trainer for `train.py --data_path data <flags>`; its log lines go to its train.log only. The
    process keeps its own signal handlers: the Trainer's keep a kill for a progress line that a bench,
    which runs the steps itself, never reaches."""
    params = parse_params(["--dump_path", dump, "--exp_name", "bench", "--exp_id", exp_id, "--data_path", data,
                           "--lgs", "-".join(LANGS), *map(str, flags)])
    handlers = {sig: signal.getsignal(sig) for sig in HANDLED}
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        trainer = Trainer(params)
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    return trainer


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


@contextlib.contextmanager
def eval_mode(*models):
    """The models in eval mode inside, in their former modes after: a step timed after decoding must
    train as train.py's do (dropout on), and xlm's back-translation keeps the mode it finds."""
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)


def tokens_of(work):
    """Tokens of the batches a plan item was made from: the sentences (a stream's rows, a pair's two sides,
    AE's and BT's original sentences), and an MT step's source too."""
    if work.kind != "step":
        return 0
    t = work.inputs
    tokens = t["x"].numel() if t["lengths"] is None else int(t["lengths"].sum())
    return tokens + (int(t["src_lengths"].sum()) if work.objective == "mt" else 0)


class Rounds:
    """A Trainer fed as train.py feeds it: its plan made ahead in a Prefetcher (or inline, in the main
    thread, with prefetch=False); step() trains one round. Counts the tokens of the items the Trainer
    consumed (the producer runs a few items ahead)."""

    def __init__(self, trainer, prefetch=True):
        s = trainer.state
        items = trainer.plan.items(s.n_total_iter)
        self.plan = Prefetcher(items, pin=trainer.info.device.type == "cuda") if prefetch else items
        self.trainer, self.tokens = trainer, 0

    def __iter__(self):
        return self

    def __next__(self):
        work = next(self.plan)
        self.tokens += tokens_of(work)
        return work

    def step(self):
        self.trainer.train_round(self)

    def close(self):
        if isinstance(self.plan, Prefetcher):
            self.plan.close()


@contextlib.contextmanager
def phase_timers(trainer, seconds):
    """Adds to seconds[phase] the time of each phase of the Trainer's steps, synchronising the device
    around each (which removes the overlap of host and device work: for the split only, not for speed)."""
    device = trainer.info.device
    state = types.SimpleNamespace(generating=0, starts=[])
    undo = []

    def timed(phase, fn):
        def wrapper(*args, **kwargs):
            sync(device)
            start = time.perf_counter()
            state.generating += phase == "generation"
            try:
                return fn(*args, **kwargs)
            finally:
                state.generating -= phase == "generation"
                sync(device)
                seconds[phase] += time.perf_counter() - start
        return wrapper

    def patch(owner, name, phase):
        original = getattr(owner, name)
        setattr(owner, name, timed(phase, original))
        undo.append(lambda: setattr(owner, name, original))

    def before(module, args, kwargs):
        if not state.generating:
            sync(device)
            state.starts.append(time.perf_counter())

    def after(module, args, kwargs, output):
        if not state.generating:
            sync(device)
            # a forward without gradient in a training step is the encoding before a generation
            seconds["forward" if torch.is_grad_enabled() else "generation"] += time.perf_counter() - state.starts.pop()

    patch(torch.autograd, "backward", "backward")
    for optimizer in trainer.optimizers.values():
        patch(optimizer, "step", "optimizer")
        patch(optimizer, "zero_grad", "optimizer")
    # generate_* wherever xlm imported them
    for fn_name in ("generate_greedy", "generate_beam"):
        fn = getattr(xlm.model.generate, fn_name)
        for module in [m for n, m in sys.modules.items() if n == "xlm" or n.startswith("xlm.")]:
            if getattr(module, fn_name, None) is fn:
                patch(module, fn_name, "generation")
    for model in trainer.models.values():
        handles = (model.register_forward_pre_hook(before, with_kwargs=True),
                   model.register_forward_hook(after, with_kwargs=True))
        undo.extend(h.remove for h in handles)
    try:
        yield
    finally:
        for fn in reversed(undo):
            fn()


def allocator_calls(device):
    """CUDA's caching allocator's calls to the driver so far: with shapes that change from step to step,
    cudaMalloc/cudaFree in a step (a cudaFree waits for the device) mean the cache does not fit them."""
    if device.type != "cuda":
        return {}
    stats = torch.cuda.memory_stats(device)
    return {k: stats.get(k, 0) for k in ("num_device_alloc", "num_device_free", "num_alloc_retries")}


def time_rounds(rounds, steps, warmup):
    """{tokens_per_s, data_wait_share, seconds_per_step} of `steps` rounds after `warmup` (the data wait as
    the Trainer measures it for its log lines), then the split of the step time from as many rounds again
    with phase timers."""
    trainer = rounds.trainer
    device = trainer.info.device
    for _ in range(warmup):
        rounds.step()
    sync(device)
    rounds.tokens, trainer.data_wait = 0, 0.0
    allocator = allocator_calls(device)
    start = time.perf_counter()
    for _ in range(steps):
        rounds.step()
    sync(device)
    total = time.perf_counter() - start
    result = {"tokens_per_s": round(rounds.tokens / total, 1), "seconds_per_step": round(total / steps, 4),
              "data_wait_share": round(trainer.data_wait / total, 4),
              "tokens_per_step": round(rounds.tokens / steps, 1)}
    if device.type == "cuda":
        result["allocator_calls_per_step"] = {k: (v - allocator[k]) / steps for k, v in allocator_calls(device).items()}

    seconds = dict.fromkeys(PHASES, 0.0)
    trainer.data_wait = 0.0
    with phase_timers(trainer, seconds):
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            rounds.step()
        sync(device)
        total = time.perf_counter() - start
    seconds["data"] = trainer.data_wait
    seconds["other"] = total - sum(seconds.values())
    result["split"] = {k: round(v / total, 4) for k, v in seconds.items() if v or k != "generation"}
    result["split_note"] = ("shares of the step time measured with a device synchronisation around each phase; "
                            "data = the Trainer's wait for the plan's next item; other = copies to the device, "
                            "clipping, learning-rate updates, bookkeeping")
    return result


# kernel families on CUDA, by the first of these substrings in a kernel's name (lower-cased)
KERNEL_FAMILIES = (("matmul", ("gemm", "nvjet", "cutlass", "xmma", "cublas")),
                   ("attention", ("attention", "fmha", "flash", "cudnn", "sdpa")),
                   ("optimizer", ("adam",)), ("layer_norm", ("layer_norm", "layernorm", "gammabeta")),
                   ("copy_or_cast", ("copy", "cast")), ("reduction", ("reduce",)))


def kernel_family(name):
    name = name.lower()
    return next((family for family, keys in KERNEL_FAMILIES if any(k in name for k in keys)), "other_elementwise")


def profile_rounds(rounds, steps, top=15):
    """Where `steps` rounds spend their time (torch.profiler). On the CPU: the ops of the most self time,
    with their share. On CUDA: the kernels alone (an op's device time is also its kernels', counted
    once here), their share of the kernel time by family and the top kernels, and device_busy, the
    kernel time over the wall time: well under 1, the GPU waits for the host to launch work (the
    profiler's own host overhead lowers it somewhat)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    trainer, step = rounds.trainer, rounds.step
    cuda = trainer.info.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    step()
    sync(trainer.info.device)
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(trainer.info.device)
        wall = time.perf_counter() - start
    events = prof.key_averages()
    if cuda:
        events = [e for e in events if e.device_type == DeviceType.CUDA]
    self_time = (lambda e: e.self_device_time_total) if cuda else (lambda e: e.self_cpu_time_total)
    total = sum(self_time(e) for e in events) or 1
    ranked = sorted(events, key=self_time, reverse=True)[:top]
    result = {"top": [{"op": e.key[:160], "self_share": round(self_time(e) / total, 4),
                       "calls_per_step": e.count / steps} for e in ranked]}
    if cuda:
        families = {}
        for e in events:
            family = kernel_family(e.key)
            families[family] = families.get(family, 0) + self_time(e) / total
        result["kernel_families"] = {k: round(v, 4) for k, v in sorted(families.items(), key=lambda kv: -kv[1])}
        result["device_busy"] = round(total / 1e6 / wall, 3)  # profiler times are in microseconds
        result["kernels_per_step"] = sum(e.count for e in events) / steps
    return result


def emit(result, out=None):
    """Print the result as JSON, and write it to `out` too when given."""
    text = json.dumps(result, indent=1)
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")
