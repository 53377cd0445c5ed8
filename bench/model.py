"""Model speed on this machine: forward+backward tokens/s against transformers' XLMModel of the same
configuration (same weights, same padded batches, timed alternately in one run), and greedy /
beam-5 decoding sentences/s. Prints one JSON object.

    python bench/model.py [--device cpu|cuda] [--dtype float32|bfloat16] [--emb_dim 256 --n_layers 4 ...]
"""
import argparse
import json
import os
import sys
import time
from contextlib import nullcontext

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.data_pipeline import cpu_model  # noqa: E402
from xlm.model.generate import generate_beam, generate_greedy  # noqa: E402
from xlm.model.transformer import TransformerConfig, TransformerModel  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, iters, warmup=2):
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - start) / iters


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--emb_dim", type=int, default=256)
    parser.add_argument("--n_layers", type=int, default=4)
    parser.add_argument("--n_heads", type=int, default=8)
    parser.add_argument("--n_words", type=int, default=32000)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--slen", type=int, default=128)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--decode_sentences", type=int, default=64)
    parser.add_argument("--src_len", type=int, default=20)
    args = parser.parse_args()
    device = torch.device(args.device)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bfloat16" else nullcontext())
    torch.manual_seed(0)

    import transformers
    hf_config = transformers.XLMConfig(vocab_size=args.n_words, emb_dim=args.emb_dim, n_layers=args.n_layers,
                                       n_heads=args.n_heads, dropout=0.1, attention_dropout=0.1, n_langs=2,
                                       gelu_activation=True)
    hf = transformers.XLMModel(hf_config).to(device).train()
    config = TransformerConfig(n_words=args.n_words, emb_dim=args.emb_dim, n_layers=args.n_layers,
                               n_heads=args.n_heads, dropout=0.1, attention_dropout=0.1, n_langs=2,
                               gelu_activation=True)
    ours = TransformerModel(config).to(device).train()
    missing, unexpected = ours.load_state_dict(hf.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("pred_layer") for k in missing)

    bs, slen = args.batch_size, args.slen
    x = torch.randint(14, args.n_words, (bs, slen), device=device)
    lengths = torch.randint(slen // 2, slen + 1, (bs,), device=device)
    lengths[0] = slen
    langs = torch.randint(0, 2, (bs, slen), device=device)
    tokens = int(lengths.sum())

    def step_ours(padded=True):
        with autocast:
            h = ours(x, lengths if padded else None, langs=langs)
        h.float().sum().backward()

    def step_hf(padded=True):
        with autocast:
            h = hf(input_ids=x, lengths=lengths if padded else None, langs=langs).last_hidden_state
        h.float().sum().backward()

    results = {}
    for name, padded in (("padded", True), ("unpadded", False)):
        t_ours, t_hf = [], []
        for _ in range(3):  # alternate so that drift in machine speed hits both alike
            t_ours.append(timed(lambda: step_ours(padded), device, args.iters))
            t_hf.append(timed(lambda: step_hf(padded), device, args.iters))
        n = tokens if padded else bs * slen
        results[f"fwd_bwd_{name}"] = {
            "xlm_tokens_per_s": round(n / min(t_ours)), "transformers_tokens_per_s": round(n / min(t_hf)),
            "speedup": round(min(t_hf) / min(t_ours), 3)}
        print(name, results[f"fwd_bwd_{name}"], file=sys.stderr)

    # decoding with random weights: </s> is made impossible so that every sentence runs to max_len
    # = 1.5 * src_len + 10 (BLEU evaluation's limit), the worst case of the work per sentence
    enc = TransformerModel(config).to(device).eval()
    dec = TransformerModel(TransformerConfig(**{**vars(config), "is_decoder": True})).to(device).eval()
    with torch.no_grad():
        dec.pred_layer.proj.bias[config.eos_index] = -1e4
    n = args.decode_sentences
    src = torch.randint(14, args.n_words, (n, args.src_len + 2), device=device)
    src_len = torch.full((n,), args.src_len + 2, device=device)
    max_len = int(1.5 * (args.src_len + 2) + 10)
    with torch.no_grad(), autocast:
        enc_out = enc(src, src_len, langs=0)
        for name, fn in (("greedy", lambda: generate_greedy(dec, enc_out, src_len, 1, max_len=max_len)),
                         ("beam5", lambda: generate_beam(dec, enc_out, src_len, 1, beam_size=5, max_len=max_len))):
            out_len = fn()[1]
            t = timed(fn, device, 1, warmup=1)
            results[f"decode_{name}"] = {"sentences_per_s": round(n / t, 1),
                                         "mean_output_len": out_len.float().mean().item(),
                                         "batch": n, "max_len": max_len}
            print(name, results[f"decode_{name}"], file=sys.stderr)

    print(json.dumps({
        "benchmark": "model", "command": "python " + " ".join(sys.argv), "device": args.device,
        "device_name": torch.cuda.get_device_name() if device.type == "cuda" else cpu_model(),
        "threads": torch.get_num_threads(), "dtype": args.dtype, "torch": torch.__version__,
        "transformers": transformers.__version__,
        "config": {k: getattr(args, k) for k in ("emb_dim", "n_layers", "n_heads", "n_words", "batch_size", "slen")},
        "results": results}, indent=1))


if __name__ == "__main__":
    main()
