"""Binarized corpora: token ids of every sentence, each followed by EOS, plus [start, end) offsets.

Two on-disk formats, told apart by their first bytes:
  * ours (`XLMBIN01`), read on demand with `os.pread`, so opening or iterating a corpus costs memory
    independent of its size (pages stay in the OS cache, not in the process):
        [0:8) magic, [8:16) little-endian uint64 offset of the JSON header,
        [64:...) sentences (uint16 below 65,536 words, else int32), then positions as int64 (n, 2),
        then the JSON header (dtype, sizes, offsets, vocabulary, unknown-word counts).
  * the original XLM's torch.save'd dict {dico, positions, sentences, unk_words}, loaded into memory
    through an unpickler that only accepts numpy arrays and the dictionary (no code can run).

`load_binarized(path)` reads either; `binarize` and `save_ours` write ours; `save_original` writes theirs.
"""
import io
import json
import logging
import multiprocessing
import os
import pickle
import re
import signal
import struct
import zipfile
from collections import Counter, deque
from contextlib import closing
from dataclasses import dataclass, field
from itertools import chain, repeat

import numpy as np

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct

from ..fileio import DataError, atomic_write, check_file, iter_line_blocks
from .dictionary import EOS_INDEX, N_RESERVED, SPECIAL_WORDS, UNK_INDEX, Dictionary

logger = logging.getLogger(__name__)

MAGIC = b"XLMBIN01"
DATA_OFFSET = 64


def token_dtype(n_words):
    """uint16 below 65,536 words, else int32: what the original stores (and checks on load)."""
    return np.uint16 if n_words < 1 << 16 else np.int32


class FileArray:
    """A 1-D array stored in a file, sliced with os.pread: nothing stays mapped in the process."""

    def __init__(self, path, offset, dtype, length):
        self.path, self.offset, self.dtype, self.length = path, offset, np.dtype(dtype), length
        self._fd = os.open(path, os.O_RDONLY)

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("FileArray supports contiguous slices only")
        start, stop, _ = index.indices(self.length)
        out = np.empty(max(stop - start, 0), dtype=self.dtype)
        view, done, at = memoryview(out).cast("B"), 0, self.offset + start * self.dtype.itemsize
        while done < len(view):  # a read returns at most 2 GiB on Linux
            got = os.preadv(self._fd, [view[done:]], at + done)
            if not got:
                raise DataError(f"{self.path}: the file ends before its {self.length} tokens (truncated?)")
            done += got
        return out

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[:], dtype=dtype)

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_fd"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._fd = os.open(self.path, os.O_RDONLY)

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


@dataclass
class BinarizedCorpus:
    """`len(c)` sentences; `c[i]` the ids of sentence i without EOS; `c.sentences` all ids with EOS."""
    sentences: "np.ndarray | FileArray"
    positions: np.ndarray
    dico: Dictionary
    unk_words: dict = field(default_factory=dict)
    path: str = ""

    def __len__(self):
        return len(self.positions)

    def __getitem__(self, i):
        start, end = self.positions[i]
        return self.sentences[int(start):int(end)]

    @property
    def lengths(self):
        """Number of tokens of each sentence, EOS excluded."""
        return self.positions[:, 1] - self.positions[:, 0]

    @property
    def n_words(self):
        return len(self.sentences) - len(self.positions)

    @property
    def n_unk(self):
        return sum(self.unk_words.values())

    def summary(self):
        lines = [f"{self.n_words} words ({len(self.dico)} unique) in {len(self)} sentences."]
        if self.unk_words:
            lines.append(f"{self.n_unk} unknown words ({len(self.unk_words)} unique), covering "
                         f"{100 * self.n_unk / max(self.n_words, 1):.2f}% of the data.")
            if len(self.unk_words) < 30:  # as the original lists them, a very long one cut (a binary file's line)
                lines += [f"{w if len(w) <= 200 else w[:200] + f'... ({len(w)} characters)'}: {c}"
                          for w, c in sorted(self.unk_words.items(), key=lambda x: x[1])[::-1]]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- reading

