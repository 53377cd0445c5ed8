"""Datasets over binarized corpora, and how they are cut into batches.

Every dataset has the same interface, used by `BatchIterator`:
  batches(rng) -> list of global batch keys for one pass (shuffled with `rng`, in order when rng is None)
  collate(key) -> the batch, as torch tensors
and sentence datasets also
  shard(key, rank, world_size) -> the part of a global batch that one rank of a distributed run reads
A global batch of sentences can be split among ranks by rows, so that a run on N ranks sees the same global
batches as one process with an N times larger batch (glue-xnli.py); or each rank reads whole batches
(`BatchIterator`'s own_batches: train.py).

Batches are batch-first: `x` is (batch, length) of token ids, `lengths` is (batch,). Sentences are
`</s> w1 ... wn </s>` (EOS at both ends, as in the original XLM) padded with <pad>.
"""
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..fileio import DataError
from .dictionary import EOS_INDEX, PAD_INDEX, UNK_INDEX


@dataclass
class Batch:
    x: torch.Tensor        # (batch, length) int64 token ids
    lengths: torch.Tensor  # (batch,) int64, EOS included


def _limit_vocab(ids, n_words):
    """Ids beyond a truncated dictionary (max_vocab / min_count) become <unk>."""
    if n_words is not None:
        ids = np.where(ids >= n_words, UNK_INDEX, ids)
    return ids


def batch_sentences(sentences, n_words=None):
    """Pad 1-D id arrays into a Batch of `</s> ids </s>` rows."""
    lengths = np.array([len(s) + 2 for s in sentences], dtype=np.int64)
    x = np.full((len(sentences), lengths.max()), PAD_INDEX, dtype=np.int64)
    x[:, 0] = EOS_INDEX
    for i, s in enumerate(sentences):
        x[i, 1:lengths[i] - 1] = _limit_vocab(s, n_words)
        x[i, lengths[i] - 1] = EOS_INDEX
    return Batch(torch.from_numpy(x), torch.from_numpy(lengths))


def bucket_batches(lengths, rng=None, batch_size=32, tokens_per_batch=-1, max_batch_size=0, group_by_size=True,
                   count_padding=False):
    """Cut sentence indices into batches, like the original XLM's sentence iterator.

    Shuffle (with rng), stable-sort by length (group_by_size), then cut into ceil(n / batch_size)
    near-equal batches, or, with tokens_per_batch > 0, as the original: a new batch starts at each
    sentence where the running sum of lengths crosses a multiple of tokens_per_batch. With
    count_padding, batches are instead the longest runs whose padded size (sentences x longest) stays
    within tokens_per_batch: fewer tokens per step, but a bound on memory. A batch of more than
    max_batch_size sentences is split in near-equal parts (the original dropped the excess sentences
    at random). The list of batches is shuffled too.
    """
    lengths = np.asarray(lengths)
    indices = rng.permutation(len(lengths)) if rng is not None else np.arange(len(lengths))
    if group_by_size:
        indices = indices[np.argsort(lengths[indices], kind="mergesort")]
    if not len(indices):
        batches = []
    elif tokens_per_batch > 0 and count_padding:
        batches, start, longest = [], 0, 0
        for end, length in enumerate(lengths[indices].tolist()):
            longest = max(longest, length)
            if end > start and (end - start + 1) * longest > tokens_per_batch:
                batches.append(indices[start:end])
                start, longest = end, length
        batches.append(indices[start:])
    elif tokens_per_batch > 0:
        crossings = np.cumsum(lengths[indices]) // tokens_per_batch
        starts = np.flatnonzero(np.diff(crossings, prepend=-1))
        batches = np.split(indices, starts[1:])
    else:
        batches = np.array_split(indices, math.ceil(len(indices) / batch_size))
    if max_batch_size > 0:
        batches = [part for b in batches for part in np.array_split(b, math.ceil(len(b) / max_batch_size))]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


