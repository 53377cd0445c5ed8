"""Byte-pair encoding exactly as fastBPE (glample/fastBPE, the original XLM's tool) does it, in Python.

tools/fastbpe runs the compiled fastBPE when tools/install_fastbpe.sh could build it and this module
otherwise; both write the same bytes (tests/test_bpe.py). fastBPE's rules, from its fastBPE.hpp:
  - words are split on ' ' and '\\n' only (a tab is part of a word); a file's last word is dropped
    when no ' ' or '\\n' follows it; applying a file keeps every space and empty line;
  - a word's symbols are its UTF-8 characters, the last one ending in `</w>`;
  - learning merges the most frequent pair (occurrences inside a word overlap), a tie going to the
    pair of smallest symbol ids, ids being numbered in the iteration order of the C++ word-count map
    (libstdc++'s std::unordered_map, emulated here);
  - applying merges the lowest-ranked adjacent pair, all its occurrences left to right, until none
    is a code; with a vocabulary, subwords not in it are split back along their merges.
Files:
  codes  `LEFT RIGHT COUNT` per line in merge order (subword-nmt's `#version: 0.2` two-column codes
         are read too);
  vocab  `TOKEN COUNT` per line by decreasing count, ties by byte order, `@@` ending non-final subwords.
"""
import heapq
import re
import sys
from collections import Counter

import numpy as np

from ..fileio import DataError, atomic_write, check_file, decode_utf8, read_lines

EOW = "</w>"
SEPARATOR = "@@"
_BPE_MARKER = re.compile(r"(@@ )|(@@ ?$)")


def remove_bpe(line):
    """Undo BPE on one line, with the regex the original XLM uses before BLEU."""
    return _BPE_MARKER.sub("", line)


def symbols(word):
    """fastBPE's first segmentation: one symbol per character, `</w>` on the last. Its character loop
    stops at a NUL byte, so whatever follows the character before a NUL stays in the last symbol."""
    head = word.partition("\0")[0]
    last = max(len(head) - 1, 0)
    return list(head[:last]) + [word[last:] + EOW]


# ----------------------------------------------------------------------------- reading text

def warn_last_word_dropped(path):
    print(f"warning: {path} does not end with a newline: fastBPE ignores its last word", file=sys.stderr)


def read_text(path):
    """A file's text, checked to be UTF-8 (the error names the line)."""
    check_file(path)
    with open(path, "rb") as f:
        data = f.read()
    text = decode_utf8(data, path)
    if data[-1:] not in (b" ", b"\n"):
        warn_last_word_dropped(path)
    return text


def count_words(paths):
    """Word counts over the files, in order of first occurrence (fastBPE's map insertion order)."""
    total = Counter()
    for path in paths:
        text = read_text(path)
        words = text.replace("\n", " ").split(" ")
        words.pop()  # the text after the last separator: empty, or the word fastBPE drops
        total.update(words)
    total.pop("", None)
    return total


def sorted_vocab(counts):
    """(word, count) by decreasing count, ties by word (byte order = code point order in UTF-8)."""
    return sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))


def get_vocab(paths):
    return sorted_vocab(count_words(paths))


def vocab_text(vocab):
    """A vocabulary as fastBPE's getvocab writes it: `WORD COUNT` lines."""
    return "".join(f"{w} {c}\n" for w, c in vocab)


def write_vocab(vocab, f):
    f.write(vocab_text(vocab))


# ----------------------------------------------------------------------------- libstdc++'s unordered_map

_MUL = 0xC6A4A7935BD1E995
_MASK = (1 << 64) - 1
# bucket counts of a std::unordered_map growing one insertion at a time (_Prime_rehash_policy, max
# load factor 1): it rehashes to the next one when an insertion would exceed the current count
_BUCKETS = (13, 29, 59, 127, 257, 541, 1109, 2357, 5087, 10273, 20753, 42043, 85229, 172933, 351061,
            712697, 1447153, 2938679, 5967347, 12117689, 24607243, 49969847, 101473717, 206062531,
            418451333, 849749479, 1725587117, 3504151727, 8589934583)


def std_hash(data):
    """std::hash<std::string> on 64-bit libstdc++: _Hash_bytes (MurmurHash64A variant), seed 0xc70f6907."""
    n = len(data)
    h = 0xC70F6907 ^ (n * _MUL & _MASK)
    aligned = n & ~7
    for i in range(0, aligned, 8):
        k = int.from_bytes(data[i:i + 8], "little") * _MUL & _MASK
        h = (h ^ ((k ^ (k >> 47)) * _MUL & _MASK)) * _MUL & _MASK
    if n & 7:
        h = (h ^ int.from_bytes(data[aligned:], "little")) * _MUL & _MASK
    h = (h ^ (h >> 47)) * _MUL & _MASK
    return h ^ (h >> 47)