def load_binarized(path):
    """Open a binarized corpus written by this project or by the original XLM preprocess.py."""
    check_file(path)
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:8] == MAGIC:
        return _load_ours(path)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return _load_original(path)
    raise DataError(f"{path}: not a binarized corpus (neither xlm's format nor a torch.save'd .pth)")


def _load_ours(path):
    size = os.path.getsize(path)
    if size < DATA_OFFSET:
        raise DataError(f"{path}: truncated ({size} bytes, less than xlm's {DATA_OFFSET}-byte preamble)")
    with open(path, "rb") as f:
        f.seek(8)
        (header_offset,) = struct.unpack("<Q", f.read(8))
        if header_offset >= size:  # the header comes last
            raise DataError(f"{path}: truncated ({size} bytes; its header starts at byte {header_offset})")
        f.seek(header_offset)
        try:
            header = json.loads(f.read().decode("utf-8"))
            dico = Dictionary.from_words([(w, 0) for w in SPECIAL_WORDS] + [tuple(wc) for wc in header["words"]])
            n, n_tokens, positions_offset = (int(header[k]) for k in ("n_sentences", "n_tokens", "positions_offset"))
            dtype, unk_words = np.dtype(header["dtype"]), dict(header["unk_words"])
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path}: corrupt header, or a truncated file ({type(e).__name__}: {e})") from None
    if dtype != token_dtype(len(dico)):
        raise DataError(f"{path}: token ids of dtype {dtype} do not fit a {len(dico)}-word vocabulary")
    if not (n >= 0 and n_tokens >= 0 and DATA_OFFSET + n_tokens * dtype.itemsize <= positions_offset
            and positions_offset + 16 * n <= header_offset):
        raise DataError(f"{path}: corrupt header (sections overlap or lie outside the file)")
    # mapped, not read: a stream never touches the offsets, so opening costs nothing per sentence
    positions = np.memmap(path, dtype=np.int64, mode="r", offset=positions_offset, shape=(n, 2)) if n \
        else np.zeros((0, 2), dtype=np.int64)
    sentences = FileArray(path, DATA_OFFSET, dtype, n_tokens)
    check_ids(path, sentences, positions, len(dico))
    return BinarizedCorpus(sentences, positions, dico, unk_words, path)


CHECK_BLOCK = 1 << 24  # values per block of the checks below: bounded memory whatever the file's size


def _blocks(array):
    """(start, values) of consecutive blocks of a numpy array or a FileArray; a FileArray's block is mapped
    while it is read, which reads the page cache in place where pread would copy every byte."""
    for start in range(0, len(array), CHECK_BLOCK):
        if isinstance(array, FileArray):
            n = min(CHECK_BLOCK, len(array) - start)
            yield start, np.memmap(array.path, array.dtype, "r", array.offset + start * array.dtype.itemsize, (n,))
        else:
            yield start, np.asarray(array[start:start + CHECK_BLOCK])


def check_ids(path, sentences, positions, n_words):
    """Every token id inside the vocabulary, every sentence inside the token array: one vectorised pass
    over the file. The data loaders read ids >= their vocabulary as <unk> (--max_vocab), so a corrupt
    id would otherwise train silently as an unknown word."""
    for start, block in _blocks(sentences):
        if block.max() >= n_words or block.dtype.kind == "i" and block.min() < 0:
            i = int(np.flatnonzero((block >= n_words) | (block < 0))[0])
            raise DataError(f"{path}: token id {int(block[i])} at position {start + i} is outside its "
                            f"{n_words}-word vocabulary")
    for start, block in _blocks(positions):
        if block[:, 0].min() < 0 or (block[:, 1] - block[:, 0]).min() < 0 or block[:, 1].max() >= len(sentences):
            i = int(np.flatnonzero((block[:, 0] < 0) | (block[:, 1] < block[:, 0]) |
                                   (block[:, 1] >= len(sentences)))[0])
            raise DataError(f"{path}: sentence {start + i} has offsets {block[i].tolist()} outside its "
                            f"{len(sentences)} tokens")


