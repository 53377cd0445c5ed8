import subprocess
import sys
import unicodedata

import pytest
from sacremoses import MosesPunctNormalizer, MosesTokenizer

from conftest import ROOT, SAMPLE, python, run
from xlm.data import tokenize as tok
from xlm.fileio import DataError


@pytest.mark.parametrize("lang, path", [("en", "mono/train.en"), ("fr", "mono/train.fr"), ("de", "mono/train.de")])
def test_tokenize_sh_equals_sacremoses(lang, path):
    with open(SAMPLE / path, encoding="utf-8") as f:
        lines = [next(f).rstrip("\n") for _ in range(1500)]
    lines += ["Ça coûte 3,50 € – «vraiment» ?", "He said: \u201cit\u2019s <b>&amp; fine\u201d\u00a0!", "tab\tand\u0007bell"]
    normalizer = MosesPunctNormalizer(lang=lang, pre_replace_unicode_punct=True, post_remove_control_chars=True)
    tokenizer = MosesTokenizer(lang=lang)
    expected = [tokenizer.tokenize(normalizer.normalize(s), escape=False, return_str=True) for s in lines]
    out = run(["bash", "tools/tokenize.sh", lang], input="\n".join(lines) + "\n").stdout
    assert out.split("\n")[:-1] == expected
    assert "&amp;" not in expected[-2] and "&quot;" not in out  # no XML escaping, as the original's -no-escape


def test_lowercase_and_remove_accent_matches_original_rules():
    # Latin accents, Arabic harakat (category Mn) and the NFD form of Hangul, as the original does
    assert tok.lowercase_and_remove_accent("Élève À Noël  \n") == "eleve a noel"
    assert tok.lowercase_and_remove_accent("كَتَبَ") == "كتب"
    assert tok.lowercase_and_remove_accent("한") == unicodedata.normalize("NFD", "한")
    out = python("tools/lowercase_and_remove_accent.py", input="Ça VA\nÖl\n").stdout
    assert out == "ca va\nol\n"


def test_missing_segmenter_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "jieba", None)
    tok._segmenter.cache_clear()
    with pytest.raises(DataError, match=r"pip install 'xlm\[zh\]'"):
        tok.tokenize("你好", "zh")


def test_bad_utf8_names_the_line():
    proc = subprocess.run(["bash", "tools/tokenize.sh", "en"], input=b"fine\nalso fine\nbad \xff byte\n",
                          capture_output=True, cwd=ROOT)
    assert proc.returncode != 0
    assert b"<stdin>:3: invalid UTF-8" in proc.stderr
