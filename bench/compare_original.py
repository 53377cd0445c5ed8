"""Side by side with the original XLM on the CPU, on the same batches and the same weights: an MLM step
(bptt stream) and a TLM step as `Trainer.mlm_step` runs them, a back-translation step (greedy generation,
then the MT step on the reverse direction, as `bt_step`), and beam-5 decoding. Each side runs its own code:
the original's trainer methods and `generate_beam` on one side; on the other, xlm's Trainer of a run with
that objective alone, fed as train.py feeds it (`train_round` on its Plan made ahead in a background
thread, or inline with --no_prefetch), and xlm's `generate_beam`. Both read the same batches through their
iterators, with models built from one state dict. Timed
alternately, each side twice in a row with the second call timed (see `side_by_side`), for each thread
count: medians of the repeats, and the median of the paired ratios as the speedup. Prints one JSON object.

    python -m bench.compare_original [--original /work/orig-cpu] [--threads 1,2] [--repeats 5]
        [--trained MT.pth --trained_source valid.en-fr.en.pth --src_lang en --tgt_lang fr]

The original is imported from --original (a copy patched to run on current PyTorch, made by
`bash bench/patch_original.sh`) under the package name `orig_xlm`, with `.cuda()` made a no-op and
an empty `apex` module, as its run_orig.py does. Nothing of it is part of xlm.
"""
import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
import types
from dataclasses import dataclass

import numpy as np
import torch

from bench.data_pipeline import cpu_model
from bench.steps import LANGS, Rounds, build_trainer, eval_mode, write_data
from xlm.data.datasets import Batch, batch_sentences
from xlm.data.dictionary import SPECIAL_WORDS
from xlm.data.binarized import load_binarized
from xlm.model.checkpoint import load_model
from xlm.model.generate import generate_beam
from xlm.model.linear import weights_packed

OPTIMIZER = "adam_inverse_sqrt,beta1=0.9,beta2=0.98,lr=0.0001,warmup_updates=4000"


def import_original(path):
    """The original's `xlm` package as `orig_xlm`: loaded by path, so that it does not shadow this one."""
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    torch.cuda.set_device = lambda *args, **kwargs: None
    sys.modules.setdefault("apex", types.ModuleType("apex"))
    init = os.path.join(path, "xlm", "__init__.py")
    if not os.path.isfile(init):
        sys.exit(f"--original {path}: no xlm/__init__.py there (the original XLM, patched for the CPU)")
    spec = importlib.util.spec_from_file_location("orig_xlm", init, submodule_search_locations=[os.path.dirname(init)])
    package = importlib.util.module_from_spec(spec)
    sys.modules["orig_xlm"] = package
    spec.loader.exec_module(package)
    for name in ("trainer", "model.transformer", "data.dictionary"):
        importlib.import_module(f"orig_xlm.{name}")
    return package


def xlm_trainer(data, dump, args, exp_id, *flags, emb_dim=None, n_layers=None, n_heads=8, dropout=0.1,
                attention_dropout=0.1):
    return build_trainer(data, dump, exp_id, ["--emb_dim", emb_dim or args.emb_dim,
                                              "--n_layers", n_layers or args.n_layers,
                                              "--n_heads", n_heads, "--dropout", dropout,
                                              "--attention_dropout", attention_dropout, "--gelu_activation", "true",
                                              "--batch_size", args.batch_size, "--bptt", args.bptt, "--max_len", 100,
                                              "--optimizer", OPTIMIZER, "--clip_grad_norm", 5, *flags])


def original_params(xlm_params, n_words):
    """The original's params for the same flags: xlm's, plus what its train.py derives or defaults."""
    p = types.SimpleNamespace(**vars(xlm_params))
    p.dump_path = tempfile.mkdtemp(prefix="orig_", dir=xlm_params.dump_path)
    p.reload_checkpoint, p.langs, p.pc_steps, p.context_size = "", list(LANGS), [], 0
    p.n_words, p.eos_index, p.pad_index, p.mask_index = n_words, 1, 2, 5
    p.amp, p.fp16, p.multi_gpu, p.use_memory, p.asm = -1, False, False, False, False
    p.sinusoidal_embeddings, p.share_inout_emb, p.use_lang_emb = False, True, True
    p.word_mask, p.word_keep, p.word_rand = 0.8, 0.1, 0.1
    return p


