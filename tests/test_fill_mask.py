"""tools/fill_mask.py: masked-word predictions of a checkpoint, against transformers' XLMWithLMHeadModel
forward on the input written out by the MLM/TLM rule."""
import math
import sys

import pytest
import torch

from conftest import ROOT, load_script, python, random_hf_xlm
from xlm.convert import main as convert
from xlm.data.bpe import learn_bpe, write_codes
from xlm.data.dictionary import SPECIAL_WORDS
from xlm.fileio import DataError

fill_mask = load_script(ROOT / "tools" / "fill_mask.py")

EOS, MASK = 1, 5
WORDS = SPECIAL_WORDS + ["the", "file", "open@@", "ed", "could", "not", "be", ".", "le", "fichier", "ouvrir",
                         "impossible", "d'", "a", "été", "ouvert", "is", "missing", "est", "manquant"]
SENTENCE_WORDS = [w for w in WORDS[14:] if not w.endswith("@@")] + ["opened"]
LANG2ID = {"en": 0, "fr": 1}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A random HF XLMWithLMHeadModel with two languages, and the same converted to an xlm checkpoint."""
    folder = tmp_path_factory.mktemp("hf")
    hf = random_hf_xlm(folder, WORDS, bias_scale=0.3, n_langs=2, lang2id=LANG2ID, use_lang_emb=True)
    convert(["from-hf", str(folder), str(folder / "model.pth")])
    # BPE codes learned on every word but 'opened', plus 'openx' and 'ed': 'opened' becomes 'open@@ ed'
    (folder / "words").write_text(" ".join((SENTENCE_WORDS[:-1] + ["openx"]) * 3) + "\n")
    with open(folder / "codes", "w") as f:
        write_codes([c for c in learn_bpe([folder / "words"], 200) if c[2] > 0], f)
    return hf, folder


def oracle(hf, tokens, lang, context=None, context_lang=None):
    """HF's log-probabilities at the mask tokens of `</s> tokens </s>` (MASK for None), or of the TLM pair
    `</s> context </s> </s> tokens </s>` with positions restarting at the second side and each side's language."""
    ids = [EOS] + [MASK if t is None else WORDS.index(t) for t in tokens] + [EOS]
    positions, langs = list(range(len(ids))), [LANG2ID[lang]] * len(ids)
    if context is not None:
        ctx = [EOS] + [WORDS.index(t) for t in context] + [EOS]
        ids, positions = ctx + ids, list(range(len(ctx))) + positions
        langs = [LANG2ID[context_lang]] * len(ctx) + langs
    ids = torch.tensor([ids])
    with torch.no_grad():
        logits = hf(ids, langs=torch.tensor([langs]), position_ids=torch.tensor([positions])).logits[0]
    return logits[ids[0] == MASK].log_softmax(-1)


def test_tlm_input_is_the_training_layout():
    ids, ctx = [20, 5, 21], [16, 17, 18, 19]
    x, lengths, positions, langs = fill_mask.model_input(ids, 1, ctx, 0, context_first=True)
    assert x.tolist() == [[EOS] + ctx + [EOS, EOS] + ids + [EOS]]
    assert positions.tolist() == [list(range(6)) + list(range(5))]
    assert langs.tolist() == [[0] * 6 + [1] * 5] and lengths.tolist() == [11]
    x, _, positions, langs = fill_mask.model_input(ids, 1, ctx, 0, context_first=False)
    assert x.tolist() == [[EOS] + ids + [EOS, EOS] + ctx + [EOS]]
    assert positions.tolist() == [list(range(5)) + list(range(6))] and langs.tolist() == [[1] * 5 + [0] * 6]


def test_predictions_equal_the_hf_forward(model):
    hf, folder = model
    filler = fill_mask.MaskFiller(folder / "model.pth", codes=folder / "codes")
    words = fill_mask.words_of(filler.encoder, "the file could not be <mask> .", "en")
    assert words == [["the"], ["file"], ["could"], ["not"], ["be"], [None], ["."]]
    words = fill_mask.words_of(filler.encoder, "the file could not be opened .", "en")
    tokens, flags = fill_mask.mask_words(words, [1, -2])
    assert [t for t, f in zip(tokens, flags) if f] == ["file", "open@@", "ed"]  # every subword of a masked word
    masked = [None if f else t for t, f in zip(tokens, flags)]
    assert torch.allclose(filler.predict(tokens, flags, "en"), oracle(hf, masked, "en"), atol=1e-5)
    fr = "impossible d' ouvrir le fichier".split()
    context = "could not be opened .".replace("opened", "open@@ ed").split()
    tlm = filler.predict(fr, [False, False, True, False, False], "fr", context, "en")
    expected = oracle(hf, [None if t == "ouvrir" else t for t in fr], "fr", context, "en")
    assert torch.allclose(tlm, expected, atol=1e-5)
    alone = filler.predict(fr, [False, False, True, False, False], "fr")
    assert not torch.allclose(tlm, alone, atol=1e-3)  # the translation changes the prediction


