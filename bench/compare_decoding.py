"""Greedy and beam decoding, xlm's against the original's, on many random models and batches: sizes,
vocabularies, tied or untied embeddings, GELU or ReLU, sources of 1 to 20 words (--source_len), batch sizes
1-32 (xlm leaves finished sentences out where the rows are a multiple of 4), beam 1-5, length penalties, early
stopping on and off, max_len from 2 to the evaluation's 1.5 x length + 10. The output layer's bias of </s> is
raised so that sentences end at varied lengths, as a trained model's do. Both sides decode the same encoder
output in float32; an output that differs is decoded again in float64 on both sides: if they then agree, the
float32 difference was a near tie of two scores rounded apart, not a difference of rules. Beyond the outputs,
it counts the decodings whose numbers are the original's bit for bit: the encoder output, every logit of
greedy decoding for the sentences not yet finished, every hypothesis score of beam search (the original
computes finished sentences from other inputs: a greedy one's hidden states are zeroed as padding, a done beam
search goes on from another row). Prints one JSON object; exit status 1 if any output differs in float64.

    python -m bench.compare_decoding [--original /work/orig-cpu] [--trials 300] [--threads 1] [--device cuda]
                                     [--dims 32,48,64] [--n_words 24,60,203,8000] [--source_len 20]
"""
import argparse
import json
import os
import random
import sys
import types

import numpy as np
import torch

from bench.compare_original import import_original
from bench.data_pipeline import cpu_model
from xlm.data.datasets import Batch, batch_sentences
from xlm.data.dictionary import SPECIAL_WORDS
from xlm.model.generate import generate_beam, generate_greedy
from xlm.model.transformer import TransformerConfig, TransformerModel


def original_model(orig, xlm_model, config, is_encoder):
    p = types.SimpleNamespace(
        n_langs=2, n_words=config.n_words, eos_index=1, pad_index=2, id2lang={0: "la", 1: "lb"},
        lang2id={"la": 0, "lb": 1}, emb_dim=config.emb_dim, n_heads=config.n_heads, n_layers=config.n_layers,
        dropout=0.0, attention_dropout=0.0, sinusoidal_embeddings=False, use_lang_emb=True,
        gelu_activation=config.gelu_activation, share_inout_emb=config.share_inout_emb, use_memory=False,
        asm=False, mem_enc_positions=[], mem_dec_positions=[])
    words = list(SPECIAL_WORDS) + [f"w{i}" for i in range(config.n_words - len(SPECIAL_WORDS))]
    dico = orig.data.dictionary.Dictionary(words, {w: i for i, w in enumerate(words)}, {w: 1 for w in words})
    model = orig.model.transformer.TransformerModel(p, dico, is_encoder, True)
    model.load_state_dict(xlm_model.state_dict())
    return model.eval()