class StreamDataset:
    """A corpus as one token stream (EOS between sentences) for CLM/MLM, laid out like the original:
    the stream is left-padded with EOS and cut into `batch_size` columns of contiguous text, and batch
    i is rows [i*bptt, (i+1)*bptt) of the columns, with an EOS before the first row. Columns are read
    from disk batch by batch, so memory does not depend on the corpus size. Batches are returned
    batch-first: column j is row j."""

    def __init__(self, corpus, batch_size, bptt, n_words=None):
        if len(corpus.sentences) == 0:
            raise DataError(f"{corpus.path}: empty corpus")
        self.corpus, self.batch_size, self.bptt, self.n_words = corpus, batch_size, bptt, n_words
        n_tokens = len(corpus.sentences)
        self.n_batches = math.ceil(n_tokens / (batch_size * bptt))
        self.column_len = self.n_batches * bptt
        self.pad = self.column_len * batch_size - n_tokens

    def batches(self, rng=None):
        order = rng.permutation(self.n_batches) if rng is not None else range(self.n_batches)
        return [int(i) for i in order]

    def splits(self, key, world_size):
        return True  # every batch has batch_size rows

    def _read(self, lo, hi):
        """Positions [lo, hi) of the EOS-left-padded stream."""
        out = np.full(hi - lo, EOS_INDEX, dtype=np.int64)
        start = max(lo, self.pad)
        if start < hi:
            out[start - lo:] = self.corpus.sentences[start - self.pad:hi - self.pad]
        return out

    def collate(self, i):
        """Batch (window) i."""
        x = np.empty((self.batch_size, self.bptt), dtype=np.int64)
        for row in range(self.batch_size):
            lo = row * self.column_len + i * self.bptt - 1
            x[row] = self._read(lo, lo + self.bptt)
            if i == 0:
                x[row, 0] = EOS_INDEX
        x = _limit_vocab(x, self.n_words)
        return Batch(torch.from_numpy(x), torch.full((self.batch_size,), self.bptt, dtype=torch.int64))


@dataclass
class BatchingOptions:
    batch_size: int = 32
    tokens_per_batch: int = -1
    max_batch_size: int = 0
    group_by_size: bool = True
    count_padding: bool = False


class _Bucketed:
    """Batching shared by sentence and sentence-pair datasets: `indices` kept, `lengths` for batching."""

    def __len__(self):
        return len(self.indices)

    def batches(self, rng=None):
        return bucket_batches(self.lengths, rng, **vars(self.batching))

    def splits(self, key, world_size):
        """Whether each of world_size ranks gets a sentence of the batch `key`."""
        return len(key) >= world_size

    def shard(self, key, rank, world_size):
        return np.array_split(key, world_size)[rank]


def within(lengths, max_len):
    """Which sentences --max_len keeps: those of at most max_len tokens, or all with 0 (as the original)."""
    return lengths <= max_len if max_len > 0 else np.ones(len(lengths), dtype=bool)


class SentenceDataset(_Bucketed):
    """Monolingual sentences (AE/BT, classification). With max_len, training sets drop empty
    sentences and sentences longer than max_len tokens (EOS excluded), as the original does; max_len 0
    (the original's "no limit") drops the empty ones alone."""

    def __init__(self, corpus, batching=None, max_len=None, n_words=None):
        self.corpus, self.batching, self.n_words = corpus, batching or BatchingOptions(), n_words
        lengths = corpus.lengths
        keep = np.ones(len(lengths), dtype=bool) if max_len is None else (lengths > 0) & within(lengths, max_len)
        self.indices = np.flatnonzero(keep)
        self.lengths = lengths[self.indices] + 2
        self.n_removed = len(lengths) - len(self.indices)
        if len(self.indices) == 0:
            raise DataError(f"{corpus.path}: no sentence left after filtering by max_len={max_len}")

    def collate(self, key):
        return batch_sentences([self.corpus[i] for i in self.indices[key]], self.n_words)


class ParallelDataset(_Bucketed):
    """Line-aligned sentence pairs (TLM, MT). Batches are (Batch of side 1, Batch of side 2). A pair with an
    empty side is left out of every split, as the original leaves it (keep_empty: classification's
    pairs, whose labels go by line); with max_len (but 0, no limit), training sets also drop the longer pairs."""

    def __init__(self, corpus1, corpus2, batching=None, max_len=None, n_words=None, n_sentences=None,
                 keep_empty=False):
        if len(corpus1) != len(corpus2):
            raise DataError(f"{corpus1.path} has {len(corpus1)} sentences but {corpus2.path} has {len(corpus2)}: "
                            "parallel corpora must be line-aligned")
        self.corpus1, self.corpus2 = corpus1, corpus2
        self.batching, self.n_words = batching or BatchingOptions(), n_words
        len1, len2 = corpus1.lengths, corpus2.lengths
        keep = np.ones(len(len1), dtype=bool) if keep_empty else (len1 > 0) & (len2 > 0)
        if max_len is not None:
            keep &= within(len1, max_len) & within(len2, max_len)
        self.n_removed = len(keep) - int(keep.sum())
        self.indices = np.flatnonzero(keep)[:n_sentences]  # evaluation may read the first n only
        self.lengths = len1[self.indices] + len2[self.indices] + 4
        if len(self.indices) == 0:
            raise DataError(f"{corpus1.path}: no sentence pair left without an empty side"
                            + (f" and within max_len={max_len}" if max_len is not None else ""))

    def collate(self, key):
        ids = self.indices[key]
        return (batch_sentences([self.corpus1[i] for i in ids], self.n_words),
                batch_sentences([self.corpus2[i] for i in ids], self.n_words))
