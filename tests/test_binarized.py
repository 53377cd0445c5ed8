import os
import zipfile

import numpy as np
import pytest
import torch

import xlm.data.dictionary
from conftest import python
from xlm.data import binarized, load_binarized
from xlm.data.dictionary import SPECIAL_WORDS, Dictionary
from xlm.fileio import DataError, iter_line_blocks

VOCAB = "the 9\ncat 8\nsat 7\non 6\nmat 5\n"


@pytest.fixture
def vocab(tmp_path):
    path = tmp_path / "vocab"
    path.write_text(VOCAB, encoding="utf-8")
    return path


def test_preprocess_writes_input_pth_and_summary(tmp_path, vocab):
    text = tmp_path / "train.en"
    text.write_text("the cat sat\n\nthe dog sat on the mat\nthe </s> cat <special1> <unk>\n", encoding="utf-8")
    proc = python("preprocess.py", vocab, text)
    assert "12 words (19 unique) in 4 sentences." in proc.stderr and proc.stdout == ""  # a log, as the original's
    # the original's summary line, and a literal <unk> counted as unknown as the original counts it
    assert "2 unknown words (2 unique), covering 16.67% of the data." in proc.stderr and "dog: 1" in proc.stderr
    assert "Read 19 words from the vocabulary file" in proc.stderr  # the original's count: with the specials
    assert "empty lines" in proc.stderr and "special tokens removed" in proc.stderr
    corpus = load_binarized(str(text) + ".pth")
    assert len(corpus) == 4 and corpus.n_unk == 2 and corpus.unk_words == {"dog": 1, "<unk>": 1}
    assert corpus.dico == Dictionary.read_vocab(vocab)
    assert [corpus.dico[i] for i in corpus[2]] == "the <unk> sat on the mat".split()
    assert len(corpus[1]) == 0 and [corpus.dico[i] for i in corpus[3]] == ["the", "cat", "<unk>"]
    assert isinstance(corpus[0], np.ndarray) and corpus[0].dtype == np.uint16
    assert np.asarray(corpus.sentences)[corpus.positions[:, 1]].tolist() == [1, 1, 1, 1]  # EOS after each
    # an existing output is reused (as the original does), and a different vocabulary is refused
    assert "already exists" in python("preprocess.py", vocab, text).stderr
    other = tmp_path / "other"
    other.write_text("a 3\n", encoding="utf-8")
    proc = python("preprocess.py", other, text, check=False)
    assert proc.returncode != 0 and "different vocabulary" in proc.stderr


def test_large_vocabularies_use_int32(tmp_path):
    words = [(f"w{i}", 1) for i in range(70000)]
    dico = Dictionary.from_words([(w, 0) for w in SPECIAL_WORDS] + words)
    text = tmp_path / "t"
    text.write_text("w0 w69999\n", encoding="utf-8")
    corpus = binarized.binarize(text, dico, tmp_path / "t.pth", threads=1)
    assert corpus[0].dtype == np.int32 and corpus[0].tolist() == [14, 70013]


class OriginalDictionary:
    """Stands in for the original's class: a pickle names only its module path and attributes."""


def write_original(path, dico, positions, sentences, unk_words, monkeypatch, legacy):
    fake = OriginalDictionary()
    fake.__dict__.update(id2word=dict(dico.id2word), word2id=dict(dico.word2id), counts=dict(dico.counts),
                         bos_index=0, eos_index=1, pad_index=2, unk_index=3)
    OriginalDictionary.__module__, OriginalDictionary.__qualname__ = "xlm.data.dictionary", "Dictionary"
    monkeypatch.setattr(xlm.data.dictionary, "Dictionary", OriginalDictionary)
    data = {"dico": fake, "positions": positions, "sentences": sentences, "unk_words": unk_words}
    torch.save(data, path, pickle_protocol=4, _use_new_zipfile_serialization=not legacy)
    monkeypatch.undo()


@pytest.mark.parametrize("legacy", [False, True])
def test_reads_files_of_the_original_preprocess(tmp_path, vocab, monkeypatch, legacy):
    """Layout of the reference (section 3.1): dico object, int64 positions [start, end), uint16 sentences."""
    dico = Dictionary.read_vocab(vocab)
    sentences = np.array([14, 15, 16, 1, 1, 18, 3, 1], dtype=np.uint16)
    positions = np.array([[0, 3], [4, 4], [5, 7]], dtype=np.int64)
    path = tmp_path / "train.en.pth"
    write_original(path, dico, positions, sentences, {"dog": 1}, monkeypatch, legacy)
    corpus = load_binarized(path)
    assert len(corpus) == 3 and corpus.dico == dico and corpus.n_unk == 1
    assert corpus[0].tolist() == [14, 15, 16] and corpus[1].tolist() == [] and corpus[2].tolist() == [18, 3]
    # and back: our writer of the original layout gives a file the same reader (and torch) accepts
    binarized.save_original(corpus, tmp_path / "copy.pth")
    again = load_binarized(tmp_path / "copy.pth")
    assert np.array_equal(again.sentences, sentences) and again.dico == dico
    # the original unpickles the dictionary by its class path, which the pickle must name
    with zipfile.ZipFile(tmp_path / "copy.pth") as z:
        pickled = z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))
    assert b"xlm.data.dictionary" in pickled and b"Dictionary" in pickled
    assert again.sentences.dtype == np.uint16


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_malicious_pickle_is_refused_and_not_run(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"dico": Exploit(), "positions": None, "sentences": None, "unk_words": {}}, path)
    with pytest.raises(DataError, match="refusing to load posix.system"):
        load_binarized(path)
    assert not (tmp_path / "pwned").exists() and not os.path.exists("pwned")