def trial(orig, seed, device, dims, vocabularies, source_len=20):
    """A random encoder-decoder on both sides and a random batch of sources of 1 to source_len words on
    `device`; yields (what, decode_xlm, decode_orig)."""
    r = random.Random(seed)
    dim, heads = r.choice([(d, 2 if d < 48 else 4 if d <= 64 else 8) for d in dims])
    config = dict(n_words=r.choice(vocabularies), emb_dim=dim, n_layers=r.choice([1, 2, 3]), n_heads=heads,
                  gelu_activation=r.choice([True, False]), share_inout_emb=r.choice([True, False]), n_langs=2)
    torch.manual_seed(seed)
    encoder = TransformerModel(TransformerConfig(**config)).eval()
    decoder = TransformerModel(TransformerConfig(**config, is_decoder=True)).eval()
    with torch.no_grad():
        decoder.pred_layer.proj.bias[1] += r.uniform(-2, 2)
        for p in decoder.parameters():
            p.mul_(r.uniform(1.0, 1.6))
    encoder, decoder = encoder.to(device), decoder.to(device)
    o_encoder = original_model(orig, encoder, encoder.config, True).to(device)
    o_decoder = original_model(orig, decoder, decoder.config, False).to(device)
    words = range(len(SPECIAL_WORDS), config["n_words"])
    batch = batch_sentences([np.array([r.choice(words) for _ in range(r.randint(1, source_len))], dtype=np.int64)
                             for _ in range(r.choice([1, 2, 3, 4, 7, 8, 12, 16, 32]))])
    longest = int(batch.lengths.max())
    batch = Batch(batch.x.to(device), batch.lengths.to(device))
    max_len = r.choice([2, r.randint(3, 30), int(1.5 * longest + 10), int(1.3 * longest + 5)])
    settings = [("greedy", None, None, None)] + [("beam", beam, r.choice([0.0, 0.6, 1.0, 1.5]), r.choice([False, True]))
                                                 for beam in (1, 2, 3, 5)]

    def encoded():
        x = batch.x.t()
        original = o_encoder("fwd", x=x, lengths=batch.lengths, langs=torch.zeros_like(x), causal=False)
        return encoder(batch.x, batch.lengths, langs=0), original.transpose(0, 1)

    for kind, beam, penalty, early in settings:
        def ours(enc):
            if kind == "greedy":
                return generate_greedy(decoder, enc, batch.lengths, 1, max_len=max_len)
            return generate_beam(decoder, enc, batch.lengths, 1, beam_size=beam, length_penalty=penalty,
                                 early_stopping=early, max_len=max_len)

        def theirs(enc):
            if kind == "greedy":
                out, lengths = o_decoder.generate(enc, batch.lengths, 1, max_len=max_len)
            else:
                out, lengths = o_decoder.generate_beam(enc, batch.lengths, 1, beam_size=beam, length_penalty=penalty,
                                                       early_stopping=early, max_len=max_len)
            return out.t(), lengths

        what = {"seed": seed, "decoding": kind, "beam_size": beam, "length_penalty": penalty, "early_stopping": early,
                "max_len": max_len, "sentences": len(batch.lengths), **config}
        yield what, encoded, ours, theirs, (encoder, decoder, o_encoder, o_decoder)


def same(a, b):
    return torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


class Numbers:
    """Records, while on, what each side computes: xlm's and the original's greedy logits and beam
    hypothesis scores (sentence, length, sum of log-probabilities), through their own methods."""

    def __init__(self, orig):
        import xlm.model.generate as generate
        self.on, self.seen = False, {"xlm": [], "original": []}
        self.decoded = None  # the sentence of each of xlm's rows (greedy) or beam groups: it leaves finished ones out
        self._wrap(generate.BeamHypotheses, "add", "xlm", lambda self_, tokens, sums, length, offered: [
            ("hyp", self.sentence(i), length, sums[i, j].item()) for i, j in offered.nonzero().tolist()])
        self._wrap(orig.model.transformer.BeamHypotheses, "add", "original",
                   lambda self_, hyp, sums: [("hyp", self_.sentence, len(hyp), float(sums))])
        self._wrap(TransformerModel, "get_scores", "xlm", lambda self_, h, out=None: [], result=True)
        still_decoded = generate.still_decoded

        def tracked(*args):
            kept = still_decoded(*args)
            if kept is not None:
                self.decoded = kept if self.decoded is None else self.decoded[kept]
            return kept
        generate.still_decoded = tracked
        self._wrap(orig.model.transformer.PredLayer, "get_scores", "original", lambda self_, x: [], result=True)
        init = orig.model.transformer.BeamHypotheses.__init__
        count = self.count = [0]

        def numbered(self_, *args, **kwargs):  # the original makes one per sentence, in order
            init(self_, *args, **kwargs)
            self_.sentence, count[0] = count[0], count[0] + 1
        orig.model.transformer.BeamHypotheses.__init__ = numbered

    def _wrap(self, cls, name, side, entries, result=False):
        method, numbers = getattr(cls, name), self

        def recording(self_, *args, **kwargs):
            out = method(self_, *args, **kwargs)
            if numbers.on:
                numbers.seen[side] += entries(self_, *args, **kwargs)
                if result:
                    rows = (torch.arange(len(out), device=out.device) if side == "original" or numbers.decoded is None
                            else numbers.decoded)
                    numbers.seen[side].append(("logits", out.clone(), rows))
            return out
        setattr(cls, name, recording)

    def sentence(self, i):
        return i if self.decoded is None else int(self.decoded[i])

    def start(self):
        self.on, self.count[0], self.decoded = True, 0, None
        for seen in self.seen.values():
            seen.clear()

    def bit_equal(self, kind, lengths):
        """lengths: the output's, </s> included at both ends."""
        self.on = False
        mine, theirs = ({e for e in self.seen[side] if e[0] == "hyp"} for side in ("xlm", "original"))
        if kind == "beam":
            return mine == theirs
        mine, theirs = ([e[1:] for e in self.seen[side] if e[0] == "logits"] for side in ("xlm", "original"))
        # step i gives position i + 1; a sentence's </s> is at position length - 1
        return len(mine) == len(theirs) and all(torch.equal(a[i < lengths[rows] - 1], b[rows[i < lengths[rows] - 1]])
                                                for i, ((a, rows), (b, _)) in enumerate(zip(mine, theirs)))