class _RestrictedUnpickler(pickle.Unpickler):
    """Only the globals a binarized .pth of the original contains: numpy arrays and the dictionary."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("xlm.data.dictionary", "Dictionary"): Dictionary,
        ("collections", "OrderedDict"): dict,
    }

    def find_class(self, module, name):
        if module.split(".")[0] == "torch":
            raise TensorsFound
        try:
            return self.ALLOWED[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None

    def persistent_load(self, pid):
        raise TensorsFound


class TensorsFound(pickle.UnpicklingError):
    """A torch.save file with tensors in it: a model checkpoint, where a binarized corpus has none."""


def _unpickle_torch_file(path):
    """The object of a torch.save file (zip or legacy format), without running code from it."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith("/data.pkl")]
            if len(names) != 1:
                raise DataError(f"{path}: not a torch.save archive")
            return _RestrictedUnpickler(io.BytesIO(z.read(names[0]))).load()
    with open(path, "rb") as f:
        magic = _RestrictedUnpickler(f).load()
        if magic != 0x1950A86A20F9469CFC6C:
            raise DataError(f"{path}: not a torch.save file")
        _RestrictedUnpickler(f).load()  # protocol version
        _RestrictedUnpickler(f).load()  # sys info
        return _RestrictedUnpickler(f).load()


def _load_original(path):
    try:
        data = _unpickle_torch_file(path)
    except DataError:
        raise
    except TensorsFound:
        raise DataError(f"{path}: holds tensors (a model checkpoint?), not a binarized corpus") from None
    except Exception as e:  # a damaged pickle fails in many ways, none of which runs code from the file
        raise DataError(f"{path}: cannot read as an original XLM binarized file ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict) or not {"dico", "positions", "sentences", "unk_words"} <= set(data):
        raise DataError(f"{path}: expected keys dico, positions, sentences, unk_words")
    dico, positions, sentences = data["dico"], data["positions"], data["sentences"]
    if not isinstance(dico, Dictionary):
        raise DataError(f"{path}: 'dico' is not a dictionary")
    try:
        dico.check_valid()
    except (DataError, AttributeError, TypeError) as e:
        raise DataError(f"{path}: malformed dictionary ({e})") from None
    if not isinstance(sentences, np.ndarray) or not isinstance(positions, np.ndarray):
        raise DataError(f"{path}: 'sentences' and 'positions' must be numpy arrays")
    if sentences.dtype != token_dtype(len(dico)) or sentences.ndim != 1:
        raise DataError(f"{path}: sentences of dtype {sentences.dtype} do not fit a {len(dico)}-word dictionary")
    if positions.ndim != 2 or positions.shape[1] != 2 or positions.dtype.kind not in "iu":
        raise DataError(f"{path}: positions must be integers of shape (n, 2)")
    if not isinstance(data["unk_words"], dict):
        raise DataError(f"{path}: 'unk_words' must be a dict")
    positions = positions.astype(np.int64)
    check_ids(path, sentences, positions, len(dico))
    return BinarizedCorpus(sentences, positions, dico, dict(data["unk_words"]), path)


# ----------------------------------------------------------------------------- writing

def save_original(corpus, path):
    """Write a corpus in the original XLM's .pth layout (for the original code, or to share)."""
    import torch

    data = {"dico": corpus.dico, "positions": np.asarray(corpus.positions, dtype=np.int64),
            "sentences": np.asarray(corpus.sentences), "unk_words": dict(corpus.unk_words)}
    with atomic_write(path) as f:
        torch.save(data, f, pickle_protocol=4)


def save_ours(corpus, path):
    """Write any loaded corpus (e.g. an original .pth) in this project's format."""
    sentences = [np.append(corpus[i], EOS_INDEX) for i in range(len(corpus))]
    ids = np.concatenate(sentences) if sentences else np.zeros(0, dtype=np.int64)
    block = _IndexedBlock(ids, np.asarray(corpus.lengths, dtype=np.int64), Counter(corpus.unk_words), [], [], [])
    with atomic_write(path) as f:
        _write_ours(f, [block], corpus.dico)


@dataclass
class _IndexedBlock:
    ids: np.ndarray          # token ids, each sentence followed by EOS
    lengths: np.ndarray      # tokens per sentence, EOS excluded
    unk_words: Counter
    dropped_lines: list      # line numbers where special tokens were removed
    empty_lines: list
    control_lines: list      # line numbers holding a control character that is not a space


# control characters str.split() does not split on (it does on \t \n \v \f \r \x1c-\x1f \x85): as in the
# original, such a character stays inside its word, e.g. 'hello\0world' is one (unknown) word
_CONTROL = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]")


