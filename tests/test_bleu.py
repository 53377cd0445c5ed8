import math
from collections import Counter

import pytest

from conftest import ROOT, python
from xlm.data.bpe import remove_bpe
from xlm.evaluation.bleu import detokenized_bleu, reference_for_bleu, tokenized_bleu

HYPS = ["the cat sat on the mat .", "there is a dog in the garden", "he reads a book ."]
REFS = ["the cat is sitting on the mat .", "a dog is in the garden", "he is reading a book ."]


def multi_bleu_by_hand(hyps, refs):
    """multi-bleu.perl's formula written out: clipped n-gram precisions over the corpus, geometric mean,
    brevity penalty exp(1 - r/c) when the hypotheses are shorter."""
    correct, total, hyp_len, ref_len = [0] * 4, [0] * 4, 0, 0
    for h, r in zip(hyps, refs):
        h, r = h.split(), r.split()
        hyp_len, ref_len = hyp_len + len(h), ref_len + len(r)
        for n in range(1, 5):
            hn = Counter(tuple(h[i:i + n]) for i in range(len(h) - n + 1))
            rn = Counter(tuple(r[i:i + n]) for i in range(len(r) - n + 1))
            correct[n - 1] += sum(min(c, rn[g]) for g, c in hn.items())
            total[n - 1] += max(len(h) - n + 1, 0)
    if min(correct) == 0:
        return 0.0
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return 100 * bp * math.exp(sum(math.log(c / t) for c, t in zip(correct, total)) / 4)


def test_tokenized_bleu_is_multi_bleu():
    expected = multi_bleu_by_hand(HYPS, REFS)
    assert 20 < expected < 60
    assert tokenized_bleu(HYPS, REFS) == pytest.approx(expected, abs=1e-9)
    assert tokenized_bleu(REFS, REFS) == pytest.approx(100.0)
    assert tokenized_bleu(["a b c"], ["d e f"]) == 0.0  # no smoothing, as multi-bleu.perl
    assert tokenized_bleu(["The cat"], ["the cat"]) < 100  # case-sensitive
    # hypotheses without a word: multi-bleu.perl divides by zero, and the original logs -1
    assert tokenized_bleu(["", " "], ["the cat", "a dog"]) == -1.0


def test_detokenized_bleu_has_a_signature():
    score, signature = detokenized_bleu(HYPS, REFS, "en")
    assert 0 < score < 100 and "tok:13a" in signature and "smooth:exp" in signature


def test_references_and_hypotheses_like_the_originals():
    """The original's reference files write <unk> as <<unk>>, its hypothesis files keep <unk>: an unknown word
    never counts as a match (xlm wrote both as <<unk>>, which scored 100 on the lines below)."""
    assert reference_for_bleu("the ca@@ t sat on <unk> mat@@") == "the cat sat on <<unk>> mat"
    refs = [reference_for_bleu(line) for line in ("a <unk> b c d", "<unk> e f g h")]
    assert tokenized_bleu(["a <unk> b c d", "<unk> e f g h"], refs) == pytest.approx(
        multi_bleu_by_hand(["a <unk> b c d", "<unk> e f g h"], refs))
    assert multi_bleu_by_hand(["a <unk> b c d", "<unk> e f g h"], refs) < 60


def test_bleu_tool_scores_translate_outputs(tmp_path):
    """tools/bleu.py on a BPE'd translation file: BPE removed as the original's hypothesis files have it (<unk>
    kept), then multi-bleu's score (to its two decimals) and sacrebleu's detokenized one; a line
    count that differs is one error naming both files."""
    bpe_hyps = ["the ca@@ t sat on the mat .", "there is a dog in the <unk>", "he reads a bo@@ ok ."]
    refs = ["the cat is sitting on the mat .", "a dog is in the <<unk>>", "he is reading a book ."]
    (tmp_path / "hyp").write_text("\n".join(bpe_hyps) + "\n", encoding="utf-8")
    (tmp_path / "ref").write_text("\n".join(refs) + "\n", encoding="utf-8")
    out = python(ROOT / "tools" / "bleu.py", tmp_path / "hyp", tmp_path / "ref", "--lang", "en").stdout.splitlines()
    hyps = [remove_bpe(h) for h in bpe_hyps]
    assert out[0].startswith(f"BLEU = {multi_bleu_by_hand(hyps, refs):.2f} (tokenized")
    score, signature = detokenized_bleu(hyps, refs, "en")
    assert out[1] == f"BLEU = {score:.2f} (detokenized, sacrebleu {signature})"
    (tmp_path / "ref").write_text("\n".join(refs[:2]) + "\n", encoding="utf-8")
    failed = python(ROOT / "tools" / "bleu.py", tmp_path / "hyp", tmp_path / "ref", check=False)
    assert failed.returncode == 1
    assert failed.stderr.strip() == f"error: {tmp_path / 'hyp'}: 3 lines, but {tmp_path / 'ref'} has 2"


