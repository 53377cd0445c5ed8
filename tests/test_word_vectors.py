"""--reload_emb: pretrained word vectors (.vec text, fastText .bin) into a new model's embeddings."""
import logging
import re
import sys

import numpy as np
import pytest
import torch

from conftest import python
from xlm.data.dictionary import SPECIAL_WORDS, Dictionary
from xlm.fileio import DataError
from xlm.model.checkpoint import read_checkpoint
from xlm.model.transformer import TransformerConfig, TransformerModel
from xlm.model.word_vectors import reload_word_vectors
from xlm.train.options import parse_params

DIM = 8
WORDS = ["the", "cat", "sat", "on", "mat", "dog"]


def write_vec(path, rows, header=None):
    """rows: (word, values) pairs, written as fastText writes them (a space after the last value)."""
    lines = [header if header is not None else f"{len(rows)} {DIM}"]
    lines += [f"{w} " + "".join(f"{v} " for v in values) for w, values in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def vectors(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, DIM)).round(4).astype(np.float32)


@pytest.fixture
def dico():
    return Dictionary.from_words([(w, 0) for w in SPECIAL_WORDS] + [(w, 10 - i) for i, w in enumerate(WORDS)])


def model(dico, **kw):
    torch.manual_seed(0)
    return TransformerModel(TransformerConfig(n_words=len(dico), emb_dim=DIM, n_layers=1, n_heads=2, **kw))


def test_known_words_get_their_vectors_and_the_others_keep_theirs(dico, tmp_path, caplog):
    vec = vectors(5)
    # 'cat' twice (the first counts, as the original), '</s>' as fastText writes it, two words not in the dictionary
    rows = [("cat", vec[0]), ("zebra", vec[1]), ("</s>", vec[2]), ("cat", vec[3]), ("mat", vec[4]), ("Cat", vec[3])]
    path = write_vec(tmp_path / "emb.vec", rows)
    untied, tied, asm = (model(dico, share_inout_emb=False), model(dico),
                         model(dico, share_inout_emb=False, asm=True, asm_cutoffs=(12, 16), asm_div_value=2))
    before = {name: {k: v.clone() for k, v in m.state_dict().items()}
              for name, m in (("untied", untied), ("tied", tied), ("asm", asm))}
    logger = logging.getLogger("test_word_vectors")
    with caplog.at_level(logging.INFO, logger="test_word_vectors"):
        reload_word_vectors([untied, tied, asm], dico, str(path), logger)
    assert f"Pretrained 3/{len(dico)} words" in caplog.text and "repeated words: 1 lines skipped" in caplog.text
    expected = {dico.word2id["cat"]: vec[0], dico.word2id["</s>"]: vec[2], dico.word2id["mat"]: vec[4]}
    for name, m in (("untied", untied), ("tied", tied), ("asm", asm)):
        new, old = m.state_dict(), before[name]
        matrices = ["embeddings.weight"] + (["pred_layer.proj.weight"] if name == "untied" else [])
        for key in matrices:
            for i in range(len(dico)):
                want = torch.from_numpy(expected[i]) if i in expected else old[key][i]
                assert torch.equal(new[key][i], want), (name, key, dico[i])
        # nothing else moves (the tied output projection is the embedding matrix itself)
        for key in old:
            if key not in matrices and not (name == "tied" and key == "pred_layer.proj.weight"):
                assert torch.equal(new[key], old[key]), (name, key)
    assert tied.pred_layer.proj.weight is tied.embeddings.weight


@pytest.mark.parametrize("content, message", [
    ("cat 1 2 3 4 5 6 7 8\n", "line 1: expected the header 'N dim' of a .vec file, got 'cat 1 2 3'"),
    ("1 16\ncat " + "0 " * 16 + "\n", "line 1: vectors of dimension 16, the model's --emb_dim is 8"),
    # no vector to copy (the original stopped on an empty np.concatenate; xlm trained on, with a warning)
    ("2 8\nGato " + "0 " * 8 + "\ncat 1 2\n", "no valid vector of a word of the"),
    ("0 8\n", "no valid vector of a word of the"),
])
def test_a_bad_file_is_one_clear_error(dico, tmp_path, content, message):
    path = tmp_path / "bad.vec"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=f"^(--reload_emb )?{re.escape(str(path))}.*{re.escape(message)}"):
        reload_word_vectors([model(dico)], dico, str(path), logging.getLogger("test"))