def _index_block(block, word2id):
    """Map one block of lines to ids with C-level dict lookups (no Python loop over words)."""
    first_line, lines = block
    split = [line.rstrip().split() for line in lines]
    lengths = np.fromiter(map(len, split), dtype=np.int64, count=len(split))
    words = list(chain.from_iterable(split))
    ids = np.fromiter(map(word2id.get, words, repeat(-1)), dtype=np.int64, count=len(words))
    ids[ids < 0] = UNK_INDEX
    # a literal <unk> in the text counts as an unknown word too, as in the original's files and summary
    unk_words = Counter(words[i] for i in np.flatnonzero(ids == UNK_INDEX))
    # a literal </s>, <pad> or <specialN> in the text would corrupt the batches: drop it, like the original
    special = (ids < N_RESERVED) & (ids != UNK_INDEX)
    sentence_of = np.repeat(np.arange(len(lines)), lengths)
    dropped_lines = []
    if special.any():
        dropped_lines = (first_line + np.unique(sentence_of[special])).tolist()
        lengths = lengths - np.bincount(sentence_of[special], minlength=len(lines))
        sentence_of, ids = sentence_of[~special], ids[~special]
    out = np.full(len(ids) + len(lines), EOS_INDEX, dtype=np.int64)
    out[np.arange(len(ids)) + sentence_of] = ids
    empty_lines = (first_line + np.flatnonzero(lengths == 0)).tolist()
    control_lines = []
    if _CONTROL.search("".join(lines)):
        control_lines = [first_line + i for i, line in enumerate(lines) if _CONTROL.search(line)]
    return _IndexedBlock(out, lengths, unk_words, dropped_lines, empty_lines, control_lines)


