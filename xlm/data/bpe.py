"""Byte-pair encoding in fastBPE's file formats: learn codes, apply them, count a vocabulary.

Learning runs on Hugging Face `tokenizers` (Rust, multi-threaded). Applying runs on `subword-nmt`,
the reference implementation of the algorithm, which segments each distinct word once; worker
processes share the lines between all cores. Files:
  codes  `LEFT RIGHT COUNT` per line in merge order, `</w>` marking the end of a word (fastBPE);
         subword-nmt's `#version: 0.2` two-column codes are read too.
  vocab  `TOKEN COUNT` per line by decreasing count, non-final subwords ending in `@@` (fastBPE getvocab).
"""
import io
import json
import os
import re
from collections import Counter
from multiprocessing import Pool

from subword_nmt.apply_bpe import BPE, read_vocabulary

from ..fileio import DataError, atomic_write, check_file, iter_line_blocks

EOW = "</w>"
_BPE_MARKER = re.compile(r"(@@ )|(@@ ?$)")


def remove_bpe(line):
    """Undo BPE on one line, with the regex the original XLM uses before BLEU."""
    return _BPE_MARKER.sub("", line)


def _threads(threads):
    return threads or os.cpu_count() or 1


def _parallel_map(fn, items, threads, initializer=None, initargs=()):
    """map() over `items`, in order, on `threads` processes (in this process when threads == 1)."""
    if threads == 1:
        if initializer:
            initializer(*initargs)
        yield from map(fn, items)
        return
    with Pool(threads, initializer=initializer, initargs=initargs) as pool:
        yield from pool.imap(fn, items)


# ----------------------------------------------------------------------------- vocabulary

def _count_block(block):
    counts = Counter()
    for line in block[1]:
        counts.update(line.split())
    return counts


def count_words(paths, threads=None):
    """Word counts over whitespace-tokenized files, counted on all cores."""
    total = Counter()
    for path in paths:
        for counts in _parallel_map(_count_block, iter_line_blocks(path), _threads(threads)):
            total.update(counts)
    return total


def sorted_vocab(counts):
    """(word, count) by decreasing count, ties by word, as fastBPE getvocab orders them."""
    return sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))


def get_vocab(paths, threads=None):
    return sorted_vocab(count_words(paths, threads))


def write_vocab(vocab, f):
    f.write("".join(f"{w} {c}\n" for w, c in vocab))


# ----------------------------------------------------------------------------- codes

def read_codes(path):
    """Merges [(left, right), ...] from fastBPE codes (3 columns) or subword-nmt codes (2 columns)."""
    check_file(path)
    merges = []
    with open(path, encoding="utf-8", errors="strict") as f:
        try:
            for line_no, line in enumerate(f, 1):
                if line_no == 1 and line.startswith("#version:"):
                    continue
                fields = line.rstrip("\r\n").split(" ")
                if len(fields) == 3 and fields[2].isdigit() or len(fields) == 2:
                    merges.append((fields[0], fields[1]))
                else:
                    raise DataError(f"{path}:{line_no}: expected 'LEFT RIGHT COUNT', got {line.rstrip()!r}")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}:{line_no + 1}: invalid UTF-8 ({e.reason})") from None
    if not merges:
        raise DataError(f"{path}: no BPE merges")
    return merges


def _merge_counts(block):
    """The frequency of each merge's pair when it was learned, which fastBPE writes in its codes.

    Segmenting a word applies merges in rank order, as learning did, so at the moment merge k is
    applied the word holds the symbols it held when k was learned: count the pair there (overlapping
    occurrences included, as the learner counts them)."""
    word_counts, ranks = block
    no_merge = len(ranks)
    fired = Counter()
    for word, count in word_counts:
        symbols = list(word[:-1]) + [word[-1] + EOW]
        while len(symbols) > 1:
            rank, pair = min((ranks.get(p, no_merge), p) for p in zip(symbols, symbols[1:]))
            if rank == no_merge:
                break
            fired[rank] += count * sum(p == pair for p in zip(symbols, symbols[1:]))
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
    return fired


def learn_bpe(paths, n_codes, threads=None):
    """Learn `n_codes` merges jointly on whitespace-tokenized files; returns [(left, right, count)]."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    for path in paths:
        check_file(path)
    counts = count_words(paths, threads)
    # tokenizers' vocabulary = every character, every word-final character + '</w>', then the merges
    alphabet = {c for w in counts for c in w} | {w[-1] + EOW for w in counts}
    tokenizer = Tokenizer(models.BPE(end_of_word_suffix=EOW))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + n_codes, min_frequency=0, show_progress=False,
                                  end_of_word_suffix=EOW, special_tokens=[])
    tokenizer.train(list(paths), trainer)
    merges = [tuple(m) for m in json.loads(tokenizer.to_str())["model"]["merges"]]
    ranks = {m: i for i, m in enumerate(merges)}
    items = list(counts.items())
    n_blocks = 4 * _threads(threads)
    fired = Counter()
    for block_fired in _parallel_map(_merge_counts, [(items[i::n_blocks], ranks) for i in range(n_blocks)],
                                     _threads(threads)):
        fired.update(block_fired)
    return [(a, b, fired[i]) for i, (a, b) in enumerate(merges)]


def write_codes(codes, f):
    f.write("".join(f"{a} {b} {c}\n" for a, b, c in codes))


# ----------------------------------------------------------------------------- applying

class _SegmentCache(dict):
    """word -> its BPE segmentation as one string, computed by subword-nmt on first sight."""

    def __init__(self, bpe):
        super().__init__()
        self.bpe = bpe

    def __missing__(self, word):
        self[word] = segmented = " ".join(self.bpe.segment_tokens([word]))
        return segmented


class BPEApplier:
    """Segments tokenized lines with fastBPE codes (and optionally a vocabulary, like `applybpe`'s
    VOCAB argument: subwords not in it are split back into smaller known units)."""

    def __init__(self, codes_path, vocab_path=None):
        merges = read_codes(codes_path)
        codes = io.StringIO("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
        vocab = None
        if vocab_path:
            check_file(vocab_path)
            with open(vocab_path, encoding="utf-8") as f:
                vocab = read_vocabulary(f, None)
        self.cache = _SegmentCache(BPE(codes, vocab=vocab))

    def __call__(self, line):
        return " ".join(map(self.cache.__getitem__, line.split()))


_worker_applier = None


def _init_applier(codes_path, vocab_path):
    global _worker_applier
    _worker_applier = BPEApplier(codes_path, vocab_path)


def _apply_block(block):
    return "".join(_worker_applier(line) + "\n" for line in block[1])


def apply_bpe_stream(lines_blocks, codes_path, vocab_path=None, threads=None):
    """Yield BPE'd text for each block of (first_line_no, lines), in order, on all cores."""
    yield from _parallel_map(_apply_block, lines_blocks, _threads(threads), _init_applier, (codes_path, vocab_path))


def apply_bpe_file(input_path, output_path, codes_path, vocab_path=None, threads=None):
    """BPE a whole file; the output appears under its name only when complete."""
    check_file(input_path)
    with atomic_write(output_path, "w") as out:
        blocks = iter_line_blocks(input_path, 1 << 20, desc=f"applybpe {os.path.basename(input_path)}")
        for text in apply_bpe_stream(blocks, codes_path, vocab_path, threads):
            out.write(text)