def original_trainer(orig, xlm_trainer_, dico):
    """The original's SingleTrainer / EncDecTrainer, its models holding the weights of xlm's (one state
    dict: the parameter names are the same)."""
    p = original_params(xlm_trainer_.params, len(dico))
    odico = orig.data.dictionary.Dictionary(dico.id2word, dico.word2id, dico.counts)
    models = {}
    for name, model in xlm_trainer_.models.items():
        models[name] = orig.model.transformer.TransformerModel(p, odico, is_encoder=name != "decoder", with_output=True)
        models[name].load_state_dict(model.state_dict(), strict=True)
    cls = orig.trainer.SingleTrainer if "model" in models else orig.trainer.EncDecTrainer
    trainer = cls.__new__(cls)  # its __init__ takes models built by its build_model; set them, then run the rest
    trainer.MODEL_NAMES = list(models)
    for name, model in models.items():
        setattr(trainer, name, model)
    trainer.data, trainer.params = {"dico": odico, "para": {("la", "lb"): None}}, p
    orig.trainer.Trainer.__init__(trainer, trainer.data, p)
    return trainer


class Repeat:
    """The same batches over and over, in place of one of xlm's iterators (the Plan saves their states)."""

    def __init__(self, batches):
        self.batches, self.i = batches, 0

    def __iter__(self):
        return self

    def __next__(self):
        self.i += 1
        return self.batches[(self.i - 1) % len(self.batches)]

    def state_dict(self):
        return {"i": self.i}


@dataclass
class Sides:
    """Both sides of the MLM, TLM and BT steps: xlm's Trainers of a run with each objective alone, fed as
    train.py feeds them (`Rounds`), and the original's trainers holding the same weights; both read the
    same batches through their iterators, each in its layout ((bs, slen) / (slen, bs)). `steps`: name ->
    (the original's step, xlm's step)."""
    lm: object
    tlm: object
    mt: object
    o_lm: object
    o_mt: object
    generator: torch.Generator
    pairs: list
    bt_batches: list
    rounds: dict

    @classmethod
    def build(cls, orig, args, data, dico, dump):
        n_words = len(dico)
        lm = xlm_trainer(data, dump, args, "mlm", "--mlm_steps", "la")
        tlm = xlm_trainer(data, dump, args, "tlm", "--mlm_steps", "la-lb")
        tlm.models["model"].load_state_dict(lm.models["model"].state_dict())
        mt = xlm_trainer(data, dump, args, "bt", "--encoder_only", "false", "--bt_steps", "la-lb-la")
        o_lm = original_trainer(orig, lm, dico)
        o_mt = original_trainer(orig, mt, dico)
        # </s> made impossible: every generated sentence runs to max_len on both sides, the same work
        for dec in (mt.models["decoder"], o_mt.decoder):
            with torch.no_grad():
                dec.pred_layer.proj.bias[1] = -1e4
        g = torch.Generator().manual_seed(0)
        bs = args.batch_size
        streams = [torch.randint(len(SPECIAL_WORDS), n_words, (bs, args.bptt), generator=g) for _ in range(4)]
        pairs = [(sentences(g, bs, n_words, 20, 60), sentences(g, bs, n_words, 20, 60)) for _ in range(4)]
        bt_batches = [sentences(g, bs, n_words, 10, 40) for _ in range(4)]
        full = torch.full((bs,), args.bptt)
        lm.iterators[("pred", "la")] = Repeat([Batch(x, full) for x in streams])
        o_lm.iterators[("pred", "la", None)] = Repeat([(x.t().contiguous(), full) for x in streams])
        tlm.iterators[("pred", "la", "lb")] = Repeat(pairs)
        o_lm.iterators[("pred", "la", "lb")] = Repeat([tuple((b.x.t().contiguous(), b.lengths) for b in pair)
                                                       for pair in pairs])
        mt.iterators[("bt", "la")] = Repeat(bt_batches)
        o_mt.iterators[("bt", "la", None)] = Repeat([(b.x.t().contiguous(), b.lengths) for b in bt_batches])
        # after the iterators are replaced: the plans read them from the Trainers' dicts
        rounds = {name: Rounds(t, prefetch=not args.no_prefetch) for name, t in (("mlm", lm), ("tlm", tlm),
                                                                               ("bt", mt))}
        return cls(lm, tlm, mt, o_lm, o_mt, g, pairs, bt_batches, rounds)

    @property
    def steps(self):
        return {"mlm": (lambda: self.o_lm.mlm_step("la", None, 1.0), self.rounds["mlm"].step),
                "tlm": (lambda: self.o_lm.mlm_step("la", "lb", 1.0), self.rounds["tlm"].step),
                "bt": (lambda: self.o_mt.bt_step("la", "lb", "la", 1.0), self.rounds["bt"].step)}

    def close(self):
        for r in self.rounds.values():
            r.close()