@torch.no_grad()
def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--original", default="/work/orig-cpu", help="the original XLM, patched for the CPU")
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads of both sides (MKL's roundings of a few rows depend on it; more than the "
                             "cores with MKL_DYNAMIC=FALSE in the environment, which keeps MKL to the count)")
    parser.add_argument("--device", default="cpu",
                        help="cuda: both sides decode on the GPU (float32; TF32 off, torch's default)")
    parser.add_argument("--dims", default="32,48,64", help="the models' dimensions to draw from")
    parser.add_argument("--n_words", default="24,60,203,8000",
                        help="the vocabulary sizes to draw from (8,000: enough scores for topk_rows's block search)")
    parser.add_argument("--source_len", type=int, default=20, help="the longest source sentence drawn (words)")
    args = parser.parse_args()
    dims, vocabularies = (tuple(map(int, a.split(","))) for a in (args.dims, args.n_words))
    device = torch.device(args.device)
    orig = import_original(args.original)
    torch.set_num_threads(args.threads)
    counts = {"equal": 0, "near_tie": 0, "different": 0}
    numbers = Numbers(orig)
    bits = {"encoder_outputs": 0, "decodings": 0}
    cases, lengths, left_out = [], [], 0
    for seed in range(args.trials):
        for what, encoded, ours, theirs, models in trial(orig, seed, device, dims, vocabularies, args.source_len):
            x_enc, o_enc = encoded()
            bits["encoder_outputs"] += torch.equal(x_enc, o_enc)
            numbers.start()
            mine, original = ours(x_enc), theirs(o_enc)
            left_out += numbers.decoded is not None
            exact = numbers.bit_equal(what["decoding"], mine[1])
            bits["decodings"] += exact
            if not exact:
                print(f"numbers differ: {what}", file=sys.stderr, flush=True)
            lengths += mine[1].tolist()
            if same(mine, original):
                counts["equal"] += 1
                continue
            for m in models:
                m.double()
            x_enc, o_enc = encoded()
            verdict = "near_tie" if same(ours(x_enc), theirs(o_enc)) else "different"
            for m in models:
                m.float()
            counts[verdict] += 1
            cases.append({**what, "verdict": verdict})
            print(f"{verdict}: {what}", file=sys.stderr, flush=True)
    result = {"benchmark": "compare_decoding", "command": "python -m bench.compare_decoding " + " ".join(sys.argv[1:]),
              "original": args.original, "torch": torch.__version__, "threads": args.threads,
              "environment": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MKL_DYNAMIC")},
              "device_name":
              torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
              "decodings": sum(counts.values()), **counts, "not_equal": cases,
              "bit_for_bit": {"encoder_outputs": bits["encoder_outputs"], "decodings": bits["decodings"],
                              "what": "the encoder outputs; greedy: every logit of the unfinished sentences; "
                                      "beam: every hypothesis score"},
              "left_out_finished_sentences": left_out,
              "output_lengths": {"min": min(lengths), "median": float(np.median(lengths)), "max": max(lengths)}}
    print(json.dumps(result, indent=1))
    sys.exit(1 if counts["different"] else 0)


if __name__ == "__main__":
    main()