def test_command_line_prints_the_oracle_top_k(model):
    hf, folder = model
    out = python(ROOT / "tools" / "fill_mask.py", folder / "model.pth", "--codes", folder / "codes", "--lang", "fr",
                 "--mask", "2", "--top_k", "3", "--translation", "the file could not be opened .",
                 "--translation_lang", "en", "impossible d'ouvrir le fichier").stdout.splitlines()
    assert out[0] == "fr: impossible d' [ouvrir] le fichier" and out[1] == "en: the file could not be open@@ ed ."
    fr = "impossible d' <mask> le fichier".split()
    context = "the file could not be open@@ ed .".split()
    for line, expected in zip(out[2:], (oracle(hf, [None if t == "<mask>" else t for t in fr], "fr"),
                                        oracle(hf, [None if t == "<mask>" else t for t in fr], "fr", context, "en"))):
        top = expected[0].topk(3)
        assert line.split("|")[1].split()[::2] == [WORDS[i] for i in top.indices]
        rank = int((expected[0] > expected[0][WORDS.index("ouvrir")]).sum()) + 1
        assert f"rank {rank} " in line
    assert "alone" in out[2] and "with en" in out[3]


def test_bad_mask_index_is_one_line(model, tmp_path, monkeypatch):
    """The first mistake through the command (one error line), the others through `main` in this process."""
    _, folder = model
    proc = python(ROOT / "tools" / "fill_mask.py", folder / "model.pth", "--lang", "en", "--mask", "9", "the file",
                  check=False)
    assert proc.returncode != 0 and proc.stderr.strip() == "error: --mask 9: the sentence has 2 words (the file)"
    (tmp_path / "blank").write_text("\n\n")
    with open(tmp_path / "blank", encoding="utf-8") as f, pytest.raises(DataError) as raised:
        monkeypatch.setattr(sys, "stdin", f)
        fill_mask.main([str(folder / "model.pth"), "--lang", "en", "--mask", "0"])
    assert str(raised.value) == "no sentence: give it as an argument or on standard input"
    with pytest.raises(DataError, match="^--translation is empty$"):
        fill_mask.main([str(folder / "model.pth"), "--lang", "fr", "--mask", "0", "le fichier", "--translation", " ",
                        "--translation_lang", "en"])


def test_translations_file_sums_up_alone_and_with_translation(model, tmp_path):
    """--translations: each sentence with its own line; the summary counts and scores the truths as the
    oracle does, alone and with the translation."""
    hf, folder = model
    fr = ["impossible d'ouvrir le fichier", "le fichier est manquant"]
    en = ["the file could not be opened .", "the file is missing ."]
    (tmp_path / "en").write_text("\n".join(en) + "\n")
    out = python(ROOT / "tools" / "fill_mask.py", folder / "model.pth", "--codes", folder / "codes", "--lang", "fr",
                 "--mask", "1", "--translations", tmp_path / "en", "--translation_lang", "en", "--summary",
                 input="\n".join(fr) + "\n").stdout.splitlines()
    scores = {"alone": [], "with": []}
    for sentence, translation in zip(fr, en):
        words, translation = sentence.replace("d'", "d' ").split(), translation.replace("opened", "open@@ ed")
        truth = WORDS.index(words[1])
        masked = [None if i == 1 else w for i, w in enumerate(words)]
        for name, log_probs in (("alone", oracle(hf, masked, "fr")),
                                ("with", oracle(hf, masked, "fr", translation.split(), "en"))):
            scores[name].append((float(log_probs[0, truth]), int(log_probs[0].argmax()) == truth))
    expected = [f"top-1 {sum(t for _, t in s)}/2, perplexity {math.exp(-sum(lp for lp, _ in s) / 2):.1f}"
                for s in scores.values()]
    assert out == [f"2 sentences, masked tokens of known truth: alone: {expected[0]}; with en: {expected[1]}"]
    (tmp_path / "short").write_text(en[0] + "\n")
    proc = python(ROOT / "tools" / "fill_mask.py", folder / "model.pth", "--lang", "fr", "--mask", "1",
                  "--translations", tmp_path / "short", "--translation_lang", "en", input="\n".join(fr) + "\n",
                  check=False)
    assert proc.returncode != 0 and proc.stderr.strip() == f"error: --translations {tmp_path / 'short'}: " \
                                                           "1 lines for 2 sentences"