def sentences(generator, bs, n_words, low, high):
    """A batch of bs sentences `</s> w... </s>` of low..high tokens, padded (xlm's layout, (bs, slen))."""
    lengths = torch.randint(low, high + 1, (bs,), generator=generator)
    return batch_sentences([torch.randint(len(SPECIAL_WORDS), n_words, (int(n) - 2,), generator=generator).numpy()
                            for n in lengths])


def seconds(fn, clock=time.perf_counter):
    start = clock()
    fn()
    return clock() - start


def side_by_side(name, run_orig, run_xlm, repeats, work, unit, clock=time.perf_counter):
    """The sides alternate, each running twice in a row with the second call timed: in one process they
    share malloc's heap, and a side's first call after the other's can fault in pages it would reuse
    running alone (in an MLM step of the original, up to 0.75 s of system time and 62,000 faults). Both
    timed calls of a repeat get the same batch; the speedup is the median of their ratios. work is the
    number of tokens (or sentences) of one call."""
    t_orig, t_xlm = [], []
    for _ in range(repeats):
        run_orig()
        t_orig.append(seconds(run_orig, clock))
        run_xlm()
        t_xlm.append(seconds(run_xlm, clock))
    o, x = statistics.median(t_orig), statistics.median(t_xlm)
    result = {f"original_{unit}_per_s": round(work / o, 1), f"xlm_{unit}_per_s": round(work / x, 1),
              "speedup": round(statistics.median(a / b for a, b in zip(t_orig, t_xlm)), 3),
              "original_seconds": [round(t, 4) for t in t_orig], "xlm_seconds": [round(t, 4) for t in t_xlm]}
    print(name, {k: v for k, v in result.items() if not k.endswith("seconds")}, file=sys.stderr, flush=True)
    return result


