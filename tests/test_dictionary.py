import pytest

from xlm.data.dictionary import EOS_INDEX, MASK_INDEX, PAD_INDEX, SPECIAL_WORDS, UNK_INDEX, Dictionary
from xlm.fileio import DataError


def write(tmp_path, text, name="vocab", mode="w"):
    path = tmp_path / name
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_special_tokens_and_ids(tmp_path):
    dico = Dictionary.read_vocab(write(tmp_path, "the 10\nof 7\ncat 7\n"))
    assert [dico[i] for i in range(14)] == SPECIAL_WORDS
    assert SPECIAL_WORDS[:4] == ["<s>", "</s>", "<pad>", "<unk>"] and dico[MASK_INDEX] == "<special1>"
    assert (dico.eos_index, dico.pad_index, dico.unk_index) == (EOS_INDEX, PAD_INDEX, UNK_INDEX) == (1, 2, 3)
    assert dico.index("the") == 14 and dico.index("cat") == 16 and dico.index("dog") == UNK_INDEX
    assert len(dico) == 17 and dico.counts["of"] == 7 and dico.counts["<s>"] == 0
    # the instance attributes are the original's, so pickles are exchangeable with the original code
    assert set(vars(dico)) == {"id2word", "word2id", "counts", "bos_index", "eos_index", "pad_index", "unk_index"}


def test_lines_with_unicode_whitespace_are_skipped_like_the_original(tmp_path):
    dico = Dictionary.read_vocab(write(tmp_path, "a 9\nb\u00a0c 8\nd\u2028 7\ne 6\n"))
    assert [dico[i] for i in range(14, len(dico))] == ["a", "e"]


def test_line_ends_are_the_originals(tmp_path):
    dico = Dictionary.read_vocab(write(tmp_path, "a 9\r\nb 8\rc 7\n"))
    assert [dico[i] for i in range(14, len(dico))] == ["a", "b", "c"]


def test_special_tokens_in_the_file_are_skipped_like_the_original(tmp_path, caplog):
    # fastBPE's getvocab lists `<unk>` when the corpus has it literally (as some corpora do)
    dico = Dictionary.read_vocab(write(tmp_path, "<unk> 9\na 8\n</s> 7\nb 6\n"))
    assert [dico[i] for i in range(14, len(dico))] == ["a", "b"] and dico.index("<unk>") == UNK_INDEX
    assert "skipped the lines of <unk>, </s>" in caplog.text


def test_max_vocab_and_min_count(tmp_path):
    dico = Dictionary.read_vocab(write(tmp_path, "a 9\nb 5\nc 3\nd 1\n"))
    dico.min_count(3)
    assert len(dico) == 17 and "d" not in dico
    dico.max_vocab(15)
    assert len(dico) == 15 and dico[14] == "a" and "b" not in dico


@pytest.mark.parametrize("text, message", [
    ("a 5\nb\n", "vocab:2: expected 'WORD COUNT'"),
    ("a 5\nb x\n", "vocab:2: expected 'WORD COUNT'"),
    ("a 5\nb 4 4\n", "vocab:2: expected 'WORD COUNT'"),
    ("a 5\nb 4\na 3\n", "vocab:3: duplicate word 'a'$"),
    # a tab left in a word by fastBPE's getvocab (it splits on spaces alone): the line shows it
    ("a 5\n@@ 4\n\t@@ 3\n", r"vocab:3: duplicate word '@@' \(the line is '\\t@@ 3'\)"),
    # str.isdigit() takes a superscript two, which int() refuses
    ("a 5\nb \u00b2\n", "vocab:2: expected 'WORD COUNT'"),
    ("a 5\nb 6\n", "vocab:2: counts must not increase"),
    # the original's bound: its check of the counts starts from 1e18
    ("a 1000000000000000001\nb 6\n", "vocab:1: count 1000000000000000001 is larger than 10\\^18"),
    # the original reads a lone carriage return as a line's end: 'b' and ' 4', not the word b
    ("a 5\nb\r 4\nc 3\n", "vocab:2: expected 'WORD COUNT', got 'b'"),
    ("", "vocab: file is empty"),
])
def test_bad_vocabularies_name_file_and_line(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        Dictionary.read_vocab(write(tmp_path, text))


def test_bad_utf8_and_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"vocab:2: invalid UTF-8 \(invalid start byte at byte 1 of the line\)"):
        Dictionary.read_vocab(write(tmp_path, b"a 5\n\xff\xfe 3\n", mode="wb"))
    with pytest.raises(DataError, match="no such file"):
        Dictionary.read_vocab(tmp_path / "missing")


def test_equality_ignores_counts(tmp_path):
    a = Dictionary.read_vocab(write(tmp_path, "x 5\ny 4\n", "a"))
    b = Dictionary.read_vocab(write(tmp_path, "x 50\ny 40\n", "b"))
    c = Dictionary.read_vocab(write(tmp_path, "y 5\nx 4\n", "c"))
    assert a == b and a != c
