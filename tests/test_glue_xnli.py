"""glue-xnli.py: XNLI and GLUE fine-tuning run as a user runs them, on tiny data built here."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import ROOT, python
from test_host_memory import MALLINFO
from xlm.data.binarized import binarize
from xlm.data.dictionary import Dictionary
from xlm.evaluation.classification import accuracy, f1, matthews, pearson, spearman
from xlm.fileio import DataError
from xlm.model.checkpoint import checkpoint_payload, load_model, read_checkpoint, save_checkpoint
from xlm.model.embedder import finetuned_parameters, parse_layer_range
from xlm.model.transformer import TransformerConfig, TransformerModel
from xlm.train.finetune import FineTuner, check_task_files, parse_params as finetune_options

LANGS = ("de", "en", "fr")


def save_tiny_model(path, dico, dropout=0.1, seed=0):
    torch.manual_seed(seed)
    params = dict(emb_dim=32, n_layers=2, n_heads=4, dropout=dropout, attention_dropout=dropout,
                  gelu_activation=True, n_langs=len(LANGS), lang2id={lg: i for i, lg in enumerate(LANGS)},
                  id2lang=dict(enumerate(LANGS)), n_words=len(dico))
    model = TransformerModel(TransformerConfig(n_words=len(dico), emb_dim=32, n_layers=2, n_heads=4,
                                               dropout=dropout, attention_dropout=dropout, gelu_activation=True,
                                               n_langs=len(LANGS)))
    save_checkpoint(checkpoint_payload(dico, params, model=model), path)


@pytest.fixture(scope="module")
def toy_tasks(tmp_path_factory):
    """Toy-language XNLI files (eval/XNLI, train in en only) and GLUE-layout SST-2, MRPC and STS-B
    derived from them, binarized against one vocabulary, and a tiny random pretrained model."""
    root = tmp_path_factory.mktemp("glue_xnli")
    raw = root / "raw"
    python("tools/toy_languages.py", "--out", raw, "--langs", ",".join(LANGS), "--n_mono", 200, "--n_para", 0,
           "--n_valid", 10, "--n_test", 10, "--n_cls_train", 240, "--n_cls_eval", 45, "--vocab_size", 60)
    counts = {}
    for path in (raw / "cls").iterdir():
        for line in path.read_text(encoding="utf-8").splitlines():
            for word in " ".join(line.split("\t")[:2]).split():
                counts[word] = counts.get(word, 0) + 1
    vocab = root / "vocab"
    vocab.write_text("".join(f"{w} {c}\n" for w, c in sorted(counts.items(), key=lambda x: -x[1])), encoding="utf-8")
    dico = Dictionary.read_vocab(str(vocab))

    def write(folder, name, lines):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        if not name.split(".")[1].startswith("label"):
            binarize(str(folder / name), dico, str(folder / f"{name}.pth"))

    xnli = root / "data" / "eval" / "XNLI"
    for lg in LANGS:
        for split in ("train", "valid", "test") if lg == "en" else ("valid", "test"):
            rows = [line.split("\t")
                    for line in (raw / "cls" / f"{lg}.{split}").read_text(encoding="utf-8").splitlines()]
            write(xnli, f"{split}.s1.{lg}", [r[0] for r in rows])
            write(xnli, f"{split}.s2.{lg}", [r[1] for r in rows])
            write(xnli, f"{split}.label.{lg}", [r[2] for r in rows])
    for split in ("train", "valid", "test"):
        rows = [line.split("\t") for line in (raw / "cls" / f"en.{split}").read_text(encoding="utf-8").splitlines()]
        glue = root / "data" / "eval"
        # SST-2-like: is the sentence negated?  MRPC-like: entailment or not.  STS-B-like: a score per class.
        write(glue / "SST-2", f"{split}.s1", [r[0] for r in rows])
        write(glue / "SST-2", f"{split}.label", ["1" if " " in r[0] and r[2] == "entailment" else "0" for r in rows])
        for task in ("MRPC", "STS-B"):
            write(glue / task, f"{split}.s1", [r[0] for r in rows])
            write(glue / task, f"{split}.s2", [r[1] for r in rows])
        write(glue / "MRPC", f"{split}.label", ["1" if r[2] == "entailment" else "0" for r in rows])
        score = {"entailment": "5.0", "neutral": "2.5", "contradiction": "0.0"}
        write(glue / "STS-B", f"{split}.label", [score[r[2]] for r in rows])
    save_tiny_model(root / "model.pth", dico)
    save_tiny_model(root / "model_no_dropout.pth", dico, dropout=0.0)
    return root


def finetune_flags(root, exp_id, model="model.pth", batch_size=16):
    return ["--exp_name", "ft", "--exp_id", exp_id, "--dump_path", root / "dumped", "--model_path", root / model,
            "--data_path", root / "data", "--batch_size", batch_size, "--optimizer_e", "adam,lr=0.001",
            "--optimizer_p", "adam,lr=0.001", "--log_interval", 5]


def finetune(root, *args, exp_id="run", check=True):
    return python("glue-xnli.py", *finetune_flags(root, exp_id), *args, check=check)


def logged_scores(proc):
    return [json.loads(line.split("__log__:", 1)[1]) for line in proc.stderr.splitlines() if "__log__:" in line]


def test_xnli_zero_shot_run(toy_tasks):
    proc = finetune(toy_tasks, "--transfer_tasks", "XNLI", "--n_epochs", 2)
    scores = logged_scores(proc)
    assert [s["epoch"] for s in scores] == [0, 1]
    for lg in LANGS:
        for split in ("valid", "test"):
            assert 0 <= scores[-1][f"xnli_{split}_{lg}_acc"] <= 100
    assert "sent/s" in proc.stderr and "ETA epoch" in proc.stderr
    dump = toy_tasks / "dumped" / "ft" / "run"
    best = dump / "best-xnli_valid_en_acc.pth"
    assert best.is_file() and (dump / "checkpoint-XNLI.pth").is_file()
    loaded = load_model(str(best))  # the fine-tuned encoder is a regular pretrained model
    data = read_checkpoint(str(best))
    for path in (best, dump / "checkpoint-XNLI.pth"):
        torch.load(path, weights_only=True)  # plain types: no allow-list needed
    assert data["task"] == "XNLI" and data["classifier"]["1.weight"].shape == (3, 32)
    assert loaded.encoder.config.n_layers == 2
    # its classifier predicts from the sentence vectors, as the README shows
    from xlm.model.embedder import sentence_vectors
    assert loaded.task == "XNLI" and loaded.classifier["1.weight"].shape == (3, 32)
    x = torch.tensor([[1, 20, 21, 1, 22, 1], [1, 23, 1, 24, 1, 2]])
    logits = torch.nn.functional.linear(sentence_vectors(loaded.encoder, x, torch.tensor([6, 5])),
                                        loaded.classifier["1.weight"], loaded.classifier["1.bias"])
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()

    # rerunning the command with more epochs resumes after the last finished epoch
    proc = finetune(toy_tasks, "--transfer_tasks", "XNLI", "--n_epochs", 3)
    assert "resumed from" in proc.stderr and [s["epoch"] for s in logged_scores(proc)] == [2]


def test_evaluation_shows_its_progress(toy_tasks):
    """XNLI's evaluation sets (30 at the paper's size) take minutes: a progress line (a minute apart where
    stderr is no terminal; here at every set) counts them."""
    code = ("import runpy, sys, xlm.progress\nxlm.progress.PROGRESS_EVERY = 0.0\n"
            "sys.argv = ['glue-xnli.py', *sys.argv[1:]]\nrunpy.run_path('glue-xnli.py', run_name='__main__')")
    proc = python("-c", code, *finetune_flags(toy_tasks, "progress"), "--transfer_tasks", "XNLI", "--n_epochs", 1,
                  "--epoch_size", 32)
    n_sets = 2 * len(LANGS)
    assert [f"XNLI evaluation: {i}/{n_sets} sets" in proc.stderr for i in range(1, n_sets + 1)] == [True] * n_sets, \
        proc.stderr[-2000:]


@pytest.mark.parametrize("task, port", [("XNLI", 29541), ("SST-2", 29542)])
def test_torchrun_two_ranks_match_one_process(toy_tasks, task, port):
    """2 ranks (gloo) x batch 8 fine-tune exactly like one process x batch 16 (no dropout), for 6 steps:
    XNLI with language ids, and a GLUE task without them (its language embeddings are unused)."""
    args = ["--transfer_tasks", task, "--n_epochs", 1, "--epoch_size", 96]
    python("glue-xnli.py", *finetune_flags(toy_tasks, f"single-{task}", "model_no_dropout.pth", 16), *args)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(port), "glue-xnli.py",
                           *map(str, finetune_flags(toy_tasks, f"ddp-{task}", "model_no_dropout.pth", 8)),
                           *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single, ddp = (read_checkpoint(str(toy_tasks / "dumped" / "ft" / f"{run}-{task}" / f"checkpoint-{task}.pth"))
                   for run in ("single", "ddp"))
    for key in ("model", "classifier"):
        for name, value in single[key].items():
            # attention is invariant to the key bias: its gradient is rounding noise, which Adam scales up
            if not name.endswith("k_lin.bias"):
                torch.testing.assert_close(ddp[key][name], value, atol=1e-5, rtol=1e-4, msg=name)


def test_resumes_a_checkpoint_of_an_earlier_version(toy_tasks):
    """Checkpoints written before every rank's random states were saved hold rank 0's CPU state alone."""
    finetune(toy_tasks, "--transfer_tasks", "XNLI", "--n_epochs", 1, "--epoch_size", 32, exp_id="old")
    path = toy_tasks / "dumped" / "ft" / "old" / "checkpoint-XNLI.pth"
    data = read_checkpoint(str(path))
    rng = data["train_state"].pop("rng")
    data["train_state"]["torch_rng"] = rng[0]["torch"]
    torch.save(data, path)
    proc = finetune(toy_tasks, "--transfer_tasks", "XNLI", "--n_epochs", 2, "--epoch_size", 32, "--batch_size", 8,
                    exp_id="old")
    assert "resumed from" in proc.stderr and [s["epoch"] for s in logged_scores(proc)] == [1]
    # as train.py: a changed flag of the batches or the updates is warned of
    assert "resumed with other flags than the run's (--batch_size 16 there, 8 here)" in proc.stderr


def test_a_rerun_with_another_seed_is_refused_without_saying_it_goes_on(toy_tasks):
    """The run's data order was drawn with its --seed: a rerun of the same --exp_id with another is one
    error, not also a warning that it goes on with the new flags."""
    finetune(toy_tasks, "--transfer_tasks", "XNLI", "--n_epochs", 1, "--epoch_size", 32, exp_id="reseeded")
    proc = finetune(toy_tasks, "--transfer_tasks", "XNLI", "--n_epochs", 2, "--epoch_size", 32, "--seed", 3,
                    exp_id="reseeded", check=False)
    assert proc.returncode == 1
    assert "its data order was drawn with another --seed: resume it with the run's own" in proc.stderr
    assert "goes on with this command's" not in proc.stderr
    again = finetune(toy_tasks, "--transfer_tasks", "XNLI", "--n_epochs", 1, "--epoch_size", 32, exp_id="reseeded")
    assert "has 1 epoch(s) done, --n_epochs 1: nothing to train (another --exp_id fine-tunes anew)" in again.stderr
    assert not logged_scores(again)


def test_torchrun_resumes_every_ranks_dropout(toy_tasks):
    """2 ranks with dropout: 1 epoch, then the command rerun for 2, fine-tunes as 2 epochs in one go
    (weights, optimizers, data order and each rank's random states are restored)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")

    def run(exp_id, n_epochs):
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                               "--master_port", "29543", "glue-xnli.py", *map(str, finetune_flags(toy_tasks, exp_id)),
                               "--transfer_tasks", "XNLI", "--n_epochs", str(n_epochs), "--epoch_size", "64",
                               "--dropout", "0.3"], cwd=ROOT, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return read_checkpoint(str(toy_tasks / "dumped" / "ft" / exp_id / "checkpoint-XNLI.pth"))

    whole = run("resume-whole", 2)
    assert run("resume-parts", 1)["train_state"]["epoch"] == 1
    parts = run("resume-parts", 2)
    assert parts["train_state"]["epoch"] == 2
    for key in ("model", "classifier"):
        for name, value in whole[key].items():
            assert torch.equal(parts[key][name], value), name


