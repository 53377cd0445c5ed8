"""The embedding API: raw sentences -> the same ids as the command-line pipeline -> sentence vectors."""
import pytest
import torch

from conftest import SAMPLE, python, run
from xlm.data.dictionary import Dictionary
from xlm.embed import SentenceEncoder
from xlm.fileio import DataError
from xlm.model.checkpoint import checkpoint_payload, save_checkpoint
from xlm.model.transformer import TransformerConfig, TransformerModel


@pytest.fixture(scope="module")
def model_path(sample_data, tmp_path_factory):
    dico = Dictionary.read_vocab(str(sample_data / "vocab"))
    torch.manual_seed(0)
    model = TransformerModel(TransformerConfig(n_words=len(dico), emb_dim=32, n_layers=2, n_heads=4, n_langs=2))
    path = tmp_path_factory.mktemp("embed") / "model.pth"
    params = dict(emb_dim=32, n_layers=2, n_heads=4, n_langs=2, lang2id={"en": 0, "fr": 1}, id2lang={0: "en", 1: "fr"})
    save_checkpoint(checkpoint_payload(dico, params, model=model), str(path))
    return str(path)


@pytest.fixture(scope="module")
def encoder(model_path, sample_data):
    return SentenceEncoder(model_path, codes=str(sample_data / "codes"))


def test_preprocessing_matches_the_command_line_pipeline(encoder, sample_data, tmp_path):
    lines = (SAMPLE / "mono" / "valid.fr").read_text(encoding="utf-8").splitlines()[:50]
    tok = run(["bash", "tools/tokenize.sh", "fr"], input="\n".join(lines) + "\n").stdout
    (tmp_path / "tok").write_text(tok, encoding="utf-8")
    python("tools/fastbpe", "applybpe", tmp_path / "bpe", tmp_path / "tok", sample_data / "codes")
    expected = (tmp_path / "bpe").read_text(encoding="utf-8").splitlines()
    assert [encoder.preprocess(line, "fr") for line in lines] == expected


def test_vectors_do_not_depend_on_batching(encoder):
    sentences = ["The file could not be opened.", "Open", "", "Unable to save the document: the disk is full."]
    together = encoder.encode(sentences, "en", batch_size=3)
    alone = torch.cat([encoder.encode([s], "en") for s in sentences])
    assert together.shape == (4, 32)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    # the language embedding is part of the representation
    assert not torch.allclose(together, encoder.encode(sentences, "fr", batch_size=3))


def test_unknown_language_is_an_error(encoder):
    with pytest.raises(DataError, match="language 'de' is not one of the model's"):
        encoder.encode(["Hallo"], "de")


def test_misuses_of_encode_are_one_error(encoder):
    with pytest.raises(DataError, match="a list of sentences, not one string"):
        encoder.encode("Hello world", "en")
    for batch_size in (0, -1):
        with pytest.raises(DataError, match=f"batch_size must be >= 1, got {batch_size}"):
            encoder.encode(["Hello"], "en", batch_size=batch_size)
    with pytest.raises(DataError, match="sentence 1: 600 subwords, more than the 510"):
        encoder.encode(["Hello", "a " * 600], "en", preprocessed=True)


def test_without_codes_sentences_are_taken_as_given(encoder, model_path):
    """No codes: the sentences are BPE'd already; Moses tokenization would split their '@@' markers."""
    bpe = [encoder.preprocess(s, "en") for s in ["Unable to save the document.", "Opening files"]]
    assert any("@@" in s for s in bpe)
    plain = SentenceEncoder(model_path)
    assert [plain.preprocess(s, "en") for s in bpe] == bpe
    torch.testing.assert_close(plain.encode(bpe, "en"), encoder.encode(bpe, "en", preprocessed=True))


def test_a_cuda_device_without_one_is_one_clear_error(model_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(DataError, match="device 'cuda': no CUDA device on this machine"):
        SentenceEncoder(model_path, device="cuda")
