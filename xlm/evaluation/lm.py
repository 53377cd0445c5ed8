"""Perplexity and accuracy of CLM / MLM / TLM on the valid and test sets, under the original's metric
names: `valid_en_mlm_ppl`, `valid_en_fr_mlm_acc` (TLM: underscore), `valid_en-fr_clm_ppl` (CLM pair:
hyphen), and `valid_mlm_ppl` / `valid_clm_ppl` averaged over the monolingual languages."""
import functools
import itertools
import math
import time
from contextlib import nullcontext

import numpy as np
import torch

from ..data.datasets import BatchingOptions, ParallelDataset, StreamDataset
from ..model.linear import scoring_roundings
from ..objectives.lm import clm_targets, concat_pair, lm_scores, mask_for_eval
from ..train.distributed import DistInfo, all_reduce_sum, own_share, to_device
from .memory import MemoryUsage, memory_metric_names


# the 15 XNLI languages keep larger evaluation sets in runs of more than 30 languages
XNLI_LANGS = {"ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh"}


def perplexity(xe, n):
    """exp of the mean cross-entropy of n predictions; inf where that overflows (a diverged model), as the
    original's np.exp gives it."""
    try:
        return math.exp(xe / n)
    except OverflowError:
        return math.inf


def eval_subset(params, split, lang):
    """(subsample, n_sentences) of the original's evaluation of runs with many languages: streams keep
    their first 1/subsample bptt windows, sentence sets their first n_sentences (None: all)."""
    if len(params.langs) > 30:
        small = split == "test" or lang not in XNLI_LANGS
        return (10, 600) if small else (5, 1500)
    if len(params.langs) > 5:
        return (10, 300) if split == "test" else (5, 1500)
    return 1, None