def test_bleu_tool_on_lines_without_a_word(tmp_path):
    """Where multi-bleu.perl fails (the original's evaluation logs -1): hypotheses without a word score 0, as
    sacrebleu scores them, with a warning; references without a word are one error naming the file."""
    (tmp_path / "empty").write_text("\n\n", encoding="utf-8")
    (tmp_path / "ref").write_text("the cat\na dog\n", encoding="utf-8")
    proc = python(ROOT / "tools" / "bleu.py", tmp_path / "empty", tmp_path / "ref", "--lang", "en")
    assert [line.split(" (")[0] for line in proc.stdout.splitlines()] == ["BLEU = 0.00", "BLEU = 0.00"]
    assert proc.stderr.startswith(f"warning: {tmp_path / 'empty'}: no word in any of its 2 lines"), proc.stderr
    for hypotheses in ("empty", "ref"):
        failed = python(ROOT / "tools" / "bleu.py", tmp_path / hypotheses, tmp_path / "empty", check=False)
        assert failed.returncode == 1 and failed.stdout == ""
        assert failed.stderr == f"error: {tmp_path / 'empty'}: no word in any of its 2 lines, nothing to score " \
                                "against\n"


def test_runs_of_many_languages_evaluate_subsets_and_write_each_directions_own_references(tmp_path):
    """Runs of more than 30 languages evaluate 1,500 valid pairs from the 15 XNLI languages and 600 from
    the others, by the source language (the original's sizes). The original took both directions'
    references by the pair's first language; xlm writes each direction's from the sentences it translates."""
    from types import SimpleNamespace

    from xlm.data.binarized import binarize
    from xlm.data.dictionary import SPECIAL_WORDS, Dictionary
    from xlm.evaluation.lm import eval_subset
    from xlm.evaluation.mt import write_references
    langs = ["en", "pt"] + [f"x{i}" for i in range(29)]
    params = SimpleNamespace(langs=langs, batch_size=32)
    assert [eval_subset(params, s, lg) for s, lg in (("valid", "en"), ("valid", "pt"), ("test", "en"))] == \
        [(5, 1500), (10, 600), (10, 600)]
    assert eval_subset(SimpleNamespace(langs=langs[:6]), "test", "en") == (10, 300)
    assert eval_subset(SimpleNamespace(langs=langs[:5]), "valid", "en") == (1, None)
    words = [f"w{i}" for i in range(40)]
    dico = Dictionary.from_words([(w, 0) for w in SPECIAL_WORDS] + [(w, 40 - i) for i, w in enumerate(words)])
    corpora = {}
    for lg in ("en", "pt"):
        path = tmp_path / f"valid.en-pt.{lg}"
        path.write_text("".join(" ".join(words[(i + j) % 40] for j in range(1 + i % 7)) + "\n" for i in range(1600)))
        corpora[lg] = binarize(path, dico, tmp_path / f"{path.name}.pth", threads=1)
    data = SimpleNamespace(para={("en", "pt"): {"valid": (corpora["en"], corpora["pt"]),
                                                "test": (corpora["en"], corpora["pt"])}}, dico=dico, n_words=len(dico))
    write_references(data, params, str(tmp_path))
    lines = {name: (tmp_path / "hypotheses" / f"ref.{name}.txt").read_text().splitlines()
             for name in ("en-pt.valid", "pt-en.valid", "en-pt.test")}
    assert [len(v) for v in lines.values()] == [1500, 600, 600]
    # pt->en's references are the English sides of the first 600 pairs, the sentences it translates
    assert sorted(lines["pt-en.valid"]) == sorted(" ".join(words[(i + j) % 40] for j in range(1 + i % 7))
                                                  for i in range(600))