SIGNALLED_AT_CALL = """
import importlib, os, runpy, signal, sys
owner = importlib.import_module({module!r})
for name in {owner!r}:
    owner = getattr(owner, name)
original, calls = getattr(owner, {attr!r}), []

def signalled(*args, **kwargs):  # SLURM's time-limit warning, sent in the middle of a step or an evaluation
    calls.append(1)
    if len(calls) == {call}:
        os.kill(os.getpid(), signal.SIGUSR1)
    return original(*args, **kwargs)

setattr(owner, {attr!r}, signalled)
sys.argv = ["glue-xnli.py", *{args!r}]
runpy.run_path("glue-xnli.py", run_name="__main__")
"""
STEP, PREDICT = ("xlm.train.engine", ["StepEngine"], "step"), ("xlm.train.finetune", [], "predict")


@pytest.mark.parametrize("where, call, log_interval, sentence",
                         [(STEP, 5, 3, 16), (STEP, 8, 3, 64), (PREDICT, 7, 2, 64)],
                         ids=["after_the_step", "epoch_end", "evaluation"])
def test_a_signal_saves_mid_epoch_and_the_rerun_fine_tunes_as_one_run(toy_tasks, scontrol, monkeypatch, where, call,
                                                                      log_interval, sentence):
    """SIGUSR1 in a step of epoch 1 (4 steps of 16 sentences) stops one process after that step, between
    progress lines, or at the epoch's end before its evaluation; in the epoch's evaluation (in its first of 6
    sets), at the evaluation's next batch. Each saves where the epoch stands, requeues the SLURM job and leaves the next
    task alone. The rerun goes on from that sentence (evaluating first, at the epoch's end) and fine-tunes as
    the uninterrupted run (dropout included), then does the next task."""
    monkeypatch.setenv("SLURM_JOB_ID", "4243")
    args = ["--n_epochs", 2, "--epoch_size", 64, "--dropout", 0.3, "--log_interval", log_interval]
    run_id = f"{where[2]}{call}"
    finetune(toy_tasks, "--transfer_tasks", "XNLI", *args, exp_id=f"whole{run_id}")
    flags = [str(f) for f in [*finetune_flags(toy_tasks, f"parts{run_id}"), "--transfer_tasks", "XNLI,SST-2", *args]]
    module, owner, attr = where
    proc = python("-c", SIGNALLED_AT_CALL.format(module=module, owner=owner, attr=attr, call=call, args=flags),
                  check=False)
    assert proc.returncode == 128 + signal.SIGUSR1, proc.stderr[-3000:]
    assert "Stopped by signal 10 after saving" in proc.stderr and "SST-2" not in proc.stderr.split("Stopped")[-1]
    assert scontrol.read_text() == "requeue 4243\n"
    assert [s["epoch"] for s in logged_scores(proc)] == [0]

    proc = finetune(toy_tasks, "--transfer_tasks", "XNLI,SST-2", *args, exp_id=f"parts{run_id}")
    assert "XNLI: resumed from" in proc.stderr and f"at epoch 1, sentence {sentence}" in proc.stderr
    assert [s["epoch"] for s in logged_scores(proc)] == [1, 0, 0, 1, 1]  # XNLI's epoch 1, SST-2's valid and test
    dump = toy_tasks / "dumped" / "ft"
    whole, parts = (read_checkpoint(str(dump / run / "checkpoint-XNLI.pth")) for run in (f"whole{run_id}",
                                                                                         f"parts{run_id}"))
    assert parts["train_state"]["done_sentences"] == 0
    for key in ("model", "classifier"):
        for name, value in whole[key].items():
            assert torch.equal(parts[key][name], value), name


