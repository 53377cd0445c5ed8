#!/usr/bin/env python
"""Translate tokenized, BPE'd sentences (stdin, one per line) with a translation checkpoint.

    cat input.en.bpe | python translate.py --model_path mt_enfr.pth --src_lang en --tgt_lang fr \\
        --output_path output.fr.bpe [--beam_size 5 --length_penalty 1.0 --batch_size 32]

The original's command line; output lines are BPE'd like the input (add --remove_bpe true for plain
tokens) and keep the input's order. Sentences are translated in batches of --batch_size in input order, as
the original does: a batch's longest source sets the max_len of all its translations (1.5 x its length +
10), so a translation that runs to max_len depends on its batch, and only the original's batches give the
original's output.
"""
import argparse
import logging
import os
import sys

import torch
from tqdm import tqdm

from xlm.data.bpe import remove_bpe
from xlm.data.datasets import batch_sentences
from xlm.data.dictionary import N_RESERVED, UNK_INDEX
from xlm.fileio import DataError, atomic_write, check_output, decode_utf8
from xlm.host_memory import keep_freed_memory
from xlm.model.checkpoint import load_model
from xlm.model.generate import generate_beam, generate_greedy
from xlm.model.linear import onednn_chosen, weights_packed
from xlm.train.options import bool_flag, check_folder_name


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dump_path", type=str, default="./dumped/", help="with --exp_name: where the log goes")
    p.add_argument("--exp_name", type=str, default="")
    p.add_argument("--exp_id", type=str, default="")
    p.add_argument("--batch_size", type=int, default=32, help="sentences per batch")
    p.add_argument("--model_path", type=str, required=True)
    p.add_argument("--output_path", type=str, required=True, help="must not exist yet")
    p.add_argument("--src_lang", type=str, required=True)
    p.add_argument("--tgt_lang", type=str, required=True)
    p.add_argument("--beam_size", type=int, default=1, help="1: greedy decoding (the original's only mode)")
    p.add_argument("--length_penalty", type=float, default=1.0)
    p.add_argument("--early_stopping", type=bool_flag, default=False)
    p.add_argument("--remove_bpe", type=bool_flag, default=False)
    p.add_argument("--device", type=str, default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.src_lang == args.tgt_lang:
        raise DataError("--src_lang and --tgt_lang must differ")
    if os.path.exists(args.output_path):
        raise DataError(f"--output_path {args.output_path} already exists")
    try:  # found now, not once everything is translated
        check_output(args.output_path)
    except DataError as e:
        raise DataError(f"--output_path {e}") from None
    if args.batch_size < 1 or args.beam_size < 1:
        raise DataError("--batch_size and --beam_size must be >= 1")
    if args.exp_name:
        check_folder_name(args.exp_name, "exp_name")
        check_folder_name(args.exp_id or "translate", "exp_id")
    try:
        device = torch.device(args.device)
    except RuntimeError as e:
        raise DataError(f"--device {args.device}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DataError(f"--device {args.device}: no CUDA device on this machine (use --device cpu)")
    onednn_chosen()  # a bad XLM_ONEDNN in the environment stops the run here, not at its first layer
    return args


def read_input(stream, dico, max_tokens):
    """Token ids of every input line; an empty or too long line is an error naming it. A literal </s>,
    <pad>, <s> or <specialN> is dropped with a warning, as preprocess.py does (it would end the sentence
    or be read as padding); <unk> stays the unknown word."""
    sentences, dropped = [], []
    for line_no, raw in enumerate(stream, 1):
        words = decode_utf8(raw, "<stdin>", line_no).split()
        ids = [dico.index(w) for w in words]
        kept = [i for i in ids if i >= N_RESERVED or i == UNK_INDEX]
        if len(kept) < len(ids):
            dropped.append(line_no)
        if not kept:
            what = "empty line" if not ids else "only special tokens, which are dropped"
            raise DataError(f"<stdin>:{line_no}: {what} (every line must hold a sentence)")
        if len(kept) > max_tokens:
            raise DataError(f"<stdin>:{line_no}: {len(kept)} tokens, more than the {max_tokens} the model's "
                            "positions allow; split the sentence")
        sentences.append(torch.tensor(kept, dtype=torch.long))
    if not sentences:
        raise DataError("<stdin>: no input")
    if dropped:
        print(f"warning: <stdin>: special tokens removed from {len(dropped)} lines (first at line {dropped[0]})",
              file=sys.stderr)
    return sentences


@torch.no_grad()
@weights_packed()  # in oneDNN's layout once for all batches, on the CPU
def translate(model, sentences, src_id, tgt_id, args, device):
    """Translations (id lists without </s>) in input order."""
    # on the CPU, each batch's large tensors (beams x words scores) reuse the pages the last one freed
    freed_memory = keep_freed_memory() if device.type == "cpu" else None
    out = []
    for start in tqdm(range(0, len(sentences), args.batch_size), desc="translate", unit="batch", file=sys.stderr,
                      disable=None):
        batch = batch_sentences([s.numpy() for s in sentences[start:start + args.batch_size]])
        x, lengths = batch.x.to(device), batch.lengths.to(device)
        enc = model.encoder(x, lengths, langs=src_id)
        max_len = min(int(1.5 * int(lengths.max()) + 10), model.decoder.config.n_positions)
        if args.beam_size == 1:
            y, y_len = generate_greedy(model.decoder, enc, lengths, tgt_id, max_len=max_len)
        else:
            y, y_len = generate_beam(model.decoder, enc, lengths, tgt_id, args.beam_size, args.length_penalty,
                                     args.early_stopping, max_len=max_len)
        y, y_len = y.tolist(), y_len.tolist()  # one host read per batch
        out += [row[1:n - 1] for row, n in zip(y, y_len)]
        if freed_memory:
            freed_memory.check()
    return out


def main(argv=None):
    args = parse_args(argv)
    if args.exp_name:
        dump = os.path.join(args.dump_path, args.exp_name, args.exp_id or "translate")
        try:
            os.makedirs(dump, exist_ok=True)
        except OSError as e:
            raise DataError(f"--dump_path: cannot make the log folder {dump} ({e.strerror})") from None
        check_output(os.path.join(dump, "translate.log"))
        logging.basicConfig(filename=os.path.join(dump, "translate.log"), level=logging.INFO)
    model = load_model(args.model_path)
    if model.decoder is None:
        raise DataError(f"{args.model_path}: a pretrained (encoder only) model cannot translate")
    lang2id = model.params.get("lang2id", {})
    for lang in (args.src_lang, args.tgt_lang):
        if lang not in lang2id:
            raise DataError(f"language '{lang}' is not one of the model's: {', '.join(sorted(lang2id))}")
    device = torch.device(args.device)
    model.encoder.to(device)
    model.decoder.to(device)
    sentences = read_input(sys.stdin.buffer, model.dico, model.encoder.config.n_positions - 2)
    translations = translate(model, sentences, lang2id[args.src_lang], lang2id[args.tgt_lang], args, device)
    with atomic_write(args.output_path, "w") as f:
        for ids in translations:
            line = " ".join(model.dico[i] for i in ids)
            f.write((remove_bpe(line) if args.remove_bpe else line) + "\n")
    print(f"Translated {len(sentences)} sentences to {args.output_path}", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except DataError as e:
        sys.exit(f"error: {e}")
