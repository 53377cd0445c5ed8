"""Checkpoints and binarized files against bad input and kills (issue 12): files any PyTorch reads with plain
weights_only=True, one error line for a file that is not a checkpoint, a vocabulary that differs word by
word, token ids outside the vocabulary, and the temporary file a killed save leaves."""
import argparse
import logging
import pickle
import random
import re
import struct
import zipfile

import numpy as np
import pytest
import torch

import xlm
from conftest import python
from xlm.data.binarized import DATA_OFFSET, binarize, load_binarized
from xlm.data.dictionary import N_RESERVED, SPECIAL_WORDS, Dictionary
from xlm.evaluation.classification import TaskData
from xlm.fileio import DataError
from xlm.model.checkpoint import check_vocabulary, read_checkpoint, save_checkpoint
from xlm.model.transformer import TransformerConfig, TransformerModel
from xlm.train.checkpointing import load_training_checkpoint
from xlm.train.build import build_models
from xlm.train.options import parse_params

WORDS = [f"w{i}" for i in range(40)]
TINY = ["--emb_dim", "16", "--n_layers", "1", "--n_heads", "2", "--batch_size", "4", "--bptt", "16",
        "--max_len", "30", "--lgs", "en-fr"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 40-word vocabulary and en/fr train/valid/test corpora in xlm's format."""
    root = tmp_path_factory.mktemp("tiny")
    (root / "vocab").write_text("".join(f"{w} {1000 - i}\n" for i, w in enumerate(WORDS)))
    dico = Dictionary.read_vocab(root / "vocab")
    rng = random.Random(0)
    for lg in ("en", "fr"):
        for split, n in (("train", 120), ("valid", 12), ("test", 12)):
            text = root / f"{split}.{lg}"
            text.write_text("".join(" ".join(rng.choices(WORDS, k=rng.randint(3, 10))) + "\n" for _ in range(n)))
            binarize(text, dico, f"{text}.pth", threads=1)
    return root


def train(data, dump, exp_id, *flags, check=True):
    return python("train.py", "--exp_name", "t", "--exp_id", exp_id, "--dump_path", dump, "--data_path", data,
                  *TINY, *flags, check=check)


STALE = "checkpoint.pth.k3x_9a0q.tmp"


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """A finished 2-epoch CLM+MLM run whose dump folder held, before it started, a stale temporary file of
    a killed save and two files that only look like one."""
    dump = tmp_path_factory.mktemp("dump")
    folder = dump / "t" / "a"
    folder.mkdir(parents=True)
    (folder / STALE).write_bytes(b"\0" * 4096)
    (folder / "notes.tmp").write_text("mine")
    (folder / "checkpoint.pth.tmp").write_text("mine")
    proc = train(data, dump, "a", "--clm_steps", "en,fr", "--mlm_steps", "en", "--epoch_size", "24",
                 "--max_epoch", "2", "--save_periodic", "1", "--validation_metrics", "_valid_mlm_ppl")
    return folder, proc


def test_every_file_train_writes_loads_with_plain_weights_only(run):
    folder, _ = run
    files = sorted(str(p) for p in folder.glob("*.pth"))
    names = {p.rsplit("/", 1)[1] for p in files}
    assert {"checkpoint.pth", "best-valid_mlm_ppl.pth", "periodic-0.pth", "periodic-1.pth"} <= names
    # read_checkpoint's allow-list is a context, gone once it returns: only what torch registers itself
    assert not [g for g in torch.serialization.get_safe_globals() if "numpy" in str(g)]
    for path in files:
        torch.load(path, weights_only=True)
    # the random states are still those numpy restores (the resume tests check the run goes on exactly)
    rng = torch.load(folder / "checkpoint.pth", weights_only=True)["train_state"]["rng"][0]["numpy"]
    np.random.set_state(rng)
    assert rng[0] == "MT19937" and len(rng[1]) == 624


def test_save_checkpoint_writes_numpy_values_as_plain_ones(tmp_path):
    params = {"mask_scores": np.array([0.5, 1.0]), "sample_alpha": np.float64(0.25), "n_words": np.int64(7),
              "flag": np.bool_(True), "lang": np.str_("en"), "steps": [("en", None)]}
    save_checkpoint({"model": {"w": torch.ones(2)}, "params": params, "best": {"ppl": np.float32(1.5)}},
                    tmp_path / "a.pth")
    data = torch.load(tmp_path / "a.pth", weights_only=True)
    assert data["params"] == {"mask_scores": [0.5, 1.0], "sample_alpha": 0.25, "n_words": 7, "flag": True,
                              "lang": "en", "steps": [("en", None)]}
    assert [type(data["params"][k]) for k in ("sample_alpha", "n_words", "flag")] == [float, int, bool]
    assert type(data["best"]["ppl"]) is float and isinstance(params["mask_scores"], np.ndarray)  # not changed
    with pytest.raises(TypeError, match=r"checkpoint\['params'\]\['x'\]: a object"):
        save_checkpoint({"params": {"x": object()}}, tmp_path / "b.pth")


def original_style_checkpoint(path, dico, swap=None):
    """A pretrained model's file as the original writes it: numpy values in params, plain torch.save."""
    model = TransformerModel(TransformerConfig(n_words=len(dico), emb_dim=16, n_layers=1, n_heads=2,
                                               n_langs=2))
    id2word = dict(dico.id2word)
    if swap:
        a, b = swap
        id2word[a], id2word[b] = id2word[b], id2word[a]
    params = dict(emb_dim=16, n_layers=1, n_heads=2, n_langs=2, lang2id={"en": 0, "fr": 1},
                  id2lang={0: "en", 1: "fr"}, n_words=len(dico), dropout=0.0, attention_dropout=0.0,
                  gelu_activation=False, mask_scores=np.ones(len(dico)), sample_alpha=np.float64(0))
    torch.save({"model": model.state_dict(), "params": params, "dico_id2word": id2word,
                "dico_word2id": {w: i for i, w in id2word.items()}, "dico_counts": dict(dico.counts),
                "epoch": 3, "n_total_iter": 10, "best_metrics": {"valid_mlm_ppl": np.float64(5.0)},
                "best_stopping_criterion": np.float64(5.0)}, path)


def test_original_files_with_numpy_values_still_load(data, tmp_path):
    dico = load_binarized(data / "train.en.pth").dico
    original_style_checkpoint(tmp_path / "orig.pth", dico)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "orig.pth", weights_only=True)  # what the allow-list is for
    loaded = xlm.load_model(tmp_path / "orig.pth")
    assert len(loaded.dico) == len(dico) and isinstance(loaded.params["mask_scores"], np.ndarray)


