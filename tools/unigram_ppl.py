#!/usr/bin/env python
"""An MLM checkpoint's validation perplexity beside the unigram perplexity of the same masked tokens.

    python tools/unigram_ppl.py dumped/sample_mlm_tlm/sample/best-valid_mlm_ppl.pth [--split valid]

The unigram model is the best predictor that ignores the context but knows the language: a masked
token of language L gets its frequency in L's training file (the stream the run trains L's MLM on;
for a TLM pair, that side's file), add-one smoothed over the vocabulary. Both are scored on exactly
the tokens the run's evaluation masks (the same bptt windows and sentence pairs, the same
RandomState(0) masks), so a model that has learned nothing from the context scores the unigram
perplexity, and the ratio says how much the context is used. `mlm_ppl` is the mean over the
monolingual sets, as the run's `valid_mlm_ppl`.
"""
import argparse
import math
import os
import sys
from contextlib import nullcontext
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from xlm.data.binarized import load_binarized  # noqa: E402
from xlm.data.dictionary import UNK_INDEX  # noqa: E402
from xlm.evaluation.lm import eval_subset, eval_targets, pair_batches, score_batches, stream_windows  # noqa: E402
from xlm.fileio import DataError, check_streams  # noqa: E402
from xlm.model.checkpoint import check_same_vocabulary, load_model  # noqa: E402


def require_mlm_steps(path, params, unknown_ok=False):
    """The MLM/TLM steps of the run that wrote the checkpoint `path` (from its params); a DataError naming
    the file where it trained none (an MT or CLM run), whose encoder's output layer never learned to
    predict masked words. unknown_ok: an encoder-only model whose params do not say (one converted from
    transformers) passes, as None."""
    if unknown_ok and "mlm_steps" not in params and params.get("encoder_only", True):
        return None
    if not params.get("mlm_steps"):
        raise DataError(f"{path}: the run has no MLM/TLM steps (--mlm_steps)")
    return params["mlm_steps"]


def check_data_vocabulary(corpus, loaded, model_path):
    """Refuse a corpus binarized with another vocabulary than the model's, as train.py refuses it (after the
    run's --max_vocab / --min_count): its ids would be scored as other words, with no error from the sizes."""
    corpus.dico.max_vocab(loaded.params.get("max_vocab", -1))
    corpus.dico.min_count(loaded.params.get("min_count", 0))
    try:
        check_same_vocabulary(loaded.dico, corpus.dico, model_path)
    except DataError as e:
        raise DataError(f"{corpus.path}: {e}") from None


def unigram_log_probs(corpus, n_words):
    """log p(w) over the vocabulary: the corpus' token frequencies (EOS included), add-one smoothed."""
    ids = np.asarray(corpus.sentences).astype(np.int64)
    counts = np.bincount(np.where(ids >= n_words, UNK_INDEX, ids), minlength=n_words).astype(np.float64) + 1
    return torch.from_numpy(np.log(counts / counts.sum()))


def unigram_xe(batches, tables):
    """(sum of cross-entropy, number of predictions) on eval_targets batches of the unigram model of each
    target's language; tables: language id (None for a model without language ids) -> log p."""
    xe, n = 0.0, 0
    for _, _, _, langs, pred_mask, y in batches:
        target_langs = langs[pred_mask] if langs is not None else torch.zeros_like(y)
        for lang, table in tables.items():
            chosen = y if lang is None else y[target_langs == lang]
            xe -= table[chosen].sum().item()
        n += len(y)
    return xe, n


def compare(model_path, data_path=None, split="valid"):
    """[(set name, model ppl, unigram ppl)] for every MLM/TLM step of the run, then the monolingual mean."""
    loaded = load_model(model_path)
    require_mlm_steps(model_path, loaded.params)
    p = SimpleNamespace(**loaded.params)
    data_path = data_path or p.data_path
    n_words = loaded.encoder.config.n_words

    def corpus(name):
        path = os.path.join(data_path, name + ".pth")
        if not os.path.isfile(path):
            raise DataError(f"{path}: missing (the run's data; give --data_path if it moved)")
        data = load_binarized(path)
        check_data_vocabulary(data, loaded, model_path)
        return data

    rows = []
    for l1, l2 in p.mlm_steps:
        if l2 is None:
            lang = p.lang2id[l1] if p.n_langs > 1 else None
            batches = list(stream_windows(corpus(f"{split}.{l1}"), p.bptt, n_words, lang,
                                          eval_subset(p, split, l1)[0]))
            tables = {lang: unigram_log_probs(corpus(f"train.{l1}"), n_words)}
            name = f"{split}_{l1}_mlm"
        else:
            a, b = sorted((l1, l2))
            batches = list(pair_batches(corpus(f"{split}.{a}-{b}.{l1}"), corpus(f"{split}.{a}-{b}.{l2}"),
                                        p.batch_size, n_words, (p.lang2id[l1], p.lang2id[l2]),
                                        eval_subset(p, split, l1)[1]))
            tables = {p.lang2id[lg]: unigram_log_probs(corpus(f"train.{a}-{b}.{lg}"), n_words) for lg in (l1, l2)}
            name = f"{split}_{l1}_{l2}_mlm"
        with torch.no_grad():
            xe, n, _ = score_batches(loaded.encoder, eval_targets(batches, "mlm", p), "mlm", "cpu", nullcontext())
        uxe, un = unigram_xe(eval_targets(batches, "mlm", p), tables)
        rows.append((name, math.exp(xe / max(n, 1)), math.exp(uxe / max(un, 1)), l2 is None))
    mono = [r for r in rows if r[3]]
    if mono:
        rows.append((f"{split}_mlm", float(np.mean([r[1] for r in mono])), float(np.mean([r[2] for r in mono])), False))
    return [r[:3] for r in rows]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a pretraining checkpoint with MLM/TLM steps")
    parser.add_argument("--data_path", help="the run's --data_path, if the data moved")
    parser.add_argument("--split", default="valid", choices=("valid", "test"))
    args = parser.parse_args(argv)
    check_streams("stdout")
    rows = compare(args.checkpoint, args.data_path, args.split)
    print(f"{'masked tokens of':<22} {'model ppl':>10} {'unigram ppl':>12} {'ratio':>6}")
    for name, ppl, unigram in rows:
        print(f"{name + '_ppl':<22} {ppl:>10.1f} {unigram:>12.1f} {ppl / unigram:>6.2f}")


if __name__ == "__main__":
    try:
        main()
    except DataError as e:
        sys.exit(f"error: {e}")