def test_bad_inputs_leave_no_output(tmp_path, vocab):
    text = tmp_path / "bad.en"
    text.write_bytes(b"the cat\n" * 100 + b"the \xe9 mat\n")
    proc = python("preprocess.py", vocab, text, check=False)
    assert proc.returncode != 0 and "bad.en:101: invalid UTF-8 (invalid continuation byte at byte 5 of the line)" \
        in proc.stderr
    empty = tmp_path / "empty.en"
    empty.write_text("")
    proc = python("preprocess.py", vocab, empty, check=False)
    assert "empty.en: file is empty" in proc.stderr
    proc = python("preprocess.py", vocab, tmp_path / "missing.en", check=False)
    assert "missing.en: no such file" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.en", "empty.en", "vocab"]


def test_a_very_long_unknown_word_is_cut_in_the_summary(tmp_path, vocab):
    text = tmp_path / "binary.en"
    text.write_text("the cat\n" + "x" * 5000 + "\n", encoding="utf-8")
    summary = python("preprocess.py", vocab, text).stderr
    assert "x" * 200 + "... (5000 characters): 1" in summary and "x" * 201 not in summary


def test_a_bad_byte_in_a_later_block_names_its_line_and_column(tmp_path):
    path = tmp_path / "text"
    path.write_bytes(b"ab\n" * 1000 + b"cd \xe9 e\n")
    with pytest.raises(DataError, match=r"text:1001: invalid UTF-8 \(invalid continuation byte at byte 4 of the "):
        list(iter_line_blocks(path, block_bytes=64))


def test_interrupted_binarization_keeps_the_previous_file(tmp_path, vocab, monkeypatch):
    dico = Dictionary.read_vocab(vocab)
    text = tmp_path / "t"
    text.write_text("the cat\n", encoding="utf-8")
    out = tmp_path / "t.pth"
    binarized.binarize(text, dico, out, threads=1)
    before = out.read_bytes()
    text.write_text("the mat\n" * 300000, encoding="utf-8")

    def crash(block, word2id=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(binarized, "_index_block", crash)
    with pytest.raises(KeyboardInterrupt):
        binarized.binarize(text, dico, out, threads=1)
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["t", "t.pth", "vocab"]


def test_not_a_corpus(tmp_path):
    (tmp_path / "x.pth").write_text("hello")
    with pytest.raises(DataError, match="not a binarized corpus"):
        load_binarized(tmp_path / "x.pth")


def test_convert_between_formats(tmp_path, vocab):
    text = tmp_path / "t"
    text.write_text("the cat\n\nthe dog on the mat\n", encoding="utf-8")
    python("preprocess.py", vocab, text)
    python("tools/convert_binarized.py", tmp_path / "t.pth", tmp_path / "orig.pth", "--to", "original")
    python("tools/convert_binarized.py", tmp_path / "orig.pth", tmp_path / "back.pth", "--to", "xlm")
    assert (tmp_path / "back.pth").read_bytes() == (tmp_path / "t.pth").read_bytes()
    assert (tmp_path / "orig.pth").read_bytes()[:4] == b"PK\x03\x04"


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    from xlm.fileio import atomic_write
    umask = os.umask(0o022)
    try:
        with atomic_write(str(tmp_path / "out"), "w") as f:
            f.write("x")
    finally:
        os.umask(umask)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o644


def test_slices_are_read_whole_however_short_each_read(tmp_path, vocab, monkeypatch):
    """Linux returns at most 2 GiB a read: a slice of a corpus beyond that (save_original's, on a billion
    tokens) came back short and crashed. Reads cut to 7 bytes here stand for it; a truncated file is named."""
    (tmp_path / "x.txt").write_text("the cat sat\non the mat\n" * 50, encoding="utf-8")
    binarized.binarize(tmp_path / "x.txt", Dictionary.read_vocab(vocab), tmp_path / "x.pth", threads=1)
    whole = np.asarray(load_binarized(tmp_path / "x.pth").sentences).copy()
    preadv = os.preadv
    with monkeypatch.context() as m:
        m.setattr(os, "preadv", lambda fd, buffers, offset: preadv(fd, [buffers[0][:7]], offset))
        assert np.array_equal(np.asarray(load_binarized(tmp_path / "x.pth").sentences), whole)
    assert sorted(set(whole.tolist())) == [1, *range(14, 19)]
    sentences = load_binarized(tmp_path / "x.pth").sentences
    os.truncate(tmp_path / "x.pth", binarized.DATA_OFFSET + 10)
    with pytest.raises(DataError, match=f"x.pth: the file ends before its {len(whole)} tokens"):
        sentences[:]


def test_a_model_checkpoint_given_as_data_is_named_so(tmp_path):
    """A checkpoint in place of a corpus (a --data_path of the wrong folder) is told apart from a corrupt file."""
    path = tmp_path / "train.en.pth"
    torch.save({"model": {"embeddings.weight": torch.zeros(2, 2)}, "params": {}}, path)
    with pytest.raises(DataError, match="train.en.pth: holds tensors \\(a model checkpoint\\?\\), not a binarized "
                                        "corpus"):
        load_binarized(path)
