"""Translation speed: beam-5 and greedy decoding in process (sentences/s, generated tokens/s), translate.py
end to end (process start-up and model loading included), and a back-translation step of xlm's Trainer
(greedy generation + the MT step on the reverse direction) with its split. Random weights with </s> made
impossible, so every sentence decodes to its max_len (the worst case). Prints one JSON object and
writes it to --out.

    python -m bench.translate [--sentences 200] [--emb_dim 256 --n_layers 4] [--bf16]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext

import torch

from bench.steps import Rounds, build_trainer, emit, eval_mode, sync, time_rounds, write_data
from bench.train import device_name
from xlm.data import load_binarized
from xlm.data.datasets import batch_sentences
from xlm.model.checkpoint import checkpoint_payload, save_checkpoint
from xlm.model.generate import generate_beam, generate_greedy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--emb_dim", type=int, default=256)
    parser.add_argument("--n_layers", type=int, default=4)
    parser.add_argument("--n_words", type=int, default=8000)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--bt_steps", type=int, default=3)
    parser.add_argument("--skip_translate_py", action="store_true")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory()
    data = os.path.join(tmp.name, "data")
    os.makedirs(data)
    dico = write_data(data, args.n_words, max(args.sentences, 500), min_len=5, max_len=30)
    flags = ["--emb_dim", args.emb_dim, "--n_layers", args.n_layers, "--n_heads", 8, "--dropout", 0.1,
             "--attention_dropout", 0.1, "--gelu_activation", "true", "--batch_size", args.batch_size,
             "--encoder_only", "false", "--bt_steps", "la-lb-la", "--bf16", str(args.bf16).lower(),
             "--optimizer", "adam_inverse_sqrt,beta1=0.9,beta2=0.98,lr=0.0001,warmup_updates=30000",
             "--clip_grad_norm", 5]
    trainer = build_trainer(data, tmp.name, "bt", flags)
    device = trainer.info.device
    enc, dec = trainer.models["encoder"], trainer.models["decoder"]
    with torch.no_grad():
        dec.pred_layer.proj.bias[dec.config.eos_index] = -1e4
    result = {"benchmark": "translate", "command": "python -m bench.translate " + " ".join(sys.argv[1:]),
              "device": str(device), "device_name": device_name(device), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "dtype": "bfloat16" if args.bf16 else "float32",
              "model": {"emb_dim": args.emb_dim, "n_layers": args.n_layers, "n_words": len(dico)}}

    # decoding in process: batches of the valid sentences, max_len 1.5 x source + 10 (BLEU evaluation's)
    corpus = load_binarized(os.path.join(data, "valid.la.pth"))
    corpus = load_binarized(os.path.join(data, "train.la.pth")) if len(corpus) < args.sentences else corpus
    batches = [batch_sentences([corpus[k] for k in range(i, min(i + args.batch_size, args.sentences))])
               for i in range(0, args.sentences, args.batch_size)]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.bf16 else nullcontext()
    # whether each batch's beams read one copy of their source's keys (the device rounded its rows alike),
    # or each beam its own, reordered with the beams at every step as the original does: a cost on a GPU
    shared = []
    start_decoding = dec.start_decoding

    def recording(*args, **kwargs):
        state = start_decoding(*args, **kwargs)
        shared.append(state.beams_share_source)
        return state
    dec.start_decoding = recording
    for name, decode in (("greedy", lambda e, n, m: generate_greedy(dec, e, n, 1, max_len=m)),
                         ("beam5", lambda e, n, m: generate_beam(dec, e, n, 1, beam_size=5, max_len=m))):
        generated = 0
        with torch.no_grad(), autocast, eval_mode(enc, dec):
            decode(enc(batches[0].x.to(device), batches[0].lengths.to(device), langs=0),
                   batches[0].lengths.to(device), 20)
            sync(device)
            start = time.perf_counter()
            for b in batches:
                x, lengths = b.x.to(device), b.lengths.to(device)
                out_len = decode(enc(x, lengths, langs=0), lengths, int(1.5 * int(b.lengths.max()) + 10))[1]
                generated += int(out_len.sum())
            sync(device)
        seconds = time.perf_counter() - start
        result[f"decode_{name}"] = {"sentences": args.sentences, "batch_size": args.batch_size,
                                    "sentences_per_s": round(args.sentences / seconds, 2),
                                    "generated_tokens_per_s": round(generated / seconds, 1)}
        print(name, result[f"decode_{name}"], file=sys.stderr, flush=True)

    result["decode_beam5"]["batches_sharing_the_source"] = f"{sum(shared[-len(batches):])} of {len(batches)}"
    del dec.start_decoding

    if not args.skip_translate_py:
        ckpt = os.path.join(tmp.name, "mt.pth")
        params = dict(emb_dim=args.emb_dim, n_layers=args.n_layers, n_heads=8, n_langs=2, gelu_activation=True,
                      lang2id={"la": 0, "lb": 1}, id2lang={0: "la", 1: "lb"}, encoder_only=False, n_words=len(dico))
        save_checkpoint(checkpoint_payload(dico, params, encoder=enc, decoder=dec), ckpt)
        lines = [" ".join(dico[i] for i in corpus[k]) for k in range(args.sentences)]
        start = time.perf_counter()
        subprocess.run([sys.executable, os.path.join(ROOT, "translate.py"), "--model_path", ckpt, "--src_lang", "la",
                        "--tgt_lang", "lb", "--output_path", os.path.join(tmp.name, "out"), "--beam_size", "5",
                        "--batch_size", str(args.batch_size), "--device", device.type],
                       input="\n".join(lines) + "\n", text=True, check=True, capture_output=True)
        seconds = time.perf_counter() - start
        result["translate_py_beam5"] = {"sentences": args.sentences, "seconds": round(seconds, 2),
                                        "sentences_per_s": round(args.sentences / seconds, 2),
                                        "mean_source_tokens": round(sum(len(line.split()) for line in lines)
                                                                    / len(lines), 1),
                                        "note": "includes process start-up and model loading"}

    # one back-translation step of the Trainer: generation (greedy, eval mode, no gradient), then MT
    # (the Trainer's only objective: each round of its plan is one BT step)
    rounds = Rounds(trainer)
    try:
        result["bt_step"] = time_rounds(rounds, args.bt_steps, 1)
    finally:
        rounds.close()
    emit(result, args.out)
    tmp.cleanup()


if __name__ == "__main__":
    main()
