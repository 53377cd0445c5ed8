#!/usr/bin/env python
"""Translate tokenized, BPE'd sentences (stdin, one per line) with a translation checkpoint.

    cat input.en.bpe | python translate.py --model_path mt_enfr.pth --src_lang en --tgt_lang fr \\
        --output_path output.fr.bpe [--beam_size 5 --length_penalty 1.0 --batch_size 32]

The original's command line; output lines are BPE'd like the input (add --remove_bpe true for plain
tokens) and keep the input's order. Sentences are translated in batches of --batch_size in input order, as
the original does: a batch's longest source sets the max_len of all its translations (1.5 x its length +
10), so a translation that runs to max_len depends on its batch, and only the original's batches give the
original's output.

Translations are written as they are made, to OUTPUT.partial: a rerun of a stopped command (a kill, a
crash, Ctrl-C) goes on after the last batch written, and OUTPUT appears when all are done. An OUTPUT that
is there and not a file (/dev/stdout, a named pipe) is written straight to, as the original does.
"""
import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import sys
import time

import torch

from xlm.data.bpe import remove_bpe
from xlm.data.datasets import batch_sentences
from xlm.data.dictionary import N_RESERVED, UNK_INDEX
from xlm.cli import OriginalFlagsFirst, run
from xlm.fileio import DataError, atomic_write, check_output, check_streams, decode_utf8, exit_on_signals, failed_write
from xlm.host_memory import keep_freed_memory
from xlm.model.checkpoint import load_model
from xlm.model.generate import generate_beam, generate_greedy
from xlm.model.linear import onednn_chosen, weights_packed
from xlm.progress import Progress
from xlm.train.options import bool_flag, check_folder_name, length_penalty

LOG = logging.getLogger("xlm.translate")  # to dump_path/exp_name/exp_id/translate.log with --exp_name; else nowhere
LOG.setLevel(logging.INFO)
LOG.propagate = False


