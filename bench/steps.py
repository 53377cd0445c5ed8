"""What the step benchmarks share: generated data that xlm's Trainer reads, a Trainer built as train.py
builds it, and its steps timed with the split of their time (data wait, forward, backward, optimizer,
generation). The split comes from timers the bench installs around xlm's own calls (iterators, model
forwards, autograd's backward, optimizer steps, the generate functions), each with a device
synchronisation; nothing of it is in xlm.
"""
import contextlib
import os
import sys
import threading
import time
import types

import numpy as np
import torch

import xlm.model.generate
from xlm.data.binarized import binarize
from xlm.data.datasets import Batch
from xlm.data.dictionary import SPECIAL_WORDS, Dictionary
from xlm.train.loop import Trainer
from xlm.train.options import parse_params

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
    """xlm's Trainer for `train.py --data_path data <flags>`; its log lines go to its train.log only."""
    params = parse_params(["--dump_path", dump, "--exp_name", "bench", "--exp_id", exp_id, "--data_path", data,
                           "--lgs", "-".join(LANGS), *map(str, flags)])
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        return Trainer(params)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def tokens_of(item):
    """Tokens of what a training iterator yields: a Batch, or a pair of them."""
    if isinstance(item, Batch):
        return int(item.lengths.sum())
    return sum(tokens_of(b) for b in item)


class CountingIterator:
    """Wraps a Trainer's iterator: counts the tokens it yields and the time the main thread waits in it
    (a background worker that iterates it is not waiting for the model, and is not counted)."""

    def __init__(self, inner):
        self.inner, self.tokens, self.wait = inner, 0, 0.0

    def __iter__(self):
        return self

    def __next__(self):
        start = time.perf_counter()
        item = next(self.inner)
        if threading.current_thread() is threading.main_thread():
            self.wait += time.perf_counter() - start
        self.tokens += tokens_of(item)
        return item

    def __getattr__(self, name):
        return getattr(self.inner, name)


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


def time_steps(trainer, step, steps, warmup):
    """{tokens_per_s, data_wait_share, seconds_per_step} of `steps` calls of step() after `warmup`, then the
    split of the step time from as many calls again with phase timers."""
    device = trainer.info.device
    iterators = {k: CountingIterator(it) for k, it in trainer.iterators.items()}
    trainer.iterators.update(iterators)
    for _ in range(warmup):
        step()
    sync(device)
    for it in iterators.values():
        it.tokens, it.wait = 0, 0.0
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    total = time.perf_counter() - start
    tokens, wait = sum(it.tokens for it in iterators.values()), sum(it.wait for it in iterators.values())
    result = {"tokens_per_s": round(tokens / total, 1), "seconds_per_step": round(total / steps, 4),
              "data_wait_share": round(wait / total, 4), "tokens_per_step": round(tokens / steps, 1)}

    seconds = dict.fromkeys(PHASES, 0.0)
    for it in iterators.values():
        it.wait = 0.0
    with phase_timers(trainer, seconds):
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        total = time.perf_counter() - start
    seconds["data"] = sum(it.wait for it in iterators.values())
    seconds["other"] = total - sum(seconds.values())
    result["split"] = {k: round(v / total, 4) for k, v in seconds.items() if v or k != "generation"}
    result["split_note"] = ("shares of the step time measured with a device synchronisation around each phase; "
                            "other = masking, batch assembly outside the iterator, copies, clipping, bookkeeping")
    for k, it in iterators.items():
        trainer.iterators[k] = it.inner
    return result


def profile_steps(trainer, step, steps, top=15):
    """The ops that take the most self time over `steps` calls (torch.profiler), with their share."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.info.device.type == "cuda" else [])
    step()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync(trainer.info.device)
    events = prof.key_averages()
    cuda = trainer.info.device.type == "cuda"
    self_time = (lambda e: e.self_device_time_total) if cuda else (lambda e: e.self_cpu_time_total)
    total = sum(self_time(e) for e in events) or 1
    ranked = sorted(events, key=self_time, reverse=True)[:top]
    return [{"op": e.key, "self_share": round(self_time(e) / total, 4), "calls_per_step": e.count / steps}
            for e in ranked]
