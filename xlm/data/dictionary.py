"""The XLM vocabulary: 14 special tokens at fixed ids, then the words of a fastBPE vocabulary file.

The instance attributes are exactly those of the original `xlm.data.dictionary.Dictionary`
(id2word, word2id, counts, bos/eos/pad/unk_index), so binarized files pickled by the original code
unpickle into this class, and files we write in the original format load in the original code.
"""
import logging

from ..fileio import DataError, check_file, decode_utf8

logger = logging.getLogger(__name__)

BOS_WORD = "<s>"
EOS_WORD = "</s>"
PAD_WORD = "<pad>"
UNK_WORD = "<unk>"
SPECIAL_WORD = "<special%i>"
N_SPECIAL_WORDS = 10

BOS_INDEX, EOS_INDEX, PAD_INDEX, UNK_INDEX = 0, 1, 2, 3
MASK_INDEX = 5  # <special1>: the [MASK] token of MLM
N_RESERVED = 4 + N_SPECIAL_WORDS  # the first word of a vocabulary file gets id 14

SPECIAL_WORDS = [BOS_WORD, EOS_WORD, PAD_WORD, UNK_WORD] + [SPECIAL_WORD % i for i in range(N_SPECIAL_WORDS)]


def _text_lines(path):
    """(line number, line) of a UTF-8 text file, as the original's text-mode read cuts them: a lone carriage
    return ends a line too (the number is the one of the line by '\\n', in messages)."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            for line in decode_utf8(raw, path, line_no).rstrip("\n").removesuffix("\r").split("\r"):
                yield line_no, line


class Dictionary:
    def __init__(self, id2word, word2id, counts):
        self.id2word = id2word
        self.word2id = word2id
        self.counts = counts
        self.bos_index = word2id[BOS_WORD]
        self.eos_index = word2id[EOS_WORD]
        self.pad_index = word2id[PAD_WORD]
        self.unk_index = word2id[UNK_WORD]
        self.check_valid()

    @classmethod
    def from_words(cls, words_and_counts):
        """Build from (word, count) pairs in id order, specials first."""
        id2word = {i: w for i, (w, _) in enumerate(words_and_counts)}
        word2id = {w: i for i, w in id2word.items()}
        counts = {w: c for w, c in words_and_counts}
        return cls(id2word, word2id, counts)

    @classmethod
    def read_vocab(cls, path):
        """Read a `WORD COUNT` per line vocabulary, as written by fastBPE getvocab.

        Like the original, lines containing U+2028 and lines whose word contains a non-ASCII
        whitespace (which `str.split` splits on) are skipped, because the released vocabularies
        contain such lines and their word ids count on the skip. Every other malformed line, a
        duplicate word, counts that increase, or an empty file is a `DataError` naming the line.
        """
        check_file(path)
        entries = [(w, 0) for w in SPECIAL_WORDS]
        seen = set(SPECIAL_WORDS)
        skipped, specials = 0, []
        for line_no, line in _text_lines(path):
            if "\u2028" in line or (len(line.rstrip().split()) != 2 and len(line.split(" ")) == 2):
                skipped += 1
                continue
            fields = line.rstrip().split()
            if len(fields) != 2 or not fields[1].isdecimal():
                raise DataError(f"{path}:{line_no}: expected 'WORD COUNT', got {line.rstrip()!r}")
            word, count = fields[0], int(fields[1])
            if count > 10 ** 18:  # the original's bound (its check starts from 1e18)
                raise DataError(f"{path}:{line_no}: count {count} is larger than 10^18")
            if word in SPECIAL_WORDS:  # a corpus with literal `<unk>`s gives such a line; the original skips it
                specials.append(word)
                continue
            if word in seen:
                # a tab that split() took away is why, where the line has one
                hidden = f" (the line is {line!r})" if line != f"{word} {count}" else ""
                raise DataError(f"{path}:{line_no}: duplicate word {word!r}{hidden}")
            if len(entries) > N_RESERVED and count > entries[-1][1]:
                raise DataError(f"{path}:{line_no}: counts must not increase ({word!r} {count} after "
                                f"{entries[-1][0]!r} {entries[-1][1]}); sort the vocabulary by count")
            seen.add(word)
            entries.append((word, count))
        if len(entries) == N_RESERVED:
            raise DataError(f"{path}: no vocabulary entries")
        if skipped:
            logger.warning("%s: skipped %i lines with unusual whitespace, as the original XLM does", path, skipped)
        if specials:
            logger.warning("%s: skipped the lines of %s, special tokens with ids of their own, as the original XLM "
                           "does", path, ", ".join(specials))
        logger.info("Read %i words from the vocabulary file %s: the %i special words and %i of the file.",
                    len(entries), path, N_RESERVED, len(entries) - N_RESERVED)
        return cls.from_words(entries)

    def __len__(self):
        return len(self.id2word)

    def __getitem__(self, i):
        return self.id2word[i]

    def __contains__(self, w):
        return w in self.word2id

    def __eq__(self, other):
        """Same words at the same ids; counts are not compared (as in the original)."""
        if not isinstance(other, Dictionary) or len(self) != len(other):
            return False
        return all(self.id2word[i] == other.id2word[i] for i in range(len(self)))

    def first_difference(self, other):
        """(id, self's word, other's word) at the first id where they differ, a word None past the end of
        a shorter vocabulary; None when the two are equal."""
        for i in range(max(len(self), len(other))):
            mine, theirs = self.id2word.get(i), other.id2word.get(i)
            if mine != theirs:
                return i, mine, theirs
        return None

    def index(self, word):
        return self.word2id.get(word, self.unk_index)

    def check_valid(self):
        for i, w in enumerate(SPECIAL_WORDS):
            if self.id2word.get(i) != w:
                raise DataError(f"dictionary: id {i} must be {w!r}, found {self.id2word.get(i)!r}")
        if not (len(self.id2word) == len(self.word2id) == len(self.counts)):
            raise DataError("dictionary: id2word, word2id and counts differ in size")
        if not all(type(w) is str and type(i) is int for w, i in self.word2id.items()):
            raise DataError("dictionary: words must be strings and ids integers")
        if set(self.word2id) != set(self.counts) or any(self.word2id[w] != i for i, w in self.id2word.items()):
            raise DataError("dictionary: id2word and word2id disagree")

    def max_vocab(self, n):
        """Keep the first `n` ids (special tokens included in the `n`)."""
        if n < 1:
            return
        self._truncate(min(n, len(self)))

    def min_count(self, c):
        """Keep special tokens and the words seen at least `c` times."""
        keep = N_RESERVED + sum(1 for i in range(N_RESERVED, len(self)) if self.counts[self.id2word[i]] >= c)
        self._truncate(keep)

    def _truncate(self, n):
        before = len(self)
        self.id2word = {i: self.id2word[i] for i in range(n)}
        self.word2id = {w: i for i, w in self.id2word.items()}
        self.counts = {w: self.counts[w] for w in self.word2id}
        self.check_valid()
        logger.info("Kept %i of %i dictionary words.", n, before)