def test_bad_lines_are_skipped_and_a_cut_file_is_read_as_the_original_reads_them(dico, tmp_path, caplog):
    """Vectors of other lengths or with a value that is not a finite number (the original loads nan) are
    skipped with one warning, and a header counting more vectors than the file has (a file cut with
    `head -n`) is warned of: the other lines load, as in the original. A later valid line of a word whose
    first was bad counts."""
    vec = vectors(3)
    path = tmp_path / "cut.vec"
    lines = ["2000000 8", "dog " + " ".join(map(str, vec[0])), "cat 1 2 3 x 5 6 7 8", "mat 1 2 3 4 5 6 7",
             "mat nan 2 3 4 5 6 7 inf", "cat " + " ".join(map(str, vec[1])), "sat " + " ".join(map(str, vec[2]))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    m, logger = model(dico), logging.getLogger("test_word_vectors")
    with caplog.at_level(logging.INFO, logger="test_word_vectors"):
        reload_word_vectors([m], dico, str(path), logger)
    assert f"{path}: 3 lines skipped, their vectors not 8 finite numbers (the first: line 3)" in caplog.text
    assert f"{path}: the header announces 2000000 vectors, the file has 6" in caplog.text
    assert f"Pretrained 3/{len(dico)} words" in caplog.text
    for word, v in (("dog", vec[0]), ("cat", vec[1]), ("sat", vec[2])):
        assert torch.equal(m.embeddings.weight[dico.word2id[word]], torch.from_numpy(v))


def test_a_missing_file_is_refused_with_the_flags(tmp_path):
    with pytest.raises(DataError, match="--reload_emb: missing.vec is not a file"):
        parse_params(["--exp_name", "x", "--lgs", "en", "--mlm_steps", "en", "--data_path", str(tmp_path),
                      "--reload_emb", "missing.vec"])


def test_a_fasttext_binary_needs_the_fasttext_package(dico, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "fasttext", None)  # as if not installed
    path = tmp_path / "cc.en.300.bin"
    path.write_bytes(b"\x00" * 16)
    with pytest.raises(DataError, match="needs the fasttext package .*pip install fasttext.* or give the .vec"):
        reload_word_vectors([model(dico)], dico, str(path), logging.getLogger("test"))


def test_train_py_starts_encoder_and_decoder_from_the_vectors(small_sample, tmp_path):
    words = list(dict.fromkeys((small_sample / "valid.en").read_text(encoding="utf-8").split()))[:40]
    vec = vectors(len(words), seed=1) * 4  # far from the initialisation (std 32 ** -0.5)
    path = write_vec(tmp_path / "en.vec", list(zip(words, vec)) + [("not-a-word-of-the-vocabulary", vec[0])])
    python("train.py", "--exp_name", "emb", "--exp_id", "mt", "--dump_path", tmp_path, "--data_path", small_sample,
           "--lgs", "en-fr", "--encoder_only", "false", "--mt_steps", "en-fr", "--emb_dim", DIM, "--n_layers", 1,
           "--n_heads", 2, "--batch_size", 4, "--max_len", 30, "--epoch_size", 8, "--max_epoch", 1,
           "--optimizer", "adam,lr=0.0001", "--reload_emb", path)
    dump = tmp_path / "emb" / "mt"
    assert f"Pretrained {len(words)}/" in (dump / "train.log").read_text()
    ckpt = read_checkpoint(dump / "checkpoint.pth")
    rows = [ckpt["dico_word2id"][w] for w in words]
    for name in ("encoder", "decoder"):
        emb = ckpt[name]["embeddings.weight"]
        # two Adam steps of 1e-4 since the copy
        torch.testing.assert_close(emb[rows], torch.from_numpy(vec), atol=3e-4, rtol=0)
        other = next(i for i in range(len(SPECIAL_WORDS), len(emb)) if i not in rows)
        assert (emb[other].abs() < 1).all()  # a row of the initialisation, not a vector