def test_bf16_autocast(toy_tasks):
    proc = finetune(toy_tasks, "--transfer_tasks", "XNLI", "--n_epochs", 1, "--epoch_size", 64, "--bf16", "true",
                    exp_id="bf16")
    assert 0 <= logged_scores(proc)[0]["xnli_test_fr_acc"] <= 100


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_keeps_freed_host_memory_on_the_cpu(toy_tasks):
    """glue-xnli.py sets malloc up as train.py does: after a fine-tuning, a 64 MiB tensor comes from the heap
    (with a pretrained model's 95,000 x 1,024 embeddings, fresh pages every step halved its speed)."""
    flags = [str(f) for f in finetune_flags(toy_tasks, "malloc")] + ["--transfer_tasks", "XNLI", "--n_epochs", "1",
                                                                      "--epoch_size", "32"]
    run = MALLINFO + f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from xlm.train.finetune import main
main({flags!r})
x = torch.empty(2 ** 24)
print(libc.mallinfo2().hblkhd < 2 ** 26)
"""
    proc = subprocess.run([sys.executable, "-c", run], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip().splitlines()[-1] == "True", proc.stdout + proc.stderr


def test_glue_tasks_and_their_metrics(toy_tasks):
    proc = finetune(toy_tasks, "--transfer_tasks", "SST-2,MRPC,STS-B", "--n_epochs", 1, "--dropout", 0.1,
                    exp_id="glue")
    lines = logged_scores(proc)
    # as the original: a line for each split with labels (here every split has them), the epoch in each
    assert [(line["epoch"], list(line)[1]) for line in lines] == [
        (0, "valid_sst-2_acc"), (0, "test_sst-2_acc"), (0, "valid_mrpc_acc"), (0, "test_mrpc_acc"),
        (0, "valid_sts-b_prs"), (0, "test_sts-b_prs")]
    scores_sst, scores_mrpc, scores_sts = ({**lines[i], **lines[i + 1]} for i in (0, 2, 4))
    # the original's names: the task in lower case; acc, f1 and mc for every classification task, in that order
    assert [k for k in scores_sst if k.startswith("valid")] == ["valid_sst-2_acc", "valid_sst-2_f1", "valid_sst-2_mc"]
    assert {"test_sst-2_acc", "test_mrpc_mc", "test_mrpc_f1"} <= set(scores_sst) | set(scores_mrpc)
    assert [k for k in scores_sts if k.startswith("valid")] == ["valid_sts-b_prs", "valid_sts-b_spr"]
    dump = toy_tasks / "dumped" / "ft" / "glue"
    preds = (dump / "STS-B" / "valid.pred.0").read_text().splitlines()
    assert len(preds) == 45 and preds[0].startswith("0\t")
    for i, line in enumerate(preds):
        index, value = line.split("\t")
        assert index == str(i) and str(np.float32(value)) == value
    for metric in ("valid_sst-2_acc", "valid_mrpc_acc", "valid_sts-b_prs"):
        assert (dump / f"best-{metric}.pth").is_file()


def test_an_epoch_reads_at_most_one_pass_each_in_its_own_order(toy_tasks):
    """As the original, whose epoch is a fresh iterator read to --epoch_size or to its end: an --epoch_size
    above the 240 training examples trains on each once an epoch (it trained 4 passes), and every epoch
    starts a pass of its own."""
    from xlm.data.iterators import BatchIterator
    proc = finetune(toy_tasks, "--transfer_tasks", "SST-2", "--n_epochs", 2, "--epoch_size", 1000, exp_id="pass")
    assert re.findall(r"epoch (\d) - (\d+)/(\d+) sentences", proc.stderr) == [
        (epoch, done, "240") for epoch in "01" for done in ("80", "160", "240")]
    iterator = BatchIterator(type("Rows", (), {"batches": lambda self, rng: [[0, 1], [2], [3, 4]],
                                               "splits": lambda self, key, n: True})())
    iterator.next_global_key()
    assert iterator.rows_left_in_pass() == 3
    iterator.start_pass()
    assert (iterator.pass_index, iterator.position, iterator.rows_left_in_pass()) == (1, 0, 5)
    iterator.start_pass()
    assert iterator.pass_index == 1


def test_tasks_of_one_command_draw_their_own_randomness(toy_tasks, tmp_path):
    """MNLI-m and MNLI-mm train on the same pairs: in one command they must not be the same fine-tuning (the
    original's random state went on from one task to the next)."""
    data = tmp_path / "data"
    for task in ("MNLI-m", "MNLI-mm"):
        (data / "eval" / task).mkdir(parents=True)
        for split in ("train", "valid", "test"):
            for name in (f"{split}.s1", f"{split}.s2", f"{split}.label"):
                source = toy_tasks / "data" / "eval" / "XNLI" / f"{name}.en"
                for suffix in ("", ".pth"):
                    if (source.parent / (source.name + suffix)).exists():
                        (data / "eval" / task / (name + suffix)).symlink_to(source.parent / (source.name + suffix))
    proc = python("glue-xnli.py", *finetune_flags(toy_tasks, "two"), "--data_path", data, "--transfer_tasks",
                  "MNLI-m,MNLI-mm", "--n_epochs", 1, "--dropout", 0.1)
    losses = {task: re.findall(rf"{task} - epoch 0 - .*? - loss (\S+)", proc.stderr) for task in ("MNLI-m", "MNLI-mm")}
    assert len(losses["MNLI-m"]) == len(losses["MNLI-mm"]) > 1 and losses["MNLI-m"] != losses["MNLI-mm"]


def test_predictions_are_written_as_the_original_writes_them(tmp_path):
    """`<index>\t<outputs>`, each float32 as numpy prints it (the original's `str(x)`), not rounded."""
    tuner = SimpleNamespace(params=SimpleNamespace(dump_path=str(tmp_path)), task_name="MRPC", epoch=3)
    outputs = np.array([[0.1, -2.5], [1e-8, 0.123456789]], dtype=np.float32)
    FineTuner.write_predictions(tuner, "test", outputs)
    assert (tmp_path / "MRPC" / "test.pred.3").read_text() == "0\t0.1,-2.5\n1\t1e-08,0.12345679\n"


def changed_parameters(root, exp_id, *args):
    finetune(root, "--transfer_tasks", "SST-2", "--n_epochs", 1, *args, exp_id=exp_id)
    before = read_checkpoint(str(root / "model.pth"))["model"]
    after = read_checkpoint(str(root / "dumped" / "ft" / exp_id / "best-valid_sst-2_acc.pth"))["model"]
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_finetune_layers_freeze_the_rest(toy_tasks):
    changed = changed_parameters(toy_tasks, "last_layer", "--finetune_layers", "_1:_1")
    assert changed and all(k.split(".")[1] == "1" for k in changed), changed
    assert any(k.startswith("attentions.1.") for k in changed) and any(k.startswith("ffns.1.") for k in changed)
    # GLUE feeds no language ids: the language embeddings are frozen
    changed = changed_parameters(toy_tasks, "embeddings", "--finetune_layers", "0:0")
    assert changed == {"embeddings.weight", "position_embeddings.weight", "layer_norm_emb.weight",
                       "layer_norm_emb.bias", "pred_layer.proj.weight"}
    assert changed_parameters(toy_tasks, "frozen", "--embedder_only", "true") == set()


def test_layer_ranges_follow_the_original():
    model = TransformerModel(TransformerConfig(n_words=20, emb_dim=16, n_layers=3, n_heads=2, n_langs=2))
    names = {id(p): n for n, p in model.named_parameters()}

    def layers(spec):
        return {names[id(p)].split(".")[0] + ("." + names[id(p)].split(".")[1] if names[id(p)].split(".")[1].isdigit()
                                               else "") for p in finetuned_parameters(model, spec)}
    assert parse_layer_range("0:_1", 3) == (0, 3) and parse_layer_range("_2:_1", 3) == (2, 3)
    assert layers("0:0") == {"embeddings", "position_embeddings", "lang_embeddings", "layer_norm_emb"}
    assert layers("1:1") == {"attentions.0", "layer_norm1.0", "ffns.0", "layer_norm2.0"}
    assert len(finetuned_parameters(model, "0:_1")) == len([p for p in model.parameters()]) - 1  # not the output bias
    assert finetuned_parameters(model, "2:1") == []
    for bad in ("0", "a:1", "0:4", "_5:1"):
        with pytest.raises(DataError, match="--finetune_layers"):
            finetuned_parameters(model, bad)


def test_metrics_match_scikit_learn_and_scipy():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    gold, pred = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    assert f1(pred, gold) == pytest.approx(100 * sklearn_metrics.f1_score(gold, pred))
    assert matthews(pred, gold) == pytest.approx(100 * sklearn_metrics.matthews_corrcoef(gold, pred))
    # three classes (MNLI), as the original scores them: micro-averaged F1, multiclass Matthews
    gold, pred = rng.integers(0, 3, 200), np.where(rng.random(200) < 0.5, gold, rng.integers(0, 3, 200))
    assert f1(pred, gold, 3) == pytest.approx(100 * sklearn_metrics.f1_score(gold, pred, average="micro"))
    assert matthews(pred, gold) == pytest.approx(100 * sklearn_metrics.matthews_corrcoef(gold, pred))
    assert matthews(np.zeros(5), np.array([0, 1, 2, 0, 1])) == 0.0 == sklearn_metrics.matthews_corrcoef(
        [0, 1, 2, 0, 1], np.zeros(5))
    a, b = rng.normal(size=300), rng.integers(0, 6, 300).astype(float)  # ties for Spearman
    assert pearson(a, b) == pytest.approx(100 * stats.pearsonr(a, b)[0])
    assert spearman(a, b) == pytest.approx(100 * stats.spearmanr(a, b)[0])


def test_accuracy_is_the_originals_float():
    """The original logs 100.0 * right / total; the mean first gives other floats (79.60000000000001)."""
    gold = np.zeros(1000, dtype=np.int64)
    for right in range(1001):
        pred = (np.arange(1000) >= right).astype(np.int64)
        assert accuracy(pred, gold) == 100.0 * right / 1000


@pytest.mark.parametrize("args, message", [
    (["--transfer_tasks", "XNLI", "--model_path", "missing.pth"], "--model_path: missing.pth does not exist"),
    (["--transfer_tasks", "NOPE"], "unknown task 'NOPE'"),
    (["--transfer_tasks", "XNLI,XNLI"], "appears twice"),
    (["--transfer_tasks", "XNLI", "--optimizer_e", "adam,lr=1e-4"], "--optimizer_e"),
    (["--transfer_tasks", "XNLI", "--fp16", "true", "--bf16", "true"], "exclude each other"),
    (["--transfer_tasks", "XNLI", "--epoch_size", "0"], "--epoch_size"),
    # the original asserts both; xlm skipped the empty name, and sparseadam failed at the first step
    (["--transfer_tasks", "XNLI,"], "--transfer_tasks 'XNLI,': an empty task name"),
    (["--transfer_tasks", "XNLI", "--optimizer_p", "sparseadam,lr=0.1"], "--optimizer_p sparseadam takes only"),
])
def test_bad_flags(toy_tasks, args, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        finetune_options([str(a) for a in finetune_flags(toy_tasks, "err") + args])


def test_mistakes_are_one_clear_error(toy_tasks):
    """Errors found once the model and the data are read: one line each, no traceback. (The language, found
    by the checks before the first task, in this process.)"""
    for args, message in [(["--max_vocab", "30"], "not the model's"),
                          (["--finetune_layers", "0:9"], "--finetune_layers: '0:9' is outside 0..2")]:
        proc = finetune(toy_tasks, "--transfer_tasks", "XNLI", "--n_epochs", 1, *args, exp_id="err", check=False)
        assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    with pytest.raises(DataError, match="^--xnli_train_lang sw: not a language of the model"):
        check_task_files(finetune_options([str(a) for a in finetune_flags(toy_tasks, "err")] +
                                          ["--transfer_tasks", "XNLI", "--xnli_train_lang", "sw"]))


def test_mismatched_label_file_is_an_error(toy_tasks, tmp_path):
    data = tmp_path / "data" / "eval" / "SST-2"
    data.mkdir(parents=True)
    for name in os.listdir(toy_tasks / "data" / "eval" / "SST-2"):
        (data / name).symlink_to(toy_tasks / "data" / "eval" / "SST-2" / name)
    (data / "valid.label").unlink()
    labels = (toy_tasks / "data" / "eval" / "SST-2" / "valid.label").read_text().splitlines()
    (data / "valid.label").write_text("\n".join(labels[:-1] + ["maybe"]) + "\n")
    proc = python("glue-xnli.py", "--exp_name", "ft", "--dump_path", tmp_path / "dumped", "--model_path",
                  toy_tasks / "model.pth", "--data_path", tmp_path / "data", "--transfer_tasks", "SST-2", check=False)
    assert proc.returncode != 0 and f"valid.label, line {len(labels)}: unknown label 'maybe'" in proc.stderr


def test_torchrun_two_ranks_evaluate_as_one_process(toy_tasks):
    """Unchanged weights (lr 0): 2 ranks, each predicting half of every XNLI set, log one process's scores."""
    args = ["--transfer_tasks", "XNLI", "--n_epochs", 1, "--epoch_size", 16, "--optimizer_e", "adam,lr=0",
            "--optimizer_p", "adam,lr=0"]
    single = logged_scores(python("glue-xnli.py", *finetune_flags(toy_tasks, "eval-single", "model_no_dropout.pth"),
                                  *args))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(port), "glue-xnli.py",
                           *map(str, finetune_flags(toy_tasks, "eval-ddp", "model_no_dropout.pth", 8)),
                           *map(str, args)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = logged_scores(proc)
    assert len(single) == len(ddp) == 1 and single[0].keys() == ddp[0].keys()
    assert {f"xnli_{split}_{lg}_acc" for split in ("valid", "test") for lg in LANGS} < set(single[0])
    for k, v in single[0].items():
        assert ddp[0][k] == pytest.approx(v, rel=1e-6), k


def test_a_model_pretrained_with_sparse_memory_gradients_fine_tunes(toy_tasks):
    """--mem_sparse true made the memory values' gradients sparse, which --optimizer_e's Adam refuses (and
    glue-xnli.py has no sparse optimizer): fine-tuning takes them dense."""
    from xlm.model.checkpoint import config_from_params
    dico = load_model(str(toy_tasks / "model.pth")).dico
    params = dict(emb_dim=32, n_layers=1, n_heads=4, dropout=0.1, attention_dropout=0.1, gelu_activation=True,
                  n_langs=len(LANGS), lang2id={lg: i for i, lg in enumerate(LANGS)}, id2lang=dict(enumerate(LANGS)),
                  n_words=len(dico), use_memory=True, mem_enc_positions="0+", mem_sparse=True, mem_k_dim=16,
                  mem_n_keys=16, mem_heads=2, mem_knn=4)
    torch.manual_seed(0)
    model = TransformerModel(config_from_params(params, len(dico)))
    assert next(iter(model.memories.values())).values.sparse
    save_checkpoint(checkpoint_payload(dico, params, model=model), toy_tasks / "model_sparse_memory.pth")
    proc = python("glue-xnli.py", *finetune_flags(toy_tasks, "sparse", "model_sparse_memory.pth"),
                  "--transfer_tasks", "SST-2", "--n_epochs", 1, "--epoch_size", 32)
    scores = logged_scores(proc)
    assert scores and {s["epoch"] for s in scores} == {0} and "valid_sst-2_acc" in scores[0]


def test_weighted_training_of_a_regression_says_it_is_unweighted(toy_tasks):
    proc = finetune(toy_tasks, "--transfer_tasks", "STS-B", "--n_epochs", 1, "--epoch_size", 32,
                    "--weighted_training", "true", exp_id="weighted_sts")
    assert "--weighted_training: STS-B is trained unweighted (a regression)" in proc.stderr


def test_examples_longer_than_the_positions_are_refused_before_training(tmp_path):
    """A valid pair of 700 + 10 tokens stopped the run in an embedding lookup after an epoch's training
    (the original's IndexError); a training one only if --max_len keeps it (each sentence is cut to it)."""
    from xlm.data.datasets import ParallelDataset, SentenceDataset
    from xlm.data.dictionary import SPECIAL_WORDS
    from xlm.evaluation.classification import LabelledSplit
    dico = Dictionary.from_words([(w, 0) for w in SPECIAL_WORDS] + [("a", 3), ("b", 2)])
    corpora = []
    for name, lengths in (("s1", (5, 700, 3)), ("s2", (4, 10, 2))):
        (tmp_path / name).write_text("".join(" ".join("a" * n) + "\n" for n in lengths), encoding="utf-8")
        corpora.append(binarize(tmp_path / name, dico, tmp_path / f"{name}.pth", threads=1))
    pairs = LabelledSplit(ParallelDataset(*corpora, keep_empty=True), None)
    with pytest.raises(DataError, match=r"s1.pth, .*s2.pth: pair 1 makes a sequence of 713 positions with its three "
                                        r"</s>, more than the model's 512$"):
        pairs.check_fits(512)
    pairs.check_fits(512, max_len=256)  # training cuts each sentence to 256 tokens: 256 + 12 - 1
    with pytest.raises(DataError, match=r"pair 1 makes a sequence of 611 positions .* \(cut to --max_len 600\)"):
        pairs.check_fits(512, max_len=600)
    single = LabelledSplit(SentenceDataset(corpora[0]), None)
    with pytest.raises(DataError, match="s1.pth: sentence 1 has 700 tokens, more than the 510 that the model's 512"):
        single.check_fits(512)
    single.check_fits(702)


def test_a_checkpoint_that_is_not_the_tasks_is_one_clear_error(toy_tasks):
    """A pretrained model in place of checkpoint-XNLI.pth stopped the resume with a KeyError, another
    task's classifier with load_state_dict's size mismatch."""
    import shutil
    folder = toy_tasks / "dumped" / "ft" / "foreign"
    folder.mkdir(parents=True)
    shutil.copy(toy_tasks / "model.pth", folder / "checkpoint-XNLI.pth")
    proc = finetune(toy_tasks, "--transfer_tasks", "XNLI", "--n_epochs", 1, exp_id="foreign", check=False)
    assert proc.returncode == 1 and "checkpoint-XNLI.pth: not a checkpoint of glue-xnli.py (no classifier, " \
        "train_state); move it away" in proc.stderr.splitlines()[-1], proc.stderr[-2000:]
    finetune(toy_tasks, "--transfer_tasks", "SST-2", "--n_epochs", 1, "--epoch_size", 32, exp_id="sst")
    shutil.copy(toy_tasks / "dumped" / "ft" / "sst" / "checkpoint-SST-2.pth", folder / "checkpoint-XNLI.pth")
    proc = finetune(toy_tasks, "--transfer_tasks", "XNLI", "--n_epochs", 1, exp_id="foreign", check=False)
    assert proc.returncode == 1 and "(classifier) weights do not fit the model: shape mismatch: 1.weight: " \
        "checkpoint (2, 32) vs model (3, 32)" in proc.stderr.splitlines()[-1], proc.stderr[-2000:]