def unordered_map_order(keys):
    """Indices of `keys` (inserted in this order into an empty std::unordered_map<std::string, ...>)
    in the order the map iterates them.

    libstdc++ keeps one singly linked list grouped by bucket: a node goes to the front of its bucket's
    group, and a bucket that becomes non-empty goes to the front of the list; a rehash re-inserts the
    nodes in list order the same way. So each node has a time (its list position at the last rehash,
    or its insertion index after it), a bucket's time is the time of its first node, and the list is
    ordered by decreasing bucket time, then decreasing node time."""
    hashes = np.array([std_hash(k.encode("utf-8")) for k in keys], dtype=np.uint64)
    order = np.arange(0, dtype=np.int64)
    for i, n_buckets in zip((0,) + _BUCKETS, _BUCKETS):
        if i >= len(keys):
            break
        end = min(len(keys), n_buckets)
        nodes = np.concatenate([order, np.arange(i, end)])
        buckets = hashes[nodes] % np.uint64(n_buckets)
        _, first, inverse = np.unique(buckets, return_index=True, return_inverse=True)
        times = np.arange(len(nodes))
        order = nodes[np.lexsort((-times, -first[inverse]))]
    return order


# ----------------------------------------------------------------------------- learning

def nothing_to_learn(paths):
    return DataError(f"{' '.join(map(str, paths))}: no word followed by a space or newline, nothing to learn")


def learn_bpe(paths, n_codes):
    """Learn `n_codes` merges jointly on the files; returns [(left, right, count)] as fastBPE learnbpe."""
    counts = count_words(paths)
    words = list(counts)
    ids, names = {}, []
    corpus, freqs = [], []
    for wi in unordered_map_order(words):
        word = words[wi]
        for s in symbols(word):
            if s not in ids:
                ids[s] = len(names)
                names.append(s)
        corpus.append([ids[s] for s in symbols(word)])
        freqs.append(counts[word])

    pair_counts, where = {}, {}  # every pair ever seen (fastBPE never forgets one); words holding it
    for wi, word in enumerate(corpus):
        for pair in zip(word, word[1:]):
            pair_counts[pair] = pair_counts.get(pair, 0) + freqs[wi]
            where.setdefault(pair, set()).add(wi)
    if not names:
        raise nothing_to_learn(paths)
    heap = [(-c, a, b) for (a, b), c in pair_counts.items()]
    heapq.heapify(heap)

    codes = []
    for _ in range(n_codes):
        while heap and pair_counts[heap[0][1:]] != -heap[0][0]:
            heapq.heappop(heap)
        if heap:
            count, best = -heap[0][0], heap[0][1:]
        else:
            # no pair occurs any more: fastBPE's search keeps the smallest pair of count 0 and writes
            # it again and again; with no pair at all, its pair is left uninitialised: (0, 0) with g++
            count, best = 0, min((p for p, c in pair_counts.items() if c == 0), default=(0, 0))
        codes.append((names[best[0]], names[best[1]], count))
        new = len(names)
        names.append(names[best[0]] + names[best[1]])
        changed = set()

        def change(pair, delta, wi):
            if pair in pair_counts:
                pair_counts[pair] += delta
            elif delta > 0:
                pair_counts[pair] = delta
            if delta > 0:
                where.setdefault(pair, set()).add(wi)
            changed.add(pair)

        left, right = best
        for wi in where.get(best, ()):
            word, c = corpus[wi], freqs[wi]
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == left and word[i + 1] == right:
                    if merged:
                        change((merged[-1], left), -c, wi)
                        change((merged[-1], new), c, wi)
                    if i + 2 < len(word):
                        change((right, word[i + 2]), -c, wi)
                        change((new, word[i + 2]), c, wi)
                    merged.append(new)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            corpus[wi] = merged
        if best in pair_counts:
            pair_counts[best] = 0
        for pair in changed:
            if pair_counts.get(pair, 0) > 0:
                heapq.heappush(heap, (-pair_counts[pair], *pair))
    return codes


def codes_text(codes):
    """Merges as fastBPE's learnbpe writes them: `LEFT RIGHT COUNT` lines."""
    return "".join(f"{a} {b} {c}\n" for a, b, c in codes)


def write_codes(codes, f):
    f.write(codes_text(codes))


# ----------------------------------------------------------------------------- codes and vocabularies

def read_codes(path):
    """Merges [(left, right), ...] in rank order. fastBPE asserts (aborts) on a line that is not 3
    fields, a repeated pair or two pairs joining into the same subword; here each is a DataError."""
    merges, joined = {}, set()
    for line_no, line in enumerate(read_lines(path), 1):
        fields = [f for f in line.split(" ") if f]
        if line_no == 1 and line.startswith("#version:"):
            continue
        if len(fields) not in (2, 3):
            raise DataError(f"{path}:{line_no}: expected 'LEFT RIGHT COUNT', got {line!r}")
        pair = (fields[0], fields[1])
        if pair in merges or pair[0] + pair[1] in joined:
            raise DataError(f"{path}:{line_no}: the merge {' '.join(pair)!r} makes a subword made earlier")
        merges[pair] = line_no
        joined.add(pair[0] + pair[1])
    if not merges:
        raise DataError(f"{path}: no BPE merges")
    # subword-nmt's two columns are read without a header too, but never all 'WORD COUNT': a vocabulary
    if all(right.isdigit() for _, right in merges) and not is_fastbpe_codes(path) and \
            not read_lines(path)[0].startswith("#version:"):
        raise DataError(f"{path}: 'WORD COUNT' on every line: a vocabulary, not BPE codes")
    return list(merges)