def bad_files(root, valid):
    """Files that are not XLM checkpoints; `valid` is a real one (for a truncation)."""
    rng = np.random.default_rng(0)
    files = {"text.pth": b"hello world\nthis is text\n", "random.pth": rng.bytes(5000),
             "short_zip.pth": b"PK\x03\x04abc", "short_pickle.pth": b"\x80\x02abc", "short_xlm.pth": b"XLMBIN01\x01",
             "five.pth": b"\x01\x02\x03\x04\x05", "truncated.pth": valid.read_bytes()[:3000]}
    for name, content in files.items():
        (root / name).write_bytes(content)
    with zipfile.ZipFile(root / "zip.pth", "w") as z:
        z.writestr("notes.txt", "not torch")
    torch.save([1, 2, 3], root / "list.pth")
    (root / "pickled_list.pth").write_bytes(pickle.dumps([1, 2, 3]))
    torch.save({"a": 1}, root / "dict.pth")
    torch.save({"model": [1], "params": {}, **vocabulary_entries()}, root / "nomodel.pth")
    return sorted(root.glob("*.pth"))


def vocabulary_entries():
    dico = Dictionary.from_words([(w, 0) for w in SPECIAL_WORDS] + [(w, 1) for w in WORDS])
    return {"dico_id2word": dico.id2word, "dico_word2id": dico.word2id, "dico_counts": dico.counts}