def trained(orig, args, tmp, clock):
    """A trained translation model (--trained) on real sentences: the first --trained_sentences of a
    binarized source file. Beam 5 in batches of --beam_sentences in file order, as translate.py reads
    them (xlm's weights packed for oneDNN once for all of them, as translate.py does), and the BT step
    (greedy generation into the target language, then the MT step back) on batches of --batch_size: the
    sentences finish at their own lengths, as in real use (the worst cases above never finish one)."""
    loaded = load_model(args.trained)
    p = loaded.params
    if (p["lang2id"][args.src_lang], p["lang2id"][args.tgt_lang]) != (0, 1):
        sys.exit(f"--trained: {args.src_lang} and {args.tgt_lang} must be languages 0 and 1 of the checkpoint")
    data = os.path.join(tmp, "trained_data")
    os.makedirs(data)
    dico = write_data(data, len(loaded.dico), 10)
    mt = xlm_trainer(data, tmp, args, "bt_trained", "--encoder_only", "false", "--bt_steps", "la-lb-la",
                     emb_dim=p["emb_dim"], n_layers=p["n_layers"], n_heads=p["n_heads"], dropout=p["dropout"],
                     attention_dropout=p["attention_dropout"])
    for name, model in (("encoder", loaded.encoder), ("decoder", loaded.decoder)):
        mt.models[name].load_state_dict(model.state_dict(), strict=True)
    o_mt = original_trainer(orig, mt, dico)
    corpus = load_binarized(args.trained_source)
    n = min(len(corpus), args.trained_sentences)
    sentences_ = [np.asarray(corpus[i]).astype(np.int64) for i in range(n)]

    def batches(size):
        return [batch_sentences(sentences_[start:start + size]) for start in range(0, n, size)]

    beam_batches, bt_batches = batches(args.beam_sentences), batches(args.batch_size)
    mt.iterators[("bt", "la")] = Repeat(bt_batches)
    o_mt.iterators[("bt", "la", None)] = Repeat([(b.x.t().contiguous(), b.lengths) for b in bt_batches])
    bt = Rounds(mt, prefetch=not args.no_prefetch)

    @torch.no_grad()
    def beam_orig():
        out = []
        with eval_mode(o_mt.encoder, o_mt.decoder):
            for b in beam_batches:
                x = b.x.t()
                enc = o_mt.encoder("fwd", x=x, lengths=b.lengths, langs=torch.zeros_like(x), causal=False)
                out.append(o_mt.decoder.generate_beam(enc.transpose(0, 1), b.lengths, 1, beam_size=5,
                                                      length_penalty=1.0, early_stopping=False,
                                                      max_len=int(1.5 * int(b.lengths.max()) + 10)))
        return out

    @torch.no_grad()
    def beam_xlm():
        out = []
        # the weights in oneDNN's layout once for all batches, as translate.py and evaluation decode
        with eval_mode(mt.models["encoder"], mt.models["decoder"]), weights_packed():
            for b in beam_batches:
                enc = mt.models["encoder"](b.x, b.lengths, langs=0)
                out.append(generate_beam(mt.models["decoder"], enc, b.lengths, 1, beam_size=5,
                                         max_len=int(1.5 * int(b.lengths.max()) + 10)))
        return out

    # before any BT step changes the weights
    same = all(torch.equal(ol, xl) and torch.equal(oo.t(), xo) for (oo, ol), (xo, xl) in zip(beam_orig(), beam_xlm()))
    described = {"checkpoint": os.path.abspath(args.trained), "source": os.path.abspath(args.trained_source),
                 "direction": f"{args.src_lang}-{args.tgt_lang}", "sentences": n,
                 "model": {k: p[k] for k in ("emb_dim", "n_layers", "n_heads", "dropout", "attention_dropout")}}
    result = {"beam5_trained": side_by_side("trained model, beam 5", beam_orig, beam_xlm, max(1, args.repeats // 2), n,
                                            "sentences", clock),
              "bt_step_trained": side_by_side("trained model, BT", lambda: o_mt.bt_step("la", "lb", "la", 1.0), bt.step,
                                              args.repeats,
                                              sum(int(b.lengths.sum()) for b in bt_batches) / len(bt_batches),
                                              "tokens", clock)}
    result["beam5_trained"].update(described, same_output=same, batch=args.beam_sentences)
    result["bt_step_trained"].update(described, batch=args.batch_size)
    bt.close()
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--original", default="/work/orig-cpu", help="the original XLM, patched for the CPU")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--emb_dim", type=int, default=256)
    parser.add_argument("--n_layers", type=int, default=4)
    parser.add_argument("--n_words", type=int, default=8000)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--bptt", type=int, default=128)
    parser.add_argument("--beam_sentences", type=int, default=32)
    parser.add_argument("--only", default="mlm,tlm,bt,beam5")
    parser.add_argument("--no_prefetch", action="store_true",
                        help="xlm makes its batches and masks in the main thread, as the original, instead of "
                             "train.py's background thread")
    parser.add_argument("--cpu_time", action="store_true",
                        help="time each call by the process's CPU time (every thread's, xlm's batch-making "
                             "thread included) instead of the wall clock: steadier when other jobs share the "
                             "cores; meant for --threads 1")
    parser.add_argument("--trained", help="a trained translation checkpoint: also time beam 5 on real sentences")
    parser.add_argument("--trained_source", help="with --trained: a binarized file of source sentences")
    parser.add_argument("--src_lang")
    parser.add_argument("--tgt_lang")
    parser.add_argument("--trained_sentences", type=int, default=256)
    args = parser.parse_args()
    if args.trained and not (args.trained_source and args.src_lang and args.tgt_lang):
        parser.error("--trained needs --trained_source, --src_lang and --tgt_lang")
    clock = time.process_time if args.cpu_time else time.perf_counter
    orig = import_original(os.path.abspath(args.original))
    only = args.only.split(",")
    torch.manual_seed(0)
    np.random.seed(0)  # the original's masking draws from numpy's global state
    tmp = tempfile.TemporaryDirectory()
    data = os.path.join(tmp.name, "data")
    os.makedirs(data)
    dico = write_data(data, args.n_words, 400)
    n_words = len(dico)
    sides = Sides.build(orig, args, data, dico, tmp.name)
    mt, o_mt, g = sides.mt, sides.o_mt, sides.generator
    bs, pairs, bt_batches = args.batch_size, sides.pairs, sides.bt_batches

    result = {"benchmark": "compare_original", "command": "python -m bench.compare_original " + " ".join(sys.argv[1:]),
              "original": os.path.abspath(args.original), "device_name": cpu_model(), "torch": torch.__version__,
              "model": {"emb_dim": args.emb_dim, "n_layers": args.n_layers, "n_heads": 8, "n_words": n_words,
                        "dropout": 0.1, "attention_dropout": 0.1, "gelu_activation": True},
              "batches": {"mlm": f"{bs} x {args.bptt} stream", "tlm": f"{bs} pairs of 20-60 + 20-60 tokens",
                          "bt": f"{bs} sentences of 10-40 tokens, greedy to 1.3 x max + 5",
                          "beam5": f"{args.beam_sentences} sentences of 10-40 tokens, max_len 1.5 x len + 10"},
              "optimizer": OPTIMIZER, "clip_grad_norm": 5,
              "clock": "process CPU time" if args.cpu_time else "wall",
              "xlm_batches": "made inline" if args.no_prefetch else "made ahead in a background thread (train.py)",
              "timing": "each side twice in a row, the second call timed; speedup: median of the paired ratios",
              "repeats": args.repeats, "threads": {}}
    tlm_tokens = sum(int(a.lengths.sum() + b.lengths.sum()) for a, b in pairs) / len(pairs)
    bt_tokens = sum(int(b.lengths.sum()) for b in bt_batches) / len(bt_batches)
    beam_src = sentences(g, args.beam_sentences, n_words, 10, 40)
    max_len = int(1.5 * int(beam_src.lengths.max()) + 10)

    def beam_orig():
        with torch.no_grad(), eval_mode(o_mt.encoder, o_mt.decoder):
            langs = torch.zeros_like(beam_src.x.t())
            enc = o_mt.encoder("fwd", x=beam_src.x.t(), lengths=beam_src.lengths, langs=langs, causal=False)
            return o_mt.decoder.generate_beam(enc.transpose(0, 1), beam_src.lengths, 1, beam_size=5,
                                              length_penalty=1.0, early_stopping=False, max_len=max_len)

    def beam_xlm():
        with torch.no_grad(), eval_mode(mt.models["encoder"], mt.models["decoder"]):
            enc = mt.models["encoder"](beam_src.x, beam_src.lengths, langs=0)
            return generate_beam(mt.models["decoder"], enc, beam_src.lengths, 1, beam_size=5, max_len=max_len)

    for threads in map(int, args.threads.split(",")):
        torch.set_num_threads(threads)
        r = result["threads"][str(threads)] = {}
        for name, tokens in (("mlm", bs * args.bptt), ("tlm", tlm_tokens), ("bt", bt_tokens)):
            if name in only:
                r[f"{name}_step"] = side_by_side(f"{threads} threads, {name.upper()}", *sides.steps[name],
                                                 args.repeats, tokens, "tokens", clock)
        if "beam5" in only:
            (o_out, o_len), (x_out, x_len) = beam_orig(), beam_xlm()
            r["beam5"] = side_by_side(f"{threads} threads, beam 5", beam_orig, beam_xlm, max(1, args.repeats // 2),
                                      args.beam_sentences, "sentences", clock)
            r["beam5"]["same_output"] = bool(torch.equal(o_len, x_len) and torch.equal(o_out.t(), x_out))
        if args.trained:
            r.update(trained(orig, args, os.path.join(tmp.name, f"trained{threads}"), clock))
    result["goals"] = {"mlm_step": 1.5, "bt_step": 2.0, "beam5": 3.0}
    sides.close()
    print(json.dumps(result, indent=1))
    tmp.cleanup()


if __name__ == "__main__":
    main()