def is_fastbpe_codes(path):
    """Whether the compiled fastBPE reads `path` as it is (3 fields a line, no subword-nmt header)."""
    return all(len([f for f in line.split(" ") if f]) == 3 for line in read_lines(path))


def read_vocab(path):
    """The words of an applybpe vocabulary (`TOKEN COUNT` lines; fastBPE asserts on anything else)."""
    vocab = set()
    for line_no, line in enumerate(read_lines(path), 1):
        fields = [f for f in line.split(" ") if f]
        count = re.match(r"[\t\n\v\f\r]*[+-]?[0-9]+", fields[1]) if len(fields) == 2 else None
        if not count:
            raise DataError(f"{path}:{line_no}: expected 'TOKEN COUNT', got {line!r}")
        if not -2**31 <= int(count.group()) < 2**31:  # fastBPE reads it with std::stoi, which throws
            raise DataError(f"{path}:{line_no}: count {count.group().strip()} does not fit in 32 bits")
        if fields[0] in vocab:
            raise DataError(f"{path}:{line_no}: {fields[0]!r} is listed twice")
        vocab.add(fields[0])
    return vocab


# ----------------------------------------------------------------------------- applying

class BPEApplier:
    """Segments words with fastBPE codes (and optionally a vocabulary, `applybpe`'s VOCAB: subwords
    not in it are split back into smaller known units); each distinct word is segmented once."""

    def __init__(self, codes_path, vocab_path=None):
        merges = read_codes(codes_path)
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.unmerge = {a + b: (a, b) for a, b in merges}
        self.vocab = read_vocab(vocab_path) if vocab_path else set()
        self.cache = {"": ""}

    def segment(self, word):
        """`word` in BPE, as fastBPE's process_bpe writes it."""
        subwords = symbols(word)
        while len(subwords) > 1:
            pairs = list(zip(subwords, subwords[1:]))
            best = min(pairs, key=lambda p: self.ranks.get(p, len(self.ranks)))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(subwords):
                if i + 1 < len(subwords) and (subwords[i], subwords[i + 1]) == best:
                    merged.append(subwords[i] + subwords[i + 1])
                    i += 2
                else:
                    merged.append(subwords[i])
                    i += 1
            subwords = merged
        if self.vocab:
            known = []
            for i, s in enumerate(subwords):
                self._keep_known(s, i == len(subwords) - 1, known)
            subwords = known
        return "".join(s + SEPARATOR + " " for s in subwords)[:-len(EOW + SEPARATOR + " ")]

    def _in_vocab(self, subword, final):
        return (subword[:-len(EOW)] if final else subword + SEPARATOR) in self.vocab

    def _keep_known(self, subword, final, out):
        """Append `subword` if the vocabulary has it, else the known pieces of the merge that made it."""
        if self._in_vocab(subword, final) or subword not in self.unmerge:
            out.append(subword)
            return
        left, right = self.unmerge[subword]
        self._keep_known(left, False, out)
        self._keep_known(right, final, out)

    def __getitem__(self, word):
        segmented = self.cache.get(word)
        if segmented is None:
            segmented = self.cache[word] = self.segment(word)
        return segmented

    def __call__(self, line):
        """One line as applybpe_stream segments it: words split on ' ', joined by one space."""
        return " ".join(self[w] for w in line.split(" ") if w)

    def apply_text(self, text):
        """A whole file as applybpe writes it: every space and newline kept, a last word with no
        separator after it dropped."""
        lines = text.split("\n")
        last = lines[-1].split(" ")
        last[-1] = ""
        lines[-1] = " ".join(last)
        return "\n".join(" ".join(map(self.__getitem__, line.split(" "))) for line in lines)


def nothing_to_apply(path):
    return DataError(f"{path}: no word followed by a space or newline (fastBPE cannot write an empty file)")


def apply_bpe_file(input_path, output_path, codes_path, vocab_path=None):
    """BPE a whole file; the output appears under its name only when complete."""
    applier = BPEApplier(codes_path, vocab_path)
    text = read_text(input_path)
    out = applier.apply_text(text)
    if not out:
        raise nothing_to_apply(input_path)
    with atomic_write(output_path, "w") as f:
        f.write(out)


def apply_bpe_stream(stdin, stdout, codes_path, vocab_path=None):
    """applybpe_stream: each line of the binary `stdin` BPE'd to the binary `stdout`, flushed per line."""
    applier = BPEApplier(codes_path, vocab_path)
    for line_no, raw in enumerate(stdin, 1):
        line = decode_utf8(raw, "<stdin>", line_no)
        stdout.write((applier(line[:-1] if line.endswith("\n") else line) + "\n").encode("utf-8"))
        stdout.flush()