def test_non_checkpoints_are_one_error_naming_the_file(data, run, tmp_path):
    folder, _ = run
    dico = load_binarized(data / "train.en.pth").dico
    readers = [xlm.load_model, load_binarized,  # translate.py and glue-xnli.py; preprocess.py and train.py's data
               lambda path: load_training_checkpoint(path, {}, {}, None, dico),  # --reload_checkpoint
               lambda path: build_models(parse_params(["--exp_name", "x", "--data_path", str(data), *TINY,
                                                       "--clm_steps", "en", "--reload_model", str(path)]),
                                         dico, "cpu", logging.getLogger("test"))]  # --reload_model
    for path in bad_files(tmp_path, folder / "best-valid_mlm_ppl.pth"):
        for read in readers:
            with pytest.raises(DataError, match=re.escape(str(path))):
                read(path)


def test_a_truncated_checkpoint_is_named_as_one(run, tmp_path):
    folder, _ = run
    whole = (folder / "best-valid_mlm_ppl.pth").read_bytes()
    for size in (3000, len(whole) // 2, len(whole) - 10):
        (tmp_path / "cut.pth").write_bytes(whole[:size])
        with pytest.raises(DataError, match=r"cut.pth: a truncated checkpoint \(its end is missing"):
            read_checkpoint(tmp_path / "cut.pth")
    # the format before torch 1.6, which the original's released checkpoints have, cut short
    torch.save({"model": {"w": torch.ones(1000)}}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    whole = (tmp_path / "legacy.pth").read_bytes()
    for size in (len(whole) // 2, len(whole) - 10):
        (tmp_path / "cut.pth").write_bytes(whole[:size])
        with pytest.raises(DataError, match="cut.pth: a truncated checkpoint"):
            read_checkpoint(tmp_path / "cut.pth")


def test_the_error_gives_the_unpicklers_reason_not_torchs_advice(tmp_path):
    text, namespace = tmp_path / "text.pth", tmp_path / "namespace.pth"
    text.write_text("not a checkpoint\n")
    torch.save({"model": {}, "params": argparse.Namespace(emb_dim=16)}, namespace)
    with pytest.raises(DataError, match=r"text.pth: not a PyTorch checkpoint \(Unsupported operand \d+\)$"):
        read_checkpoint(text)
    with pytest.raises(DataError, match=r"namespace.pth: refusing to load, the file holds objects outside the "
                                        r"allow-list of plain types \(Unsupported global: GLOBAL argparse.Namespace "
                                        r"was not an allowed global by default\)$"):
        read_checkpoint(namespace)


def one_error_line(proc, path):
    """The error is one line, the last of stderr (after what the run logged there before it)."""
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: {path}: ") and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert sum(line.startswith("error:") for line in lines) == 1, proc.stderr[-2000:]


def test_commands_give_one_line_for_a_non_checkpoint(data, run, tmp_path):
    folder, _ = run
    bad_files(tmp_path, folder / "best-valid_mlm_ppl.pth")
    text, nokeys = tmp_path / "text.pth", tmp_path / "dict.pth"
    proc = train(data, tmp_path / "d", "a", "--clm_steps", "en", "--reload_checkpoint", text, check=False)
    one_error_line(proc, text)
    proc = python("translate.py", "--model_path", nokeys, "--src_lang", "en", "--tgt_lang", "fr", "--output_path",
                  tmp_path / "out", check=False)
    one_error_line(proc, nokeys)
    proc = python("glue-xnli.py", "--exp_name", "g", "--dump_path", tmp_path / "g", "--model_path", text,
                  "--data_path", data, "--transfer_tasks", "SST-2", check=False)
    one_error_line(proc, text)


def test_reload_model_with_two_words_swapped_is_refused(data, tmp_path):
    dico = load_binarized(data / "train.en.pth").dico
    original_style_checkpoint(tmp_path / "ok.pth", dico)
    original_style_checkpoint(tmp_path / "swapped.pth", dico, swap=(20, 21))  # w6 <-> w7, same size
    assert check_vocabulary(read_checkpoint(tmp_path / "ok.pth"), dico, tmp_path / "ok.pth") is None
    proc = train(data, tmp_path / "d", "swapped", "--clm_steps", "en", "--reload_model", tmp_path / "swapped.pth",
                 check=False)
    one_error_line(proc, tmp_path / "swapped.pth")
    assert "id 20 is 'w7' in the checkpoint but 'w6' in the data" in proc.stderr
    # resuming from such a file (--reload_checkpoint) is refused the same way
    with pytest.raises(DataError, match="id 20 is 'w7' in the checkpoint but 'w6' in the data"):
        load_training_checkpoint(tmp_path / "swapped.pth", {}, {}, None, dico)


def test_glue_data_with_two_words_swapped_is_refused(data):
    """glue-xnli.py reads task data against the model's vocabulary (TaskData): the same refusal."""
    dico = load_binarized(data / "train.en.pth").dico
    id2word = dict(dico.id2word)
    id2word[20], id2word[21] = id2word[21], id2word[20]
    model_dico = Dictionary(id2word, {w: i for i, w in id2word.items()}, dict(dico.counts))
    with pytest.raises(DataError, match="id 20 is 'w6' in the data, 'w7' in the model"):
        TaskData(data, model_dico).corpus(data / "valid.en.pth")
    id2word = {i: w for i, w in dico.id2word.items() if i < 20}
    smaller = Dictionary(id2word, {w: i for i, w in id2word.items()}, {w: dico.counts[w] for w in id2word.values()})
    with pytest.raises(DataError, match="id 20 is 'w6' in the data, absent in the model"):
        TaskData(data, smaller).corpus(data / "valid.en.pth")


def test_dictionary_first_difference():
    a = Dictionary.from_words([(w, 0) for w in SPECIAL_WORDS] + [("x", 2), ("y", 1)])
    b = Dictionary.from_words([(w, 0) for w in SPECIAL_WORDS] + [("y", 2), ("x", 1)])
    c = Dictionary.from_words([(w, 0) for w in SPECIAL_WORDS] + [("x", 2)])
    assert a.first_difference(a) is None and a.first_difference(b) == (N_RESERVED, "x", "y")
    assert a.first_difference(c) == (N_RESERVED + 1, "y", None)


def corrupt_token(path, position, value):
    """Overwrite one token id of an xlm-format file (uint16 below 65,536 words)."""
    with open(path, "r+b") as f:
        f.seek(DATA_OFFSET + 2 * position)
        f.write(struct.pack("<H", value))


def test_token_ids_outside_the_vocabulary_are_an_error(data, tmp_path):
    corpus = load_binarized(data / "valid.en.pth")
    n = len(corpus.dico)
    bad = tmp_path / "valid.en.pth"
    bad.write_bytes((data / "valid.en.pth").read_bytes())
    corrupt_token(bad, 7, n + 5)
    with pytest.raises(DataError, match=f"^{bad}: token id {n + 5} at position 7 is outside its {n}-word"):
        load_binarized(bad)
    # the original's layout: ids in a numpy array next to the pickled dictionary
    sentences = np.asarray(corpus.sentences).copy()
    sentences[3] = n
    original = tmp_path / "original.pth"
    torch.save({"dico": corpus.dico, "positions": np.asarray(corpus.positions), "sentences": sentences,
                "unk_words": {}}, original, pickle_protocol=4)
    with pytest.raises(DataError, match=f"^{original}: token id {n} at position 3 is outside"):
        load_binarized(original)
    # ids below the vocabulary size load as they are
    sentences[3] = n - 1
    torch.save({"dico": corpus.dico, "positions": np.asarray(corpus.positions), "sentences": sentences,
                "unk_words": {}}, original, pickle_protocol=4)
    assert int(np.asarray(load_binarized(original).sentences)[3]) == n - 1


def test_a_killed_save_leaves_nothing_after_the_next_start(run):
    folder, proc = run
    assert not (folder / STALE).exists()
    assert f"Removed {folder / STALE}" in proc.stderr
    # only xlm's own pattern is removed
    assert (folder / "notes.tmp").read_text() == "mine" and (folder / "checkpoint.pth.tmp").read_text() == "mine"
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp") and p.name != "notes.tmp"
                and p.name != "checkpoint.pth.tmp"]


@pytest.mark.parametrize("saved, wanted, hints", [
    (dict(emb_dim=32), dict(emb_dim=64), {"embeddings.weight": "model dimensions",
                                          "lang_embeddings.weight": "model dimensions"}),
    (dict(n_words=40), dict(n_words=50), {"embeddings.weight": "vocabulary size",
                                          "pred_layer.proj.bias": "vocabulary size"}),
    (dict(n_langs=2), dict(n_langs=3), {"lang_embeddings.weight": "number of languages"}),
])
def test_a_misshapen_weight_names_the_size_that_differs(saved, wanted, hints):
    from xlm.model.checkpoint import load_weights
    base = dict(n_words=40, emb_dim=32, n_layers=1, n_heads=4, n_langs=2)
    weights = TransformerModel(TransformerConfig(**{**base, **saved})).state_dict()
    with pytest.raises(DataError) as e:
        load_weights(TransformerModel(TransformerConfig(**{**base, **wanted})), weights)
    for key, hint in hints.items():
        assert re.search(rf"{re.escape(key)}: checkpoint \([\d, ]+\) vs model \([\d, ]+\) \({hint}\)", str(e.value)), \
            str(e.value)


def test_a_plain_pickle_is_refused_without_torchs_warning(tmp_path, recwarn):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"model": [1, 2, 3]}, protocol=4))
    with pytest.raises(DataError, match="not a PyTorch checkpoint"):
        read_checkpoint(str(path))
    assert not [w for w in recwarn if "pickle protocol" in str(w.message)]


