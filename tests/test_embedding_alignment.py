"""tools/embedding_alignment.py on checkpoints with known embeddings; the oracle is numpy by hand."""
import json

import numpy as np
import pytest
import torch

from conftest import ROOT, load_script, main_in_process, python
from xlm.data.dictionary import SPECIAL_WORDS, Dictionary
from xlm.fileio import DataError
from xlm.model.checkpoint import checkpoint_payload, save_checkpoint
from xlm.model.transformer import TransformerConfig, TransformerModel

SCRIPT = ROOT / "tools" / "embedding_alignment.py"
SRC = ["cat", "dog", "red", "run", "big"]
TGT = ["chat", "chien", "rouge", "courir", "grand"]
DIM = 4
embedding_alignment = load_script(SCRIPT)


def align(capsys, *args):
    return main_in_process(embedding_alignment.main, capsys, *args)


def make_checkpoint(path, words, vectors, encoder_decoder=False):
    dico = Dictionary.from_words([(w, 0) for w in SPECIAL_WORDS] + [(w, 5) for w in words])
    config = TransformerConfig(n_words=len(dico), emb_dim=DIM, n_layers=1, n_heads=2)
    models = [TransformerModel(config), TransformerModel(TransformerConfig(**{**config.__dict__, "is_decoder": True}))]
    with torch.no_grad():
        for w, v in zip(words, vectors):
            models[0].embeddings.weight[dico.word2id[w]] = torch.tensor(v)
    params = {"emb_dim": DIM, "n_layers": 1, "n_heads": 2}
    if encoder_decoder:
        payload = checkpoint_payload(dico, params, encoder=models[0], decoder=models[1])
        payload["encoder"] = {f"module.{k}": v for k, v in payload["encoder"].items()}  # as DDP saves it
    else:
        payload = checkpoint_payload(dico, params, model=models[0])
    save_checkpoint(payload, str(path))


def oracle(src, tgt, gold):
    """Metrics by hand: rows i of src/tgt are pair i; retrieval among all tgt rows."""
    cos = [s @ t / np.linalg.norm(s) / np.linalg.norm(t) for s, t in zip(src, tgt)]
    l2 = [np.linalg.norm(s - t) for s, t in zip(src, tgt)]
    hits = [gold[i] == int(np.argmax([src[i] @ t / np.linalg.norm(t) for t in tgt])) for i in range(len(src))]
    return np.mean(cos), np.mean(l2), np.mean(hits)


def test_metrics_on_known_embeddings_one_checkpoint_and_two(tmp_path, capsys):
    rng = np.random.default_rng(0)
    src = rng.normal(size=(5, DIM)).astype(np.float32)
    tgt = (src + rng.normal(scale=0.6, size=(5, DIM))).astype(np.float32)
    tgt[3] = -src[3]  # 'run' -> 'courir' points away: not retrieved
    make_checkpoint(tmp_path / "joint.pth", SRC + TGT, np.concatenate([src, tgt]), encoder_decoder=True)
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("".join(f"{s} {t}\n" for s, t in zip(SRC, TGT)) + "cat zebra\nunicorn chat\n")
    proc = python(SCRIPT, tmp_path / "joint.pth", lexicon)  # once as a user runs it
    result = json.loads(proc.stdout)
    cos, l2, p1 = oracle(src, tgt, gold=list(range(5)))
    assert p1 < 1
    assert abs(result["cosine"] - cos) < 1e-5 and abs(result["l2"] - l2) < 1e-4
    assert result["p_at_1"] == p1 and result["pairs"] == 5 and result["pairs_skipped"] == 2
    assert result["missing_words"] == ["unicorn", "zebra"] and "zebra" in proc.stderr
    # the target side from a second model (each language alone)
    make_checkpoint(tmp_path / "src.pth", SRC, src)
    other = rng.normal(size=(5, DIM)).astype(np.float32)
    make_checkpoint(tmp_path / "tgt.pth", TGT, other)
    result = json.loads(align(capsys, tmp_path / "src.pth", lexicon, "--tgt_checkpoint", tmp_path / "tgt.pth").stdout)
    cos, l2, p1 = oracle(src, other, gold=list(range(5)))
    assert abs(result["cosine"] - cos) < 1e-5 and abs(result["l2"] - l2) < 1e-4 and result["p_at_1"] == p1


def test_bpe_split_words_are_the_mean_of_their_subwords(tmp_path, capsys):
    vec = np.eye(DIM, dtype=np.float32)[:3] + 0.5
    # 'catdog' is not in the vocabulary; the codes split it into 'cat@@ dog'
    make_checkpoint(tmp_path / "m.pth", ["cat@@", "dog", "chat"], vec)
    codes = tmp_path / "codes"
    codes.write_text("c a 9\nca t 9\nd o 9\ndo g</w> 9\n")
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("catdog chat\n")
    result = json.loads(align(capsys, tmp_path / "m.pth", lexicon, "--codes", codes).stdout)
    mean = vec[:2].mean(axis=0)
    assert abs(result["l2"] - np.linalg.norm(mean - vec[2])) < 1e-5 and result["pairs"] == 1
    with pytest.raises(DataError, match="no translation pair has both words"):
        align(capsys, tmp_path / "m.pth", lexicon)
    lexicon.write_text("cat dog chat\n")
    with pytest.raises(DataError, match=f"{lexicon}:1: expected 'src_word tgt_word'"):
        align(capsys, tmp_path / "m.pth", lexicon)
