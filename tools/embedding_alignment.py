#!/usr/bin/env python3
"""How well a model's input embeddings align two languages, against a gold lexicon (paper §5.6).

For the translation pairs of LEXICON (`src_word tgt_word` a line, as MUSE's dictionaries), prints as
JSON the mean cosine similarity and the mean L2 distance of the two words' rows of `embeddings.weight`
(the encoder's, for a translation checkpoint), and the precision@1 of nearest-neighbour word
translation: each distinct source word retrieves its nearest target word by cosine, a hit when that
word is one of its gold translations. The candidates are the target words of the lexicon, or the words
of `--candidates FILE` (e.g. the whole target-language vocabulary, MUSE-style retrieval).

Any checkpoint of the original's layout works (xlm's, the original's, the released ones). A word that
is not in the vocabulary is, with `--codes`, split with those BPE codes and represented by the mean of
its subwords' embeddings; without `--codes`, or when a subword is unknown too, it is reported and
skipped. `--tgt_checkpoint` takes the target words from a second model: the baseline of embeddings
trained on each language alone, whose spaces are unrelated.

    python tools/embedding_alignment.py mlm.pth lexicon.txt --codes codes
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from xlm.data.bpe import BPEApplier  # noqa: E402
from xlm.fileio import DataError, atomic_write, check_output, check_streams, read_lines  # noqa: E402
from xlm.model.checkpoint import dico_from_checkpoint, read_checkpoint, strip_module_prefix  # noqa: E402


class WordVectors:
    """Word -> input embedding of one checkpoint (mean of its BPE subwords when the word is split)."""

    def __init__(self, path, codes=None):
        data = read_checkpoint(path)
        weights = data.get("model", data.get("encoder"))
        if weights is None:
            raise DataError(f"{path}: no 'model' nor 'encoder' weights")
        weights = strip_module_prefix(weights)
        if "embeddings.weight" not in weights:
            raise DataError(f"{path}: no embeddings.weight")
        self.matrix = weights["embeddings.weight"].float().numpy()
        self.dico = dico_from_checkpoint(data, path)
        if len(self.dico) > len(self.matrix):
            raise DataError(f"{path}: {len(self.dico)} words but {len(self.matrix)} embedding rows")
        self.bpe = BPEApplier(codes) if codes else None

    def __getitem__(self, word):
        """The word's vector, or None when it (or one of its subwords) is not in the vocabulary."""
        if word in self.dico.word2id:
            return self.matrix[self.dico.word2id[word]]
        if self.bpe is None:
            return None
        pieces = self.bpe[word].split(" ")
        if not all(p in self.dico.word2id for p in pieces):
            return None
        return self.matrix[[self.dico.word2id[p] for p in pieces]].mean(axis=0)


def read_lexicon(path):
    pairs = []
    for i, line in enumerate(read_lines(path), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise DataError(f"{path}:{i}: expected 'src_word tgt_word', found {len(fields)} fields")
        pairs.append(tuple(fields))
    if not pairs:
        raise DataError(f"{path}: no translation pair")
    return pairs


def read_words(path):
    return list(dict.fromkeys(line.split()[0] for line in read_lines(path) if line.split()))


def unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def alignment(src_vectors, tgt_vectors, pairs, candidates=None):
    """The metrics for `pairs` (src, tgt); `candidates`: target words to retrieve from (default: the
    lexicon's target words). Pairs or candidates without a vector are left out and counted."""
    kept, missing = [], []
    for s, t in pairs:
        vs, vt = src_vectors[s], tgt_vectors[t]
        if vs is None:
            missing.append(s)
        if vt is None:
            missing.append(t)
        if vs is not None and vt is not None:
            kept.append((s, t, vs, vt))
    if not kept:
        raise DataError("no translation pair has both words in the vocabulary")
    src = np.stack([k[2] for k in kept])
    tgt = np.stack([k[3] for k in kept])
    cosine = (unit(src) * unit(tgt)).sum(axis=1)
    l2 = np.linalg.norm(src - tgt, axis=1)
    words = list(dict.fromkeys(candidates if candidates is not None else [t for _, t, _, _ in kept]))
    words = [w for w in words if tgt_vectors[w] is not None]
    cand = unit(np.stack([tgt_vectors[w] for w in words]))
    gold = {}
    for s, t, _, _ in kept:
        gold.setdefault(s, set()).add(t)
    queries = unit(np.stack([src_vectors[s] for s in gold]))
    nearest = (queries @ cand.T).argmax(axis=1)
    hits = sum(words[j] in gold[s] for s, j in zip(gold, nearest))
    return {"pairs": len(kept), "pairs_skipped": len(pairs) - len(kept),
            "missing_words": sorted(set(missing)), "cosine": float(cosine.mean()), "l2": float(l2.mean()),
            "p_at_1": hits / len(gold), "sources": len(gold), "candidates": len(words)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("lexicon", help="gold translation pairs, 'src_word tgt_word' a line")
    p.add_argument("--codes", default=None, help="BPE codes: words not in the vocabulary are split with them")
    p.add_argument("--tgt_checkpoint", default=None, help="target words' embeddings from this model instead")
    p.add_argument("--candidates", default=None,
                   help="target words to retrieve from (first field a line; default: the lexicon's)")
    p.add_argument("--output", default=None, help="also write the JSON here")
    a = p.parse_args(argv)
    check_streams("stdout")
    if a.output:
        check_output(a.output)  # before the models are read
    pairs = read_lexicon(a.lexicon)
    candidates = read_words(a.candidates) if a.candidates else None
    src = WordVectors(a.checkpoint, a.codes)
    tgt = WordVectors(a.tgt_checkpoint, a.codes) if a.tgt_checkpoint else src
    if candidates is not None and all(tgt[w] is None for w in candidates):
        raise DataError(f"{a.candidates}: none of its {len(candidates)} words is in the vocabulary"
                        f"{'' if a.codes else ' (give --codes to split them into subwords)'}")
    result = alignment(src, tgt, pairs, candidates)
    if result["missing_words"]:
        shown = result["missing_words"][:10]
        print(f"{len(result['missing_words'])} words not in the vocabulary, skipped: {' '.join(shown)}"
              f"{' ...' if len(result['missing_words']) > 10 else ''}", file=sys.stderr)
    text = json.dumps(result, indent=1)
    print(text)
    if a.output:
        with atomic_write(a.output, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    try:
        main()
    except DataError as e:
        sys.exit(f"error: {e}")