def test_resuming_a_checkpoint_of_another_kind_names_its_kind(data, tmp_path):
    """--reload_checkpoint of a glue-xnli.py checkpoint, or of an encoder-decoder one in an encoder-only run
    and the reverse: one error saying what the file is, before any warning about its flags."""
    dico = load_binarized(data / "train.en.pth").dico
    original_style_checkpoint(tmp_path / "mlm.pth", dico)
    mlm = read_checkpoint(tmp_path / "mlm.pth")
    save_checkpoint({**mlm, "classifier": {}, "task": "XNLI"}, tmp_path / "glue.pth")
    encoder_decoder = {k: v for k, v in mlm.items() if k != "model"}
    save_checkpoint({**encoder_decoder, "encoder": mlm["model"], "decoder": mlm["model"]}, tmp_path / "mt.pth")
    cases = [("glue.pth", {"model": None}, "a glue-xnli.py checkpoint (task XNLI), not train.py's"),
             ("mlm.pth", {"encoder": None, "decoder": None}, "an encoder-only checkpoint ('model' weights), where "
                                                             "this run (--encoder_only false) resumes 'encoder'"),
             ("mt.pth", {"model": None}, "a translation checkpoint ('encoder' and 'decoder' weights), where this "
                                         "run (--encoder_only true) resumes 'model'")]
    for name, models, message in cases:
        with pytest.raises(DataError, match=f"^{re.escape(str(tmp_path / name))}: {re.escape(message)}"):
            load_training_checkpoint(tmp_path / name, models, {}, None, dico)