def _write_ours(f, blocks, dico):
    """Stream indexed blocks into an open file; returns the line numbers that `binarize` warns of (dropped
    special tokens, empty lines, control characters)."""
    dtype = token_dtype(len(dico))
    f.write(MAGIC + b"\0" * (DATA_OFFSET - len(MAGIC)))
    lengths, unk_words, n_tokens = [], Counter(), 0
    dropped, empty, control = [], [], []
    for block in blocks:
        f.write(block.ids.astype(dtype).tobytes())
        n_tokens += len(block.ids)
        lengths.append(block.lengths)
        unk_words.update(block.unk_words)
        dropped += block.dropped_lines
        empty += block.empty_lines
        control += block.control_lines
    lengths = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths + 1) - 1
    positions = np.stack([ends - lengths, ends], axis=1).astype(np.int64)
    positions_offset = -(-f.tell() // 8) * 8
    f.write(b"\0" * (positions_offset - f.tell()))
    f.write(positions.tobytes())
    header = {"format": "xlm-binarized", "version": 1, "dtype": np.dtype(dtype).name,
              "n_sentences": len(positions), "n_tokens": n_tokens, "positions_offset": positions_offset,
              "words": [[dico[i], dico.counts[dico[i]]] for i in range(N_RESERVED, len(dico))],
              "unk_words": dict(unk_words)}
    header_offset = f.tell()
    f.write(json.dumps(header, ensure_ascii=False).encode("utf-8"))
    f.seek(8)
    f.write(struct.pack("<Q", header_offset))
    return dropped, empty, control


def _serve(fn, conn, parent_conns):
    """A worker of `_in_order`: fn on each item received, until its parent closes the pipe or kills it."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # the parent decides when to stop
        signal.signal(signum, signal.SIG_IGN)
    for c in parent_conns:  # so that the pipe ends (EOF) when the parent is gone, even by SIGKILL
        c.close()
    while True:
        try:
            item = conn.recv()
        except EOFError:
            return
        try:
            result = True, fn(item)
        except Exception as e:
            result = False, e
        conn.send(result)


def _in_order(fn, items, n_workers):
    """fn(item) for each item, computed by `n_workers` forked processes, yielded in order; close it
    (contextlib.closing) and the workers are killed. A worker gets its next item as soon as its result
    is read (not before: both would wait on a full pipe, it to send the result and us to send the item).

    Unlike multiprocessing.Pool, whose workers share a locked queue, each worker has its own pipe: a
    worker that dies halfway through reading a task (a Ctrl-C or SIGTERM reaches the whole process
    group) cannot leave a lock taken or a half-read message on which the pool's shutdown waits forever."""
    ctx = multiprocessing.get_context("fork")  # fn need not be picklable
    workers, conns = [], []
    try:
        for _ in range(n_workers):
            try:
                conn, child = ctx.Pipe()
                conns.append(conn)
                worker = ctx.Process(target=_serve, args=(fn, child, conns), daemon=True)
                worker.start()
            except OSError as e:
                raise DataError(f"cannot start {n_workers} worker processes ({e.strerror}): use fewer "
                                "(--threads)") from None
            workers.append(worker)
            child.close()
        items, in_flight, end = iter(items), deque(), object()  # in_flight: the worker of each item sent, in order

        def send(w):
            item = next(items, end)
            if item is not end:
                conns[w].send(item)
                in_flight.append(w)

        for w in range(n_workers):
            send(w)
        while in_flight:
            w = in_flight.popleft()
            try:
                ok, result = conns[w].recv()
            except EOFError:
                raise RuntimeError(f"a worker process died (exit status {workers[w].exitcode})") from None
            if not ok:
                raise result
            send(w)
            yield result
    finally:
        for worker in workers:
            worker.kill()
            worker.join()
        for conn in conns:
            conn.close()


BINARIZE_BLOCK = 1 << 20  # bytes of text a worker indexes at a time


def binarize(text_path, dico, output_path, threads=None):
    """Index a tokenized text file against `dico` into our format, with up to `threads` worker processes
    (no more than the cores, nor than the file's blocks); returns the loaded corpus."""
    check_file(text_path)
    n_blocks = -(-os.path.getsize(text_path) // BINARIZE_BLOCK)
    threads = max(1, min(threads or os.cpu_count() or 1, os.cpu_count() or 1, n_blocks))
    blocks = iter_line_blocks(text_path, BINARIZE_BLOCK, desc=f"binarize {os.path.basename(text_path)}")
    with atomic_write(output_path) as f:
        if threads == 1:
            dropped, empty, control = _write_ours(f, (_index_block(b, dico.word2id) for b in blocks), dico)
        else:
            with closing(_in_order(lambda block: _index_block(block, dico.word2id), blocks, threads)) as indexed:
                dropped, empty, control = _write_ours(f, indexed, dico)
    if empty:
        logger.warning("%s: %i empty lines kept as empty sentences (first at line %i)", text_path, len(empty), empty[0])
    if dropped:
        logger.warning("%s: special tokens removed from %i lines (first at line %i)", text_path, len(dropped),
                       dropped[0])
    if control:
        logger.warning("%s: %i lines hold control characters such as NUL, kept inside their words, which are then "
                       "likely unknown (first at line %i); tools/tokenize.sh removes them", text_path, len(control),
                       control[0])
    return load_binarized(output_path)
