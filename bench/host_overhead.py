"""What a training step costs the host, side by side with the original: the PyTorch operations one MLM,
TLM and BT step issues (counted below autograd, the backward and the optimizer included, on the main
thread) and the time per step of a model whose arithmetic is too small to count (12 layers of 32
dimensions, 4 rows of 16 tokens, one thread). On a GPU each operation is also a kernel launch, so this
is the time the host needs to keep the device busy: a GPU step shorter than it waits for the host.
Prints one JSON object.

    python -m bench.host_overhead [--original /work/orig-cpu] [--steps 200] [--repeats 3]
"""
import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
import types

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bench.compare_original import Sides, import_original
from bench.data_pipeline import cpu_model
from bench.steps import write_data


class OpCounter(TorchDispatchMode):
    """Counts the operations dispatched to kernels (below autograd: the backward's too)."""

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def ops_per_step(step):
    step()  # the first call of a side after the other's may take other paths (caches, packed weights)
    with OpCounter() as counter:
        step()
    return counter.counts


def ms_per_step(step, n):
    start = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - start) / n * 1000


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--original", default="/work/orig-cpu", help="the original XLM, patched for the CPU")
    parser.add_argument("--steps", type=int, default=200, help="steps per timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n_layers", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(1)
    orig = import_original(os.path.abspath(args.original))
    torch.manual_seed(0)
    np.random.seed(0)
    sizes = types.SimpleNamespace(emb_dim=32, n_layers=args.n_layers, n_words=200, batch_size=4, bptt=16,
                                  no_prefetch=False)
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        os.makedirs(data)
        sides = Sides.build(orig, sizes, data, write_data(data, sizes.n_words, 400), tmp)
        result = {"benchmark": "host_overhead", "command": "python -m bench.host_overhead " + " ".join(sys.argv[1:]),
                  "device_name": cpu_model(), "torch": torch.__version__, "threads": 1,
                  "model": {"emb_dim": 32, "n_layers": args.n_layers, "n_heads": 8, "n_words": sizes.n_words},
                  "batches": "MLM 4 x 16 stream; TLM 4 pairs of 20-60 + 20-60 tokens; BT 4 sentences of 10-40 "
                             "tokens, greedy to 1.3 x max + 5",
                  "timing": f"median of {args.repeats} runs of {args.steps} steps per side, alternated",
                  "steps": {}}
        for name, (original, xlm) in sides.steps.items():
            counts = {"original": ops_per_step(original), "xlm": ops_per_step(xlm)}
            times = {"original": [], "xlm": []}
            for _ in range(args.repeats):
                for side, step in (("original", original), ("xlm", xlm)):
                    times[side].append(ms_per_step(step, args.steps if name != "bt" else max(1, args.steps // 20)))
            ops = {side: sum(c.values()) for side, c in counts.items()}
            more = sorted(counts["original"], key=lambda k: counts["xlm"][k] - counts["original"][k])
            result["steps"][name] = {
                "original_ops": ops["original"], "xlm_ops": ops["xlm"],
                "original_ms": round(statistics.median(times["original"]), 3),
                "xlm_ms": round(statistics.median(times["xlm"]), 3),
                "original_ms_runs": [round(t, 3) for t in times["original"]],
                "xlm_ms_runs": [round(t, 3) for t in times["xlm"]],
                "ops_the_original_issues_most_beyond_xlm": {k: [counts["original"][k], counts["xlm"][k]]
                                                            for k in more[:5]}}
            print(name, {k: v for k, v in result["steps"][name].items() if not k.endswith(("runs", "xlm"))},
                  file=sys.stderr, flush=True)
        sides.close()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
