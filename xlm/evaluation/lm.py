"""Perplexity and accuracy of CLM / MLM / TLM on the valid and test sets, under the original's metric
names: `valid_en_mlm_ppl`, `valid_en_fr_mlm_acc` (TLM: underscore), `valid_en-fr_clm_ppl` (CLM pair:
hyphen), and `valid_mlm_ppl` / `valid_clm_ppl` averaged over the monolingual languages."""
import math
import time
from contextlib import nullcontext

import numpy as np
import torch

from ..data.datasets import BatchingOptions, ParallelDataset, StreamDataset
from ..objectives.lm import clm_targets, concat_pair, lm_scores, mask_for_eval


# the 15 XNLI languages keep larger evaluation sets in runs of more than 30 languages
XNLI_LANGS = {"ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh"}


def eval_subset(params, split, lang):
    """(subsample, n_sentences) of the original's evaluation of runs with many languages: streams keep
    their first 1/subsample bptt windows, sentence sets their first n_sentences (None: all)."""
    if len(params.langs) > 30:
        small = split == "test" or lang not in XNLI_LANGS
        return (10, 600) if small else (5, 1500)
    if len(params.langs) > 5:
        return (10, 300) if split == "test" else (5, 1500)
    return 1, None


def _stream_windows(corpus, bptt, n_words, group, subsample=1):
    """The original evaluates a stream one bptt window at a time (batch size 1); rows of a batch are
    independent, so windows are stacked `group` at a time with the same results."""
    dataset = StreamDataset(corpus, 1, bptt, n_words=n_words)
    keys = dataset.batches(None)[:max(len(dataset) // subsample, 1)]
    for start in range(0, len(keys), group):
        batches = [dataset.collate(k) for k in keys[start:start + group]]
        yield torch.cat([b.x for b in batches]), torch.cat([b.lengths for b in batches])


def _mask_windows(x, lengths, word_pred, rng):
    """mask_for_eval on stacked stream windows one window at a time, as the original masks each
    window as a batch of its own: the same rng draws, so the same masked tokens."""
    masked = [mask_for_eval(x[i:i + 1], lengths[i:i + 1], word_pred, rng) for i in range(len(x))]
    return tuple(torch.cat(parts) for parts in zip(*masked))


def _pair_batches(c1, c2, batch_size, n_words, lang_ids, n_sentences=None):
    dataset = ParallelDataset(c1, c2, BatchingOptions(batch_size=batch_size, group_by_size=True), n_words=n_words,
                              n_sentences=n_sentences)
    for key in dataset.batches(None):
        b1, b2 = dataset.collate(key)
        yield concat_pair(b1, lang_ids[0], b2, lang_ids[1])


def _evaluate(model, batches, objective, params, device, autocast, mask=mask_for_eval):
    """ppl and acc over batches of (x, lengths, positions, langs); MLM masks with `mask`."""
    xe, n, correct = 0.0, 0, 0
    rng = np.random.RandomState(0)  # the same masks at every evaluation
    for x, lengths, positions, langs in batches:
        if objective == "clm":
            pred_mask, y = clm_targets(x, lengths, params.context_size)
        else:
            x, pred_mask, y = mask(x, lengths, params.word_pred, rng)
        if len(y) == 0:
            continue
        move = (lambda t: None if t is None else t.to(device, non_blocking=True))
        with autocast:
            s, k, c = lm_scores(model, move(x), move(lengths), move(langs), move(positions), move(pred_mask),
                                move(y), causal=objective == "clm")
        xe, n, correct = xe + s, n + k, correct + c
    return math.exp(xe / max(n, 1)), 100.0 * correct / max(n, 1)


@torch.no_grad()
def evaluate_lm(models, data, params, device, autocast=None, log=None):
    """Scores for every clm/mlm step on valid and test, in the original's order and names, of
    models["clm"] and models["mlm"]; `log`, if given, is called with a progress message after each
    evaluated set."""
    autocast = autocast or nullcontext()
    was_training = {m: m.training for m in models.values()}
    for m in was_training:
        m.eval()
    scores = {}
    group = max(params.batch_size, 1)
    lang_id = params.lang2id
    for split in ("valid", "test"):
        for objective, steps in (("clm", params.clm_steps), ("mlm", params.mlm_steps)):
            mono = []
            for l1, l2 in steps:
                if l2 is None:
                    corpus = data.mono[l1][split]
                    lang = lang_id[l1] if params.n_langs > 1 else None
                    subsample = eval_subset(params, split, l1)[0]
                    batches = ((x, lengths, None, None if lang is None else torch.full_like(x, lang))
                               for x, lengths in _stream_windows(corpus, params.bptt, data.n_words, group, subsample))
                    name = f"{split}_{l1}_{objective}"
                    mono.append(name)
                else:
                    a, b = sorted((l1, l2))
                    c1, c2 = data.para[(a, b)][split]
                    if (l1, l2) != (a, b):
                        c1, c2 = c2, c1
                    batches = ((x, lengths, positions, langs) for x, lengths, positions, langs in
                               _pair_batches(c1, c2, params.batch_size, data.n_words, (lang_id[l1], lang_id[l2]),
                                             eval_subset(params, split, l1)[1]))
                    name = f"{split}_{l1}-{l2}_clm" if objective == "clm" else f"{split}_{l1}_{l2}_mlm"
                start = time.time()
                mask = _mask_windows if l2 is None else mask_for_eval
                ppl, acc = _evaluate(models[objective], batches, objective, params, device, autocast, mask)
                scores[f"{name}_ppl"], scores[f"{name}_acc"] = ppl, acc
                if log:
                    log(f"Evaluated {name}: ppl {ppl:.2f}, acc {acc:.2f}% ({time.time() - start:.1f}s)")
            if mono:
                scores[f"{split}_{objective}_ppl"] = float(np.mean([scores[f"{m}_ppl"] for m in mono]))
                scores[f"{split}_{objective}_acc"] = float(np.mean([scores[f"{m}_acc"] for m in mono]))
    for m, training in was_training.items():
        m.train(training)
    return scores


def metric_names(params):
    """Every score a run reports (evaluate_lm, evaluate_mt), to check --validation_metrics and
    --stopping_criterion before training starts."""
    from .mt import mt_directions

    names = []
    for split in ("valid", "test"):
        for objective, steps in (("clm", params.clm_steps), ("mlm", params.mlm_steps)):
            for l1, l2 in steps:
                if l2 is None:
                    base = f"{split}_{l1}_{objective}"
                else:
                    base = f"{split}_{l1}-{l2}_clm" if objective == "clm" else f"{split}_{l1}_{l2}_mlm"
                names += [f"{base}_ppl", f"{base}_acc"]
            if any(l2 is None for _, l2 in steps):
                names += [f"{split}_{objective}_ppl", f"{split}_{objective}_acc"]
        for src, tgt in mt_directions(params):
            names += [f"{split}_{src}-{tgt}_mt_ppl", f"{split}_{src}-{tgt}_mt_acc"]
            names += [f"{split}_{src}-{tgt}_mt_bleu"] if params.eval_bleu else []
    return names
