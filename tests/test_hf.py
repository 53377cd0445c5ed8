"""Hugging Face conversion: every XLMConfig variant that changes the computation, both ways, against
transformers' own XLMWithLMHeadModel as the oracle."""
import json
import logging

import pytest
import torch
import transformers

import xlm
from conftest import random_hf_xlm
from test_model import WORDS, padded_batch
from xlm.convert import main as convert
from xlm.data.dictionary import Dictionary
from xlm.fileio import DataError
from xlm.model.hf import from_hf
from xlm.train.build import build_models
from xlm.train.options import parse_params

# the XLMConfig attributes that change the model or its outputs, compared after the round trip
COMPUTATION = ["vocab_size", "emb_dim", "n_layers", "n_heads", "dropout", "attention_dropout", "gelu_activation",
               "sinusoidal_embeddings", "causal", "asm", "n_langs", "use_lang_emb", "max_position_embeddings",
               "layer_norm_eps", "tie_word_embeddings", "is_encoder", "pad_token_id", "eos_token_id"]


def hf_folder(path, seed=0, **config):
    """A random HF XLMWithLMHeadModel saved with a vocab.json in HF's '</w>' convention."""
    return random_hf_xlm(path, WORDS, seed, **config), path


CONFIGS = {
    "64-positions-3-langs": dict(max_position_embeddings=64, n_langs=3, dropout=0.3, attention_dropout=0.2,
                                 layer_norm_eps=1e-3),
    "1024-positions-1-lang": dict(max_position_embeddings=1024, n_langs=1, use_lang_emb=True, gelu_activation=False),
    "no-lang-emb-sinusoidal": dict(n_langs=2, use_lang_emb=False, sinusoidal_embeddings=True),
    "causal-untied-relu": dict(n_langs=2, causal=True, gelu_activation=False, tie_word_embeddings=False),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_from_hf_and_back(tmp_path, name):
    config = CONFIGS[name]
    hf, folder = hf_folder(tmp_path / "hf", **config)
    convert(["from-hf", str(folder), str(tmp_path / "x.pth")])
    loaded = xlm.load_model(tmp_path / "x.pth")
    assert loaded.decoder is None and loaded.dico[15] == "w1" and loaded.dico[14] == "w0@@"
    n_positions = config.get("max_position_embeddings", 512)
    assert loaded.encoder.position_embeddings.weight.shape == (n_positions, 32)
    # rows of up to every position the model has, padded, with a language per token
    x, lengths = padded_batch(len(WORDS), [min(n_positions, 600), 9, 2, 40], seed=1)
    langs = torch.randint(0, config["n_langs"], x.shape)
    with torch.no_grad():
        ref = hf(input_ids=x, lengths=lengths, langs=langs, output_hidden_states=True)
        h = loaded.encoder(x, lengths, langs=langs, causal=loaded.params["causal"])
        logits = loaded.encoder.get_scores(h)
    torch.testing.assert_close(h, ref.hidden_states[-1], atol=1e-5, rtol=0)
    torch.testing.assert_close(logits, ref.logits, atol=1e-5, rtol=0)

    # and back: to-hf writes the very same weights and configuration
    convert(["to-hf", str(tmp_path / "x.pth"), str(tmp_path / "back")])
    back = transformers.XLMWithLMHeadModel.from_pretrained(tmp_path / "back")
    original, again = hf.state_dict(), back.state_dict()
    assert original.keys() == again.keys()
    assert all(torch.equal(original[k], again[k]) for k in original)
    assert {a: getattr(back.config, a) for a in COMPUTATION} == {a: getattr(hf.config, a) for a in COMPUTATION}
    assert back.config.lang2id == hf.config.lang2id
    assert json.loads((tmp_path / "back" / "vocab.json").read_text()) == json.loads((folder / "vocab.json").read_text())


def test_released_checkpoints_keep_512_positions(tmp_path):
    """Params without n_positions / layer_norm_eps (the original's, older xlm's) mean 512 and 1e-12."""
    hf_folder(tmp_path / "hf", n_langs=2)
    convert(["from-hf", str(tmp_path / "hf"), str(tmp_path / "x.pth")])
    data = torch.load(tmp_path / "x.pth", weights_only=True)
    for key in ("n_positions", "layer_norm_eps", "causal"):
        del data["params"][key]
    torch.save(data, tmp_path / "old.pth")
    encoder = xlm.load_model(tmp_path / "old.pth").encoder
    assert encoder.config.n_positions == 512 and encoder.position_embeddings.weight.shape == (512, 32)
    assert all(m.eps == 1e-12 for m in encoder.modules() if isinstance(m, torch.nn.LayerNorm))


def test_refusals_name_the_attribute(tmp_path):
    _, folder = hf_folder(tmp_path / "hf", n_langs=2)
    config = json.loads((folder / "config.json").read_text())
    # pad_index and pad_token_id: one attribute in transformers 5, two in 4.x (where pad_index counts)
    bad = dict(config, asm=True, is_encoder=False, pad_token_id=0, pad_index=0, lang2id={"a": 0, "b": 5})
    (folder / "config.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"config.json: asm=true .*; is_encoder=false .*; special-token ids differ "
                                        r"from xlm's fixed ones: pad_index=0 \(xlm: 2\); lang2id .* ids 0..1"):
        from_hf(folder, tmp_path / "x.pth")
    (folder / "config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    transformers.XLMModel(transformers.XLMConfig.from_pretrained(folder)).save_pretrained(folder)  # no LM head
    with pytest.raises(DataError, match="not an XLMWithLMHeadModel, it lacks pred_layer.proj.bias"):
        from_hf(folder, tmp_path / "x.pth")
    (folder / "config.json").write_text(json.dumps(bad))
    with pytest.raises(SystemExit, match="error: .*asm=true"):
        convert(["from-hf", str(folder), str(tmp_path / "x.pth")])


DICO = Dictionary.from_words([(w, 0) for w in WORDS])


def test_train_reloads_a_64_position_model(tmp_path):
    hf_folder(tmp_path / "hf", max_position_embeddings=64, n_langs=3, layer_norm_eps=1e-6)
    path = str(tmp_path / "x.pth")
    convert(["from-hf", str(tmp_path / "hf"), path])
    reference = xlm.load_model(path).encoder.state_dict()
    common = ["--exp_name", "x", "--lgs", "l0-l1-l2", "--data_path", str(tmp_path), "--emb_dim", "32",
              "--n_layers", "2", "--n_heads", "4", "--gelu_activation", "true"]
    log = logging.getLogger("test")

    params = parse_params(common + ["--mlm_steps", "l0,l1-l2", "--reload_model", path, "--bptt", "64",
                                    "--max_len", "62"])
    model = build_models(params, DICO, "cpu", log)["model"]
    assert params.n_positions == 64 and params.layer_norm_eps == 1e-6  # saved with this run's checkpoints
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="65 tokens in a row, but the model has 64 positions"):
        model(torch.full((1, 65), 4), None)

    params = parse_params(common + ["--mlm_steps", "l0", "--reload_model", path, "--bptt", "65"])
    with pytest.raises(DataError, match=r"--bptt 65 is longer than the 64 positions of the model \(.*x.pth\)"):
        build_models(params, DICO, "cpu", log)
    translation = common + ["--encoder_only", "false", "--mt_steps", "l0-l1", "--reload_model", f"{path},{path}"]
    # --max_len 100 (the default) past the 64 positions: the sentences are checked once read (test_hardening_cli)
    models = build_models(parse_params(translation), DICO, "cpu", log)
    assert models["decoder"].config.n_positions == 64 and torch.equal(
        models["decoder"].position_embeddings.weight, reference["position_embeddings.weight"])


# bad input: one error line naming the file or folder, and nothing written (or overwritten)

def one_line_error(argv, match):
    """convert(argv) must exit with one 'error: ...' line matching `match`."""
    with pytest.raises(SystemExit, match=match) as e:
        convert([str(a) for a in argv])
    assert str(e.value).startswith("error: ") and "\n" not in str(e.value)


def no_temporaries(folder):
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture
def checkpoint(tmp_path):
    hf_folder(tmp_path / "hf", n_langs=2)
    convert(["from-hf", str(tmp_path / "hf"), str(tmp_path / "x.pth")])
    return tmp_path / "x.pth"


def test_to_hf_checks_its_output_first(tmp_path, checkpoint):
    a_file = tmp_path / "a.txt"
    a_file.write_text("Hello, world.\n")
    one_line_error(["to-hf", checkpoint, a_file], r"a.txt: exists and is not a folder")
    one_line_error(["to-hf", checkpoint, a_file / "sub"], r"a.txt/sub: .*a.txt is not a folder")
    assert a_file.read_text() == "Hello, world.\n"
    # before the work: a bad output is named even when the checkpoint is missing too
    one_line_error(["to-hf", tmp_path / "missing.pth", a_file], r"a.txt: exists and is not a folder")

    convert(["to-hf", str(checkpoint), str(tmp_path / "new" / "deep" / "hf")])  # missing parents are made
    assert (tmp_path / "new" / "deep" / "hf" / "vocab.json").is_file()
    (tmp_path / "empty").mkdir()
    convert(["to-hf", str(checkpoint), str(tmp_path / "empty") + "/"])  # an empty folder is filled
    assert (tmp_path / "empty" / "config.json").is_file()
    no_temporaries(tmp_path)


def test_to_hf_never_overwrites_a_conversion(tmp_path, checkpoint):
    out = tmp_path / "out"
    convert(["to-hf", str(checkpoint), str(out)])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    one_line_error(["to-hf", checkpoint, out, "--causal"], r"out: a folder that is not empty")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    no_temporaries(tmp_path)


def test_to_hf_writes_beside_and_renames(tmp_path, checkpoint, monkeypatch):
    """The folder appears under its name only complete: a failure while writing leaves neither it nor the
    temporary folder."""
    seen = []

    def failing_save(model, folder, **kwargs):
        seen.append(folder)
        (tmp_path / "half").mkdir()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(transformers.XLMWithLMHeadModel, "save_pretrained", failing_save)
    with pytest.raises(OSError):
        convert(["to-hf", str(checkpoint), str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
    assert len(seen) == 1 and seen[0] != str(tmp_path / "out") and seen[0].startswith(str(tmp_path / "out."))
    no_temporaries(tmp_path)


def test_from_hf_checks_its_output_first(tmp_path):
    _, folder = hf_folder(tmp_path / "hf", n_langs=2)
    a_file = tmp_path / "a.txt"
    a_file.write_text("Hello, world.\n")
    one_line_error(["from-hf", folder, tmp_path], r"is a folder, expected an output file name")
    one_line_error(["from-hf", folder, a_file / "x.pth"], r"a.txt/x.pth: .*a.txt is not a folder")
    one_line_error(["from-hf", folder, a_file], r"a.txt: exists; from-hf writes a new file")
    assert a_file.read_text() == "Hello, world.\n"
    convert(["from-hf", str(folder), str(tmp_path / "new" / "x.pth")])  # missing parents are made
    assert xlm.load_model(tmp_path / "new" / "x.pth").decoder is None


def test_from_hf_wants_a_folder(tmp_path):
    _, folder = hf_folder(tmp_path / "hf", n_langs=2)
    one_line_error(["from-hf", folder / "config.json", tmp_path / "o.pth"], r"hf/config.json: not a folder")
    one_line_error(["from-hf", tmp_path / "nothing", tmp_path / "o.pth"], r"nothing: no such folder")
    assert not (tmp_path / "o.pth").exists()


def truncate_weights(folder):
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:5])


def edit_config(folder, **changes):
    (folder / "config.json").write_text(json.dumps(dict(json.loads((folder / "config.json").read_text()), **changes)))


def edit_vocab(folder, change):
    vocab = json.loads((folder / "vocab.json").read_text())
    (folder / "vocab.json").write_text(json.dumps(change(vocab)))


DAMAGES = {
    "config-not-json": (lambda f: (f / "config.json").write_text("{not json"), r"config.json:1: not valid JSON"),
    "config-a-list": (lambda f: (f / "config.json").write_text("[1]"), r"config.json: expected a JSON object"),
    "no-config": (lambda f: (f / "config.json").unlink(), r"config.json: no such file"),
    "truncated-weights": (truncate_weights, r"model.safetensors: cannot read the weights \(.*header"),
    "no-weights": (lambda f: (f / "model.safetensors").unlink(), r"hf: no weights \(model.safetensors nor"),
    "vocab-a-list": (lambda f: (f / "vocab.json").write_text("[1,2]"), r"vocab.json: expected a JSON object"),
    "vocab-not-json": (lambda f: (f / "vocab.json").write_text('{"a": 0,'), r"vocab.json:1: not valid JSON"),
    "string-id": (lambda f: edit_vocab(f, lambda v: dict(v, **{"w1</w>": "x"})),
                  r"vocab.json: ids must be integers, not 'w1</w>': 'x'"),
    "emb-dim-changed": (lambda f: edit_config(f, emb_dim=64),
                        r"model.safetensors: \d+ tensors do not fit config.json: .*: file \(.*32.*\) vs config.json"),
    # transformers 5 refuses the type itself, 4.x leaves it to check_hf_config
    "emb-dim-a-string": (lambda f: edit_config(f, emb_dim="32"), r"config.json: .*emb_dim.*'32'"),
    "no-layers": (lambda f: edit_config(f, n_layers=0), r"config.json: n_layers=0 \(expected positive integers\)"),
    "heads-do-not-divide": (lambda f: edit_config(f, n_heads=5), r"config.json: emb_dim=32 is not a multiple of"),
    "lang2id-a-list": (lambda f: edit_config(f, lang2id=["l0", "l1"]), r"config.json: lang2id .* must name"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_hf_folder_is_one_error(tmp_path, damage, capsys):
    _, folder = hf_folder(tmp_path / "hf", n_langs=2)
    change, match = DAMAGES[damage]
    change(folder)
    one_line_error(["from-hf", folder, tmp_path / "o.pth"], match)
    assert not (tmp_path / "o.pth").exists()
    no_temporaries(tmp_path)
    assert "MISMATCH" not in capsys.readouterr().err  # transformers' report on the shapes is not printed


def test_to_hf_writes_the_originals_params_keyed_by_language_pairs(tmp_path, checkpoint):
    """The original's TLM and translation checkpoints hold dicts keyed by tuples in their params (para_dataset,
    ref_paths), which JSON refused (a traceback)."""
    from xlm.model.checkpoint import read_checkpoint, save_checkpoint
    data = read_checkpoint(str(checkpoint))
    data["params"] = {**data["params"], "para_dataset": {("en", "fr"): {"valid": ("a.en.pth", "a.fr.pth")}},
                      "ref_paths": {("en", "fr", "valid"): "ref.en-fr.valid.txt"}}
    save_checkpoint(data, str(tmp_path / "original_like.pth"))
    convert(["to-hf", str(tmp_path / "original_like.pth"), str(tmp_path / "out")])
    params = json.loads((tmp_path / "out" / "xlm_params.json").read_text())
    assert params["para_dataset"] == {"en-fr": {"valid": ["a.en.pth", "a.fr.pth"]}}
    assert params["ref_paths"] == {"en-fr-valid": "ref.en-fr.valid.txt"}