def stream_windows(corpus, bptt, n_words, lang, subsample=1):
    """The original evaluates a stream one bptt window at a time (batch size 1), the first 1/subsample of
    them: none where the stream has fewer windows than subsample."""
    dataset = StreamDataset(corpus, 1, bptt, n_words=n_words)
    for key in dataset.batches(None)[:dataset.n_batches // subsample]:
        b = dataset.collate(key)
        yield b.x, b.lengths, None, None if lang is None else torch.full_like(b.x, lang)


def pair_batches(c1, c2, batch_size, n_words, lang_ids, n_sentences=None):
    dataset = ParallelDataset(c1, c2, BatchingOptions(batch_size=batch_size, group_by_size=True), n_words=n_words,
                              n_sentences=n_sentences)
    for key in dataset.batches(None):
        b1, b2 = dataset.collate(key)
        yield concat_pair(b1, lang_ids[0], b2, lang_ids[1])


def eval_targets(batches, objective, params):
    """(x, lengths, positions, langs, pred_mask, y) of each batch: CLM's next tokens, or MLM's masks
    drawn from a fresh RandomState(0) batch after batch, as the original: the same masks at every
    evaluation, and on any number of ranks as long as every rank draws those of every batch."""
    rng = np.random.RandomState(0)
    for x, lengths, positions, langs in batches:
        if objective == "clm":  # every next token: --context_size spares the first ones in training alone
            pred_mask, y = clm_targets(x, lengths)
        else:
            x, pred_mask, y = mask_for_eval(x, lengths, params.word_pred, rng)
        yield x, lengths, positions, langs, pred_mask, y


def _stack(batches, group):
    """Batches stacked `group` at a time; rows are independent, so stacked stream windows score as the
    original's one-window batches."""
    batches = iter(batches)
    while chunk := list(itertools.islice(batches, group)):
        yield tuple(None if parts[0] is None else torch.cat(parts) for parts in zip(*chunk))


def score_batches(model, batches, objective, device, autocast, usage=None):
    """(sum of cross-entropy, predictions, correct predictions) over batches of eval_targets; the reads
    of the model's memories counted in `usage` (a MemoryUsage), if given, in `scoring_roundings`."""
    xe, n, correct = 0.0, 0, 0
    move = functools.partial(to_device, device=device)
    for x, lengths, positions, langs, pred_mask, y in batches:
        if len(y) == 0:
            continue
        x, lengths = move(x), move(lengths)
        with autocast, usage.reading(x, lengths) if usage else nullcontext(), scoring_roundings(device):
            s, k, c = lm_scores(model, x, lengths, move(langs), move(positions), move(pred_mask), move(y),
                                causal=objective == "clm", every_position=bool(usage))
        xe, n, correct = xe + s, n + k, correct + c
    return xe, n, correct


@torch.no_grad()
def evaluate_lm(models, data, params, info=DistInfo(), autocast=None, log=None, check=None, splits=("valid", "test")):
    """Scores for every clm/mlm step on `splits`, in the original's order and names, of models["clm"] and
    models["mlm"] (their means over the languages: `stream_means`); `log`, if given, is called with a
    progress message after each evaluated set, `check` on every rank before each batch (own_share). Each
    rank of `info` evaluates batches (stream windows) i ≡ rank (mod world size) and the sums are added up,
    so every rank returns the scores of the whole sets."""
    autocast = autocast or nullcontext()
    was_training = {m: m.training for m in models.values()}
    for m in was_training:
        m.eval()
    scores = {}
    lang_id = params.lang2id
    for split in splits:
        for objective, steps in (("clm", params.clm_steps), ("mlm", params.mlm_steps)):
            for l1, l2 in steps:
                name = set_name(split, objective, l1, l2)
                if l2 is None:
                    lang = lang_id[l1] if params.n_langs > 1 else None
                    batches = stream_windows(data.mono[l1][split], params.bptt, data.n_words, lang,
                                             eval_subset(params, split, l1)[0])
                else:
                    a, b = sorted((l1, l2))
                    c1, c2 = data.para[(a, b)][split]
                    if (l1, l2) != (a, b):
                        c1, c2 = c2, c1
                    batches = pair_batches(c1, c2, params.batch_size, data.n_words, (lang_id[l1], lang_id[l2]),
                                           eval_subset(params, split, l1)[1])
                start = time.time()
                # a rank's stream windows are stacked batch_size at a time: a check before each stack
                stack = max(params.batch_size, 1) if l2 is None else 1
                own = own_share(eval_targets(batches, objective, params), info, check, every=stack)
                if l2 is None:
                    own = _stack(own, stack)
                usage = MemoryUsage({model_name(params, objective): models[objective]}, info.device) \
                    if split == "valid" else None
                xe, n, correct = all_reduce_sum(list(score_batches(models[objective], own, objective, info.device,
                                                              autocast, usage)), info)
                # nothing to predict (a stream shorter than its subsample): the original's 1e9 and 0
                ppl, acc = (perplexity(xe, n), 100.0 * correct / n) if n else (1e9, 0.0)
                scores[f"{name}_ppl"], scores[f"{name}_acc"] = ppl, acc
                if usage:
                    scores.update(usage.scores(memory_prefix(split, objective, l1, l2), info))
                if log:
                    log(f"Evaluated {name}: ppl {ppl:.2f}, acc {acc:.2f}% ({time.time() - start:.1f}s)"
                        + ("" if n else ": no token to predict (runs of more than 5 languages evaluate the first "
                           "1/5 of a valid stream's bptt windows, 1/10 of a test stream's, none of a shorter one)"))
    for m, training in was_training.items():
        m.train(training)
    return scores


def stream_means(scores, params, split):
    """The original's `valid_clm_ppl`, `valid_mlm_acc`, ...: the means of a split's monolingual scores,
    which it reports after all of the split's others (MT's included)."""
    means = {}
    for objective, steps in (("clm", params.clm_steps), ("mlm", params.mlm_steps)):
        mono = [set_name(split, objective, l1, None) for l1, l2 in steps if l2 is None]
        for metric in ("ppl", "acc") if mono else ():
            means[f"{split}_{objective}_{metric}"] = float(np.mean([scores[f"{m}_{metric}"] for m in mono]))
    return means


def model_name(params, objective):
    """The model an objective (CLM, MLM, PC) trains, as the trainer names it: in a translation run, as the
    original, CLM trains the decoder (without source), MLM and PC the encoder."""
    return "model" if params.encoder_only else "decoder" if objective == "clm" else "encoder"


def set_name(split, objective, l1, l2):
    """The original's name of an evaluated set, before `_ppl` / `_acc`: `valid_en_mlm`, `valid_en-fr_clm` (CLM
    pair), `valid_en_fr_mlm` (TLM)."""
    return f"{memory_prefix(split, objective, l1, l2)}_{objective}"


def memory_prefix(split, objective, l1, l2):
    """The original's name of a set in its memory statistics: `valid_en`, `valid_en-fr` (CLM pair),
    `valid_en_fr` (TLM)."""
    return f"{split}_{l1}" if l2 is None else f"{split}_{l1}-{l2}" if objective == "clm" else f"{split}_{l1}_{l2}"


def metric_names(params):
    """Every score a run reports (evaluate_lm, evaluate_mt, stream_means), to check --validation_metrics and
    --stopping_criterion before training starts."""
    from .mt import mt_directions

    names = []
    for split in ("valid", "test"):
        for objective, steps in (("clm", params.clm_steps), ("mlm", params.mlm_steps)):
            for l1, l2 in steps:
                base = set_name(split, objective, l1, l2)
                names += [f"{base}_ppl", f"{base}_acc"]
                if split == "valid":
                    names += memory_metric_names(params, memory_prefix(split, objective, l1, l2),
                                                 [model_name(params, objective)])
        for src, tgt in mt_directions(params):
            names += [f"{split}_{src}-{tgt}_mt_ppl", f"{split}_{src}-{tgt}_mt_acc"]
            if split == "valid":
                names += memory_metric_names(params, f"{split}_{src}-{tgt}", ["encoder", "decoder"])
            names += [f"{split}_{src}-{tgt}_mt_bleu"] if params.eval_bleu else []
        for objective, steps in (("clm", params.clm_steps), ("mlm", params.mlm_steps)):
            if any(l2 is None for _, l2 in steps):
                names += [f"{split}_{objective}_ppl", f"{split}_{objective}_acc"]
    return names
