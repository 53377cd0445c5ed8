"""Training-step speed: an MLM step on a bptt stream plus a TLM step on a sentence pair, as train.py
runs them (masking on the CPU, one forward returning the loss, backward, clipping, the original's Adam
with the inverse-sqrt schedule, as `--optimizer adam_inverse_sqrt,...`).
Prints one JSON object with tokens/s, and on a GPU the model FLOPs utilisation (MFU).

    python bench/train.py                                   # CPU: 4 layers, 256 dim, bptt 256
    python bench/train.py --size mlm_tlm_xnli15_1024 --dtype bfloat16 --device cuda
"""
import argparse
import json
import sys
import time
from contextlib import nullcontext

import torch

from bench.data_pipeline import cpu_model
from bench.model import sync
from xlm.data.datasets import Batch
from xlm.model.transformer import TransformerConfig, TransformerModel
from xlm.objectives.lm import MaskingConfig, concat_pair, mask_for_training
from xlm.train.compile import BucketPadded
from xlm.train.schedules import build_optimizer, update_lr

SIZES = {"small": dict(emb_dim=256, n_layers=4, n_heads=8, n_words=32000),
         "mlm_tlm_xnli15_1024": dict(emb_dim=1024, n_layers=12, n_heads=8, n_words=95000)}
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def flops_per_token(c, seq):
    """Forward+backward FLOPs per input token: 6 x (layer matmul weights) + attention scores and
    mixing (12 x layers x seq x dim), and the output layer on the ~15% predicted tokens."""
    layer_weights = c.n_layers * 12 * c.emb_dim ** 2
    return 6 * layer_weights + 12 * c.n_layers * seq * c.emb_dim + 0.15 * 6 * c.emb_dim * c.n_words


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", choices=list(SIZES), default="small")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--bptt", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="torch.compile the training forward, as --compile true")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = TransformerConfig(**SIZES[args.size], n_langs=15, dropout=0.1, attention_dropout=0.1,
                               gelu_activation=True)
    model = TransformerModel(config).to(device).train()
    forward = BucketPadded(model) if args.compile else model  # as train.py --compile true
    optimizer = build_optimizer(list(model.parameters()), "adam_inverse_sqrt,beta1=0.9,beta2=0.98,lr=0.0001")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bfloat16" else nullcontext()
    masking = MaskingConfig(n_words=config.n_words)
    generator = torch.Generator().manual_seed(0)
    bs, bptt = args.batch_size, args.bptt

    def batches():
        """A bptt stream batch (MLM) and a batch of sentence pairs of ~bptt/2 tokens a side (TLM)."""
        stream = torch.randint(14, config.n_words, (bs, bptt), generator=generator)
        sides = []
        for _ in range(2):
            lengths = torch.randint(bptt // 4, bptt // 2, (bs,), generator=generator)
            x = torch.randint(14, config.n_words, (bs, int(lengths.max())), generator=generator)
            x[torch.arange(x.shape[1])[None, :] >= lengths[:, None]] = 2
            sides.append(Batch(x, lengths))
        return stream, concat_pair(sides[0], 3, sides[1], 7)

    def step():
        stream, (x2, len2, pos2, langs2) = batches()
        n = 0
        for x, lengths, positions, langs in ((stream, torch.full((bs,), bptt), None, torch.full_like(stream, 3)),
                                             (x2, len2, pos2, langs2)):
            x, pred_mask, y = mask_for_training(x, lengths, masking, generator)
            to = (lambda t: None if t is None else t.to(device, non_blocking=True))
            with autocast:
                loss = forward(to(x), None if positions is None else to(lengths), langs=to(langs),
                               positions=to(positions), pred_mask=to(pred_mask), y=to(y))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            update_lr(optimizer)
            n += int(lengths.sum())
        return n

    for _ in range(2):
        step()
    sync(device)
    start, tokens = time.perf_counter(), 0
    for _ in range(args.steps):
        tokens += step()
    sync(device)
    seconds = time.perf_counter() - start
    result = {"benchmark": "train_step", "command": "python " + " ".join(sys.argv), "size": args.size,
              "config": SIZES[args.size], "device": args.device, "dtype": args.dtype, "batch_size": bs, "bptt": bptt,
              "steps": args.steps, "tokens_per_s": round(tokens / seconds), "torch": torch.__version__,
              "threads": torch.get_num_threads(),
              "device_name": torch.cuda.get_device_name() if device.type == "cuda" else cpu_model()}
    if device.type == "cuda":
        achieved = tokens / seconds * flops_per_token(config, bptt)
        peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in result["device_name"]), None)
        result.update(achieved_tflops=round(achieved / 1e12, 1),
                      mfu=round(achieved / peak, 3) if peak and args.dtype == "bfloat16" else None,
                      max_memory_gib=round(torch.cuda.max_memory_allocated() / 2 ** 30, 2))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
