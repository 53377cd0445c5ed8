"""Translation speed: translate.py's sentences/s with beam 5, and the share of a back-translation step
spent generating, and beam-5 decoding of one batch against the original's generate_beam (imported from
its checkout, --original, on the same weights and encoder output). Random weights with </s> made
impossible, so every sentence decodes to its max_len (the worst case). Prints one JSON object.

    python -m bench.translate [--sentences 200] [--emb_dim 256 --n_layers 4] [--original /work/orig-cpu]
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

from bench.data_pipeline import cpu_model
from xlm.data import load_binarized
from xlm.data.datasets import Batch, batch_sentences
from xlm.data.dictionary import Dictionary
from xlm.model.checkpoint import checkpoint_payload, save_checkpoint
from xlm.model.generate import generate_beam, generate_greedy
from xlm.model.transformer import N_MAX_POSITIONS, TransformerConfig, TransformerModel
from xlm.objectives.mt import mt_loss

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def original_models(path, enc, dec, n_words):
    """The original's TransformerModel (from its checkout at `path`, imported as `original_xlm` so that it
    does not shadow xlm) as encoder and decoder with the weights of `enc` and `dec`."""
    package = os.path.join(path, "xlm")
    spec = importlib.util.spec_from_file_location("original_xlm", os.path.join(package, "__init__.py"),
                                                  submodule_search_locations=[package])
    sys.modules["original_xlm"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sys.modules["original_xlm"])
    from original_xlm.model.transformer import TransformerModel as OriginalModel
    c = enc.config
    params = argparse.Namespace(n_langs=c.n_langs, n_words=n_words, eos_index=c.eos_index, pad_index=c.pad_index,
                                id2lang={i: str(i) for i in range(c.n_langs)},
                                lang2id={str(i): i for i in range(c.n_langs)}, emb_dim=c.emb_dim,
                                n_heads=c.n_heads, n_layers=c.n_layers, dropout=c.dropout,
                                attention_dropout=c.attention_dropout, gelu_activation=c.gelu_activation,
                                sinusoidal_embeddings=False, share_inout_emb=True, asm=False)
    models = []
    for model, is_encoder in ((enc, True), (dec, False)):
        original = OriginalModel(params, range(n_words), is_encoder, with_output=True)
        original.load_state_dict(model.state_dict())
        models.append(original.eval())
    return models


def best_of(rounds, functions):
    """The fastest of `rounds` runs of each function, run in turn so that both see the same load."""
    seconds = [[] for _ in functions]
    for _ in range(rounds):
        for times, f in zip(seconds, functions):
            start = time.perf_counter()
            f()
            times.append(time.perf_counter() - start)
    return [min(t) for t in seconds]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=os.path.join(ROOT, "data", "processed", "sample"))
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--emb_dim", type=int, default=256)
    parser.add_argument("--n_layers", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--original", default="/work/orig-cpu", help="checkout of the original XLM ('' to skip)")
    args = parser.parse_args()
    torch.manual_seed(0)
    corpus = load_binarized(os.path.join(args.data, "valid.en-fr.en.pth"))
    dico = Dictionary.read_vocab(os.path.join(args.data, "vocab"))
    kw = dict(n_words=len(dico), emb_dim=args.emb_dim, n_layers=args.n_layers, n_heads=8, n_langs=2,
              gelu_activation=True, dropout=0.1, attention_dropout=0.1)
    enc, dec = TransformerModel(TransformerConfig(**kw)), TransformerModel(TransformerConfig(**kw, is_decoder=True))
    with torch.no_grad():
        dec.pred_layer.proj.bias[dec.config.eos_index] = -1e4
    params = dict(emb_dim=args.emb_dim, n_layers=args.n_layers, n_heads=8, n_langs=2, gelu_activation=True,
                  lang2id={"en": 0, "fr": 1}, id2lang={0: "en", 1: "fr"}, encoder_only=False, n_words=len(dico))
    result = {"benchmark": "translate", "command": "python -m bench.translate " + " ".join(sys.argv[1:]),
              "device_name": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "model": {"emb_dim": args.emb_dim, "n_layers": args.n_layers, "n_words": len(dico)}}

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "mt.pth")
        save_checkpoint(checkpoint_payload(dico, params, encoder=enc, decoder=dec), ckpt)
        lines = [" ".join(dico[i] for i in corpus[k]) for k in range(args.sentences)]
        start = time.perf_counter()
        subprocess.run([sys.executable, os.path.join(ROOT, "translate.py"), "--model_path", ckpt, "--src_lang", "en",
                        "--tgt_lang", "fr", "--output_path", os.path.join(tmp, "out"), "--beam_size", "5",
                        "--batch_size", str(args.batch_size), "--device", "cpu"],
                       input="\n".join(lines) + "\n", text=True, check=True, capture_output=True)
        seconds = time.perf_counter() - start
    result["translate_beam5"] = {"sentences": args.sentences, "seconds": round(seconds, 2),
                                 "sentences_per_s": round(args.sentences / seconds, 2),
                                 "mean_source_tokens": round(sum(len(l.split()) for l in lines) / len(lines), 1),
                                 "note": "includes process start-up and model loading"}

    # one back-translation step: generate (no gradient, eval mode), then train on the reverse direction
    optimizer = torch.optim.AdamW(list(enc.parameters()) + list(dec.parameters()), lr=1e-4)
    batch = batch_sentences([corpus[k] for k in range(args.batch_size)])
    gen_t, train_t = [], []
    for _ in range(3):
        start = time.perf_counter()
        enc.eval(), dec.eval()
        with torch.no_grad():
            encoded = enc(batch.x, batch.lengths, langs=0)
            max_len = min(int(1.3 * int(batch.lengths.max()) + 5), N_MAX_POSITIONS)
            x2, len2 = generate_greedy(dec, encoded, batch.lengths, 1, max_len=max_len)
        middle = time.perf_counter()
        enc.train(), dec.train()
        mt_loss(enc, dec, Batch(x2, len2), 1, batch, 0).backward()
        optimizer.step()
        optimizer.zero_grad()
        gen_t.append(middle - start)
        train_t.append(time.perf_counter() - middle)
    g, t = min(gen_t), min(train_t)
    result["bt_step"] = {"batch_size": args.batch_size, "generated_len": int(len2.max()),
                         "generate_seconds": round(g, 3), "train_seconds": round(t, 3),
                         "generation_share": round(g / (g + t), 3)}

    if args.original:
        # beam 5 on one batch, as mt.py and translate.py run it, against the original on the same encoder output (bs, slen, dim)
        _, orig_dec = original_models(args.original, enc, dec, len(dico))
        enc.eval(), dec.eval()
        with torch.no_grad():
            encoded = enc(batch.x, batch.lengths, langs=0)
            max_len = min(int(1.5 * int(batch.lengths.max()) + 10), N_MAX_POSITIONS)
            ours = lambda: generate_beam(dec, encoded, batch.lengths, 1, 5, 1.0, False, max_len)
            theirs = lambda: orig_dec.generate_beam(encoded, batch.lengths, 1, 5, 1.0, False, max_len)
            (out, out_len), (orig_out, orig_len) = ours(), theirs()
            ours_s, theirs_s = best_of(3, [ours, theirs])
        result["beam5_vs_original"] = {
            "batch_size": args.batch_size, "max_len": max_len, "seconds": round(ours_s, 3),
            "original_seconds": round(theirs_s, 3), "speedup": round(theirs_s / ours_s, 2),
            "outputs_identical": torch.equal(out, orig_out.t()) and torch.equal(out_len, orig_len)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
