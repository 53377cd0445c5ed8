"""Training-step speed of xlm's Trainer, as train.py runs it, on generated data read from disk: MLM on a
bptt stream, TLM on padded sentence pairs, MT, and back-translation (greedy generation + the MT step on
the reverse direction). For each: tokens/s (tokens of the batches the iterators yield), the share of step
time the main thread waits for data, the split of the step time (forward, backward, optimizer,
generation), and on a GPU the model FLOPs utilisation (MFU) of MLM. Prints one JSON object and writes
it to --out.

    python -m bench.train                                        # CPU: 4 layers, 256 dim, bptt 256
    python -m bench.train --size mlm_tlm_xnli15_1024 --bf16 --compile   # GPU
"""
import argparse
import os
import sys
import tempfile
import time

import torch

from bench.data_pipeline import cpu_model
from bench.steps import Rounds, build_trainer, emit, profile_rounds, time_rounds, write_data
from xlm.train import adam
from xlm.train import compile as compile_options

SIZES = {"tiny": dict(emb_dim=64, n_layers=2, n_heads=4, n_words=2000),
         "small": dict(emb_dim=256, n_layers=4, n_heads=8, n_words=32000),
         "mlm_tlm_xnli15_1024": dict(emb_dim=1024, n_layers=12, n_heads=8, n_words=95000)}
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
# the flags of a run of each objective alone
OBJECTIVES = {"mlm": ["--mlm_steps", "la"], "tlm": ["--mlm_steps", "la-lb"],
              "mt": ["--encoder_only", "false", "--mt_steps", "la-lb"],
              "bt": ["--encoder_only", "false", "--bt_steps", "la-lb-la"]}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def flops_per_token(c, seq, word_pred=0.15):
    """Forward+backward FLOPs per input token of an MLM step: 6 x the layers' matmul weights, attention
    scores and mixing (12 x layers x seq x dim), and the output layer on the predicted tokens."""
    layer_weights = c["n_layers"] * 12 * c["emb_dim"] ** 2
    return 6 * layer_weights + 12 * c["n_layers"] * seq * c["emb_dim"] + word_pred * 6 * c["emb_dim"] * c["n_words"]


def device_name(device):
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", choices=list(SIZES), default="small")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (--bf16 true)")
    parser.add_argument("--compile", action="store_true", help="torch.compile (--compile true)")
    parser.add_argument("--compile_mode", default=None,
                        help="with --compile, torch.compile's mode: reduce-overhead replays CUDA graphs, whose "
                             "launches cost the host nothing (measured here only, not a train.py option)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--bptt", type=int, default=256)
    parser.add_argument("--max_len", type=int, default=100, help="longest training sentence (words)")
    parser.add_argument("--attention_dropout", type=float, default=0.1,
                        help="0 lets padded batches take the variable-length flash kernel on CUDA")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--objectives", default="mlm,tlm,mt,bt")
    parser.add_argument("--multi_tensor_adam", action="store_true",
                        help="update with the multi-tensor Adam, not torch's fused kernel (CUDA), to time the kernel")
    parser.add_argument("--profile", type=int, default=0,
                        help="also profile this many steps of each objective (top ops; on CUDA, kernel families "
                             "and the device's busy share)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    objectives = args.objectives.split(",")
    unknown = set(objectives) - set(OBJECTIVES)
    if unknown:
        parser.error(f"--objectives: unknown {', '.join(sorted(unknown))} (known: {', '.join(OBJECTIVES)})")
    size = SIZES[args.size]
    if args.compile_mode:
        if not args.compile:
            parser.error("--compile_mode needs --compile")
        compile_options.COMPILE_OPTIONS["mode"] = args.compile_mode
    if args.multi_tensor_adam:
        adam.uses_fused_kernel = lambda param: False
    flags = ["--emb_dim", size["emb_dim"], "--n_layers", size["n_layers"], "--n_heads", size["n_heads"],
             "--dropout", 0.1, "--attention_dropout", args.attention_dropout, "--gelu_activation", "true",
             "--batch_size", args.batch_size, "--bptt", args.bptt, "--max_len", args.max_len,
             "--optimizer", "adam_inverse_sqrt,beta1=0.9,beta2=0.98,lr=0.0001,warmup_updates=30000",
             "--clip_grad_norm", 5, "--bf16", str(args.bf16).lower()]
    if args.compile:
        flags += ["--compile", "true"]
    tmp = tempfile.TemporaryDirectory()
    data = os.path.join(tmp.name, "data")
    os.makedirs(data)
    # enough sentences for every timed step (warm-up, speed, split, the profile) without a new epoch
    n_stream = (3 * (args.steps + args.warmup) + args.profile + 1) * args.batch_size * args.bptt
    start = time.perf_counter()
    write_data(data, size["n_words"], max(2000, n_stream // 52), min_len=4, max_len=args.max_len)
    result = {"benchmark": "train_step", "command": "python -m bench.train " + " ".join(sys.argv[1:]),
              "size": args.size, "config": size, "dtype": "bfloat16" if args.bf16 else "float32",
              "compile": args.compile, "compile_mode": args.compile_mode,
              "adam": "multi-tensor" if args.multi_tensor_adam else "fused kernel",
              "batch_size": args.batch_size, "bptt": args.bptt, "max_len": args.max_len,
              "steps": args.steps, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "data_seconds": round(time.perf_counter() - start, 1), "objectives": {}}
    for name in objectives:
        # a run of this objective alone: each round of its plan is one step
        trainer = build_trainer(data, tmp.name, name, flags + OBJECTIVES[name])
        device, rounds = trainer.info.device, Rounds(trainer)
        try:
            r = result["objectives"][name] = time_rounds(rounds, args.steps, args.warmup)
            if name == "mlm" and device.type == "cuda":
                achieved = r["tokens_per_s"] * flops_per_token(size, args.bptt)
                peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in device_name(device)), None)
                r.update(achieved_tflops=round(achieved / 1e12, 1),
                         mfu=round(achieved / peak, 3) if peak and args.bf16 else None)
            if args.profile:
                r["profile"] = profile_rounds(rounds, args.profile)
        finally:
            rounds.close()
        del trainer, rounds
    result.update(device=str(device), device_name=device_name(device))
    if device.type == "cuda":
        result["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    emit(result, args.out)
    tmp.cleanup()


if __name__ == "__main__":
    main()