class DescribedDefaults(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help: the module's docstring as written, and each flag's default."""


def parse_args(argv=None):
    own_flags = ("--beam_size", "--length_penalty", "--early_stopping", "--remove_bpe", "--device")
    p = OriginalFlagsFirst(description=__doc__, formatter_class=DescribedDefaults, own_flags=own_flags)
    p.add_argument("--dump_path", type=str, default="./dumped/", help="with --exp_name: where the log goes")
    p.add_argument("--exp_name", type=str, default="", help="log to DUMP_PATH/EXP_NAME/EXP_ID/translate.log")
    p.add_argument("--exp_id", type=str, default="", help="with --exp_name (empty: translate)")
    p.add_argument("--batch_size", type=int, default=32, help="sentences per batch")
    p.add_argument("--model_path", type=str, required=True, help="a translation checkpoint (encoder and decoder)")
    p.add_argument("--output_path", type=str, required=True, help="must not exist yet")
    p.add_argument("--src_lang", type=str, required=True, help="the language of the input (stdin: tokenized, BPE)")
    p.add_argument("--tgt_lang", type=str, required=True, help="the language to translate into")
    p.add_argument("--beam_size", type=int, default=1, help="1: greedy decoding (the original's only mode)")
    p.add_argument("--length_penalty", type=length_penalty, default=1.0, help="beam search: < 1 favours short outputs")
    p.add_argument("--early_stopping", type=bool_flag, default=False,
                   help="beam search: stop a sentence at --beam_size finished hypotheses")
    p.add_argument("--remove_bpe", type=bool_flag, default=False, help="write the output without BPE (xlm)")
    p.add_argument("--device", type=str, default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu, cuda or cuda:N (xlm)")
    args = p.parse_args(argv)
    if args.src_lang == args.tgt_lang:
        raise DataError("--src_lang and --tgt_lang must differ")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise DataError("translate.py runs as one process (it reads standard input): start it with python, "
                        "not torchrun")
    if not args.output_path:
        raise DataError("--output_path is empty: name the file to write the translations to")
    if os.path.isfile(args.output_path):
        raise DataError(f"--output_path {args.output_path} already exists")
    try:  # found now, not once everything is translated
        if not is_stream(args.output_path):
            check_output(args.output_path)
    except DataError as e:
        raise DataError(f"--output_path {e}") from None
    for flag in ("batch_size", "beam_size"):
        if getattr(args, flag) < 1:
            raise DataError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
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


UNKNOWN_WARNING = 0.02  # the share of unknown words in the input that is warned of


def read_input(stream, dico, max_tokens):
    """Token ids of every input line; an empty or too long line is an error naming it. A literal </s>,
    <pad>, <s> or <specialN> is dropped with a warning, as preprocess.py does (it would end the sentence
    or be read as padding); <unk> stays the unknown word."""
    sentences, dropped, n_words, n_unknown = [], [], 0, 0
    for line_no, raw in enumerate(stream, 1):
        words = decode_utf8(raw, "<stdin>", line_no).split()
        ids = [dico.index(w) for w in words]
        n_words, n_unknown = n_words + len(ids), n_unknown + ids.count(UNK_INDEX)
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
    if not sentences:  # an empty shard of a split corpus: an empty output, as the original writes
        print("warning: <stdin>: no input; the output is empty", file=sys.stderr)
    if dropped:
        print(f"warning: <stdin>: special tokens removed from {len(dropped)} lines (first at line {dropped[0]})",
              file=sys.stderr)
    if n_unknown > UNKNOWN_WARNING * n_words:  # BPE'd text of the model's languages has almost none
        print(f"warning: <stdin>: {n_unknown} of {n_words} words ({100 * n_unknown / n_words:.1f}%) are not in the "
              "model's vocabulary: is the input tokenized and BPE'd with the model's codes?", file=sys.stderr)
    return sentences


@torch.no_grad()
def translate_batch(model, sentences, src_id, tgt_id, args, device):
    """Translations (id lists without </s>) of one batch, in its order."""
    batch = batch_sentences([s.numpy() for s in sentences])
    max_len = int(1.5 * int(batch.lengths.max()) + 10)  # read on the host copy: the GPU's would wait for the encoder
    x, lengths = batch.x.to(device), batch.lengths.to(device)
    enc = model.encoder(x, lengths, langs=src_id)
    if args.beam_size == 1:
        y, y_len = generate_greedy(model.decoder, enc, lengths, tgt_id, max_len=max_len)
    else:
        y, y_len = generate_beam(model.decoder, enc, lengths, tgt_id, args.beam_size, args.length_penalty,
                                 args.early_stopping, max_len=max_len)
    y, y_len = y.tolist(), y_len.tolist()  # one host read per batch
    return [row[1:n - 1] for row, n in zip(y, y_len)]


def is_stream(path):
    """Whether path is there and neither a file nor a folder: /dev/stdout, a named pipe, /dev/null (the
    original writes to them, its check being for files only)."""
    return os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path)


class StreamOutput:
    """The output lines written straight to a stream (`is_stream`), which no rerun can go on from."""

    def __init__(self, path):
        self.path, self.lines, self.recorded_lines = path, 0, 0
        self.file = open(path, "wb")

    def write(self, lines):
        self.file.write("".join(line + "\n" for line in lines).encode("utf-8"))
        self.lines += len(lines)

    def record(self):
        self.file.flush()

    def finish(self):
        self.file.close()

    def abandon(self):
        with contextlib.suppress(OSError):
            self.file.close()

    def kept(self):
        return f"{self.lines} translated lines written to {self.path} (not a file: a rerun starts again)"


def count_lines(path, size):
    """The newlines in the first `size` bytes of a file."""
    n = 0
    with open(path, "rb") as f:
        while size > 0:
            chunk = f.read(min(size, 1 << 24))
            if not chunk:
                break
            n, size = n + chunk.count(b"\n"), size - len(chunk)
    return n


class PartialOutput:
    """The output lines written so far, in OUTPUT.partial, and in OUTPUT.partial.json what they translate
    (the input's SHA-256, the model file, the flags that change a translation) and how many complete lines
    that file holds, recorded every `record_every` seconds and at the end. A rerun of the same command goes
    on after those lines; since batches are --batch_size lines in input order, a batch's translations do
    not depend on the batches before it, and the resumed output is the uninterrupted one."""

    def __init__(self, output_path, identity, record_every=10.0):
        self.output_path, self.identity, self.record_every = output_path, identity, record_every
        self.path, self.record_path = output_path + ".partial", output_path + ".partial.json"
        self.lines, self.size, self.recorded_at = 0, 0, time.monotonic()
        if os.path.isdir(self.path):
            raise DataError(f"{self.path}: is a folder, where the translations are written as they are made")
        if os.path.exists(self.record_path):
            try:
                with open(self.record_path, encoding="utf-8") as f:
                    record = json.load(f)
                self.lines, self.size = record["lines"], record["bytes"]
                if not all(type(n) is int and n >= 0 for n in (self.lines, self.size)):
                    raise ValueError("its lines and bytes are not counts")
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise DataError(f"{self.record_path}: unreadable ({e}); remove it and {self.path} to start "
                                "again") from None
            saved = record.get("identity")
            if saved != identity:
                names = {"input_sha256": "input", "model": "--model_path file (path, size or time)"}
                differ = [names.get(k, f"--{k}") for k in identity if not isinstance(saved, dict)
                          or saved.get(k) != identity[k]]
                raise DataError(f"{self.path}: the partial output of another command (it had another "
                                f"{', '.join(differ)}); remove it and {self.record_path} to start again")
            if not os.path.isfile(self.path) or os.path.getsize(self.path) < self.size:
                raise DataError(f"{self.path}: shorter than {self.record_path} says (lost in a crash?); remove "
                                "both to start again")
            if count_lines(self.path, self.size) != self.lines:
                raise DataError(f"{self.path}: its first {self.size} bytes do not hold the {self.lines} lines "
                                f"{self.record_path} says; remove both to start again")
        self.recorded_lines = self.lines
        self.file = open(self.path, "r+b" if self.lines else "wb")
        self.file.truncate(self.size)  # lines written after the last record are written again
        self.file.seek(self.size)

    def write(self, lines):
        data = "".join(line + "\n" for line in lines).encode("utf-8")
        self.file.write(data)
        self.lines, self.size = self.lines + len(lines), self.size + len(data)
        if time.monotonic() - self.recorded_at >= self.record_every:
            self.record()

    def record(self):
        self.file.flush()
        os.fsync(self.file.fileno())  # the lines before the record that counts them
        with atomic_write(self.record_path, "w") as f:
            json.dump({"identity": self.identity, "lines": self.lines, "bytes": self.size}, f)
        self.recorded_at, self.recorded_lines = time.monotonic(), self.lines

    def finish(self):
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        if os.path.exists(self.record_path):  # first: a partial file without a record is started again
            os.remove(self.record_path)
        os.replace(self.path, self.output_path)

    def abandon(self):
        """Close the file where a write failed: what its buffer holds is lost (the next run writes it again)."""
        with contextlib.suppress(OSError):
            self.file.close()

    def kept(self):
        return f"{self.lines} translated lines kept in {self.path}: rerun the command to go on"


@weights_packed()  # in oneDNN's layout once for all batches, on the CPU
def translate_into(output, model, sentences, src_id, tgt_id, args, device):
    """The sentences after the output's lines translated into it, a batch at a time, with their progress
    (xlm/progress.py: a bar on a terminal, else a line a minute with the rate and the time left)."""
    # on the CPU, each batch's large tensors (beams x words scores) reuse the pages the last one freed
    freed_memory = keep_freed_memory() if device.type == "cpu" else None
    with Progress("translate", total=len(sentences), unit="sentences", initial=output.lines) as progress:
        for start in range(output.lines, len(sentences), args.batch_size):
            translations = translate_batch(model, sentences[start:start + args.batch_size], src_id, tgt_id, args,
                                           device)
            lines = [" ".join(model.dico[i] for i in ids) for ids in translations]
            output.write([remove_bpe(line) for line in lines] if args.remove_bpe else lines)
            if freed_memory:
                freed_memory.check()
            progress.update(len(lines))


def main(argv=None):
    exit_on_signals()  # SIGTERM, SIGINT, SIGHUP: SystemExit, so that the lines translated are recorded
    args = parse_args(argv)
    if args.exp_name:
        dump = os.path.join(args.dump_path, args.exp_name, args.exp_id or "translate")
        try:
            os.makedirs(dump, exist_ok=True)
        except OSError as e:
            raise DataError(f"--dump_path: cannot make the log folder {dump} ({e.strerror})") from None
        check_output(os.path.join(dump, "translate.log"))
        handler = logging.FileHandler(os.path.join(dump, "translate.log"), encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s - %(message)s", "%Y-%m-%d %H:%M:%S"))
        LOG.addHandler(handler)
        LOG.info("Arguments: %s", json.dumps(vars(args)))
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
    check_streams("stdin", hint=": give the sentences to translate on it (< FILE)")
    if sys.stdin.isatty():  # not a pipe or a file: the user may be waiting for the command
        print("Reading the sentences to translate from the terminal, one per line; Ctrl-D ends them",
              file=sys.stderr)
    text = sys.stdin.buffer.read()
    sentences = read_input(io.BytesIO(text), model.dico, model.encoder.config.n_positions - 2)
    LOG.info("Languages of the model: %s. Read %i sentences from stdin: %s to %s", ", ".join(lang2id), len(sentences),
             args.src_lang, args.tgt_lang)
    model_file = os.stat(args.model_path)
    identity = dict(input_sha256=hashlib.sha256(text).hexdigest(), model=[os.path.abspath(args.model_path),
                    model_file.st_size, model_file.st_mtime_ns],
                    **{k: getattr(args, k) for k in ("src_lang", "tgt_lang", "batch_size", "beam_size",
                                                     "length_penalty", "early_stopping", "remove_bpe")})
    output = StreamOutput(args.output_path) if is_stream(args.output_path) else PartialOutput(args.output_path,
                                                                                             identity)
    if output.lines:
        say(f"Going on after line {output.lines} of {output.path}, written by a stopped run of this command")
    try:
        translate_into(output, model, sentences, lang2id[args.src_lang], lang2id[args.tgt_lang], args, device)
        output.finish()
    except BaseException as e:  # a signal (exit_on_signals), Ctrl-C, an error: what is written is kept
        if isinstance(e, OSError) and failed_write(e, output.path):
            # the lines of the last record are kept (a rerun goes on after them); recording more would fail too
            output.abandon()
            raise DataError(f"{output.path}: cannot write it ({e.strerror}); {output.recorded_lines} translated "
                            "lines kept: rerun the command to go on") from None
        if not output.file.closed:  # else finish() got past it
            output.record()
            say(output.kept())
        raise
    say(f"Translated {len(sentences)} sentences to {args.output_path}")


def say(message):
    """On stderr, and in the log of --exp_name."""
    print(message, file=sys.stderr)
    LOG.info(message)


if __name__ == "__main__":
    run(main, "lower --batch_size or --beam_size; the lines translated are kept")
