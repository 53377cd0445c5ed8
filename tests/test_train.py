"""train.py as a user runs it: the original README's pretraining flags at toy sizes on the sample data."""
import json
import os
import re
import runpy
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import xlm
from conftest import ROOT, TWO_RANK_FLAGS, python, torchrun
from xlm.data.bpe import remove_bpe
from xlm.fileio import DataError
from xlm.model.checkpoint import read_checkpoint, save_checkpoint
from xlm.train.options import parse_params

TINY = ["--emb_dim", "32", "--n_layers", "2", "--n_heads", "4", "--batch_size", "8", "--bptt", "32",
        "--gelu_activation", "true", "--max_len", "40"]


def train(data, dump, exp_id, *flags, check=True):
    return python("train.py", "--exp_name", "test", "--exp_id", exp_id, "--dump_path", dump, "--data_path", data,
                  *TINY, *flags, check=check)


def scores_of(log):
    return [json.loads(line.split("__log__:", 1)[1]) for line in log.splitlines() if "__log__:" in line]


def losses_of(log):
    """{iteration: line of losses} from the progress lines; a later line for the same iteration wins."""
    found = {}
    for line in log.splitlines():
        m = re.search(r" - +(\d+) - .*? words/s - (.*?) -  - model LR", line)
        if m:
            found[int(m.group(1))] = m.group(2)
    return found


def test_mlm_tlm_pretraining(small_sample, tmp_path):
    """The original README's XLM en-fr MLM+TLM command, at toy sizes."""
    train(small_sample, tmp_path, "mlm", "--lgs", "en-fr", "--mlm_steps", "en,fr,en-fr", "--dropout", "0.1",
          "--attention_dropout", "0.1",
          "--optimizer", "adam_inverse_sqrt,beta1=0.9,beta2=0.98,lr=0.002,warmup_updates=20",
          "--epoch_size", "400", "--max_epoch", "3", "--validation_metrics", "_valid_mlm_ppl",
          "--stopping_criterion", "_valid_mlm_ppl,10", "--word_mask_keep_rand", "0.8,0.1,0.1", "--word_pred", "0.15")
    dump = tmp_path / "test" / "mlm"
    assert {"train.log", "params.pkl", "checkpoint.pth", "best-valid_mlm_ppl.pth",
            "train.jsonl"} <= set(os.listdir(dump))
    scores = scores_of((dump / "train.log").read_text())
    assert [s["epoch"] for s in scores] == [0, 1, 2]
    # the original's evaluator writes the references of every loaded pair when a run starts, BPE removed
    refs = dump / "hypotheses"
    assert sorted(os.listdir(refs)) == [f"ref.{d}.{split}.txt" for d in ("en-fr", "fr-en")
                                        for split in ("test", "valid")]
    valid_fr = (refs / "ref.en-fr.valid.txt").read_text(encoding="utf-8").splitlines()
    assert len(valid_fr) == 150 and "@@" not in " ".join(valid_fr)
    assert sorted(valid_fr) == sorted(remove_bpe(line.replace("<unk>", "<<unk>>")) for line in
                                      (small_sample / "valid.en-fr.fr").read_text(encoding="utf-8").splitlines())
    assert list(scores[0])[:9] == ["epoch", "valid_en_mlm_ppl", "valid_en_mlm_acc",
                                   "valid_fr_mlm_ppl", "valid_fr_mlm_acc",
                                   "valid_en_fr_mlm_ppl", "valid_en_fr_mlm_acc", "valid_mlm_ppl", "valid_mlm_acc"]
    assert scores[-1]["valid_mlm_ppl"] < 0.7 * scores[0]["valid_mlm_ppl"]
    assert scores[-1]["valid_en_fr_mlm_ppl"] < scores[0]["valid_en_fr_mlm_ppl"]
    # the checkpoints load with the public loader, in the original's layout
    best = xlm.load_model(dump / "best-valid_mlm_ppl.pth")
    assert best.encoder.config.n_langs == 2 and best.params["lang2id"] == {"en": 0, "fr": 1}
    # the learning curves of the run, drawn as a user would
    png = python("tools/plot_log.py", dump).stdout.strip()
    assert png.endswith("curves.png") and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    plot_log = runpy.run_path(str(ROOT / "tools" / "plot_log.py"))
    curves = plot_log["loss_curves"](plot_log["read_events"](dump / "train.jsonl")[0])
    assert sorted(curves) == ["MLM-en", "MLM-en-fr", "MLM-fr"] and len(curves["MLM-en"]) > 1
    ckpt = read_checkpoint(dump / "checkpoint.pth")
    assert {"epoch", "n_total_iter", "best_metrics", "best_stopping_criterion", "model", "model_optimizer",
            "dico_id2word", "dico_word2id", "dico_counts", "params"} <= set(ckpt)
    # the original's conventions: the last finished epoch, the best criterion value as it is (not negated)
    best_ppl = min(s["valid_mlm_ppl"] for s in scores)
    assert ckpt["epoch"] == 2 and ckpt["best_stopping_criterion"] == pytest.approx(best_ppl)
    assert ckpt["best_metrics"] == {"valid_mlm_ppl": pytest.approx(best_ppl)}

    # a checkpoint as the original writes it (no train_state) resumes at epoch + 1 with its stopping state
    # and its learning-rate schedule: a raw best of 1e9 is beaten at once, so patience 0 does not stop the run
    del ckpt["train_state"]
    ckpt["best_stopping_criterion"], ckpt["best_metrics"] = 1e9, {"valid_mlm_ppl": 1e9}
    for group in ckpt["model_optimizer"]["param_groups"]:
        group["num_updates"] = 1000
    save_checkpoint(ckpt, tmp_path / "original.pth")
    train(small_sample, tmp_path, "resumed", "--lgs", "en-fr", "--mlm_steps", "en,fr,en-fr", "--dropout", "0.1",
          "--attention_dropout", "0.1",
          "--optimizer", "adam_inverse_sqrt,beta1=0.9,beta2=0.98,lr=0.002,warmup_updates=20",
          "--epoch_size", "120", "--max_epoch", "5", "--validation_metrics", "_valid_mlm_ppl",
          "--stopping_criterion", "_valid_mlm_ppl,0", "--reload_checkpoint", tmp_path / "original.pth")
    log = (tmp_path / "test" / "resumed" / "train.log").read_text()
    assert f"Resumed from {tmp_path / 'original.pth'}: epoch 3, iteration {ckpt['n_total_iter']}" in log
    assert [s["epoch"] for s in scores_of(log)] == [3, 4]
    assert "New best validation score" in log
    # at most 5 rounds of 3 steps after update 1000 of an inverse-sqrt schedule (not back in its warm-up)
    first_lr = float(re.search(r"model LR: ([0-9.e+-]+)", log).group(1))
    assert 0.002 * (20 / 1016) ** 0.5 < first_lr < 0.002 * (20 / 1000) ** 0.5


def test_clm_pretraining(small_sample, tmp_path):
    train(small_sample, tmp_path, "clm", "--lgs", "de-en", "--clm_steps", "de,en,de-en", "--optimizer",
          "adam,lr=0.002", "--epoch_size", "400", "--max_epoch", "2")
    scores = scores_of((tmp_path / "test" / "clm" / "train.log").read_text())
    assert {"valid_de_clm_ppl", "valid_en_clm_acc", "valid_de-en_clm_ppl", "valid_clm_ppl",
            "test_clm_acc"} <= set(scores[0])
    assert scores[-1]["valid_clm_ppl"] < 0.9 * scores[0]["valid_clm_ppl"]


RESUME_FLAGS = ["--lgs", "en-fr", "--mlm_steps", "en,en-fr", "--clm_steps", "fr", "--epoch_size", "480",
                "--max_epoch", "2", "--log_interval", "1", "--checkpoint_every", "7", "--dropout", "0.1",
                "--optimizer", "adam_inverse_sqrt,lr=0.001,warmup_updates=10"]


# 128 dimensions: CPU training's matmuls go through oneDNN (xlm/model/linear.py; XLM_ONEDNN=1 whatever the
# CPU), 32 through MKL
@pytest.mark.parametrize("width", [[], ["--emb_dim", "128"]], ids=["mkl", "onednn"])
def test_sigkill_then_rerun_resumes_exactly(small_sample, tmp_path, width, monkeypatch):
    if width:
        monkeypatch.setenv("XLM_ONEDNN", "1")
    train(small_sample, tmp_path, "whole", *RESUME_FLAGS, *width)
    reference = (tmp_path / "test" / "whole" / "train.log").read_text()
    # the same command, killed with SIGKILL in the middle of the second epoch, then run again
    args = [sys.executable, "train.py", "--exp_name", "test", "--exp_id", "killed", "--dump_path", str(tmp_path),
            "--data_path", str(small_sample), *TINY, *RESUME_FLAGS, *width]
    log = tmp_path / "test" / "killed" / "train.log"
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    # early in the second epoch (iterations 21-40), read often: a 32-dimension round takes milliseconds
    while time.time() < deadline and not (log.exists() and re.search(r" - +23 - ", log.read_text())):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first_attempt = log.read_text()
    assert "End of epoch 0" in first_attempt and "End of epoch 1" not in first_attempt
    python(*args[1:])
    resumed = log.read_text()
    assert "Resumed from" in resumed
    expected, got = losses_of(reference), losses_of(resumed)
    assert len(expected) >= 40 and got == expected
    assert scores_of(resumed)[-1] == scores_of(reference)[-1]



def wait_for_log(log, pattern, proc, seconds=300):
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None and not (log.exists() and re.search(pattern, log.read_text())):
        time.sleep(0.1)
    assert log.exists() and re.search(pattern, log.read_text()), f"no {pattern!r} in {log}"


def slowed_train_py(target, condition, seconds):
    """A script running train.py (its arguments after the first) in which `target` ("module:Class.method"),
    the first time `condition` (an expression of self) holds, touches the file named by the first argument
    and sleeps: a step or an evaluation that takes long, for a signal to arrive in."""
    module, attribute = target.split(":")
    cls, method = attribute.split(".")
    return f"""
import importlib, pathlib, runpy, sys, time
cls = getattr(importlib.import_module("{module}"), "{cls}")
original, marker = cls.{method}, pathlib.Path(sys.argv.pop(1))

def slowed(self, *args):
    if not marker.exists() and {condition}:
        marker.touch()
        time.sleep({seconds})
    return original(self, *args)

cls.{method} = slowed
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


# a round that takes a minute (a huge batch, a slow file system)
SLOW_SECOND_ROUND = slowed_train_py("xlm.train.loop:Trainer.train_round", "self.state.n_total_iter == 1", 60)
# the first batch of an evaluation that takes long (BLEU of a large test set)
SLOW_EVALUATION = slowed_train_py("xlm.train.signals:StopSignals.check_evaluation", "True", 3)


def test_ctrl_c_saves_after_the_step_and_twice_stops_at_once(small_sample, tmp_path):
    """Ctrl-C (SIGINT) is SIGTERM's graceful stop: one process saves a checkpoint after the round it is in
    (no progress line needed: --log_interval 1000), exits with status 130, and a rerun resumes; a second
    Ctrl-C in a long round, a second or more after the first, stops the run at once, and its log says so."""
    def flags(exp_id, *more):
        return ["--exp_name", "test", "--exp_id", exp_id, "--dump_path", str(tmp_path), "--data_path",
                str(small_sample), *TINY, "--lgs", "en", "--mlm_steps", "en", "--max_epoch", "1",
                "--log_interval", "1000", *more]
    args = ["train.py", *flags("once", "--epoch_size", "100000")]
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = tmp_path / "test" / "once" / "train.log"
    wait_for_log(log, "Starting epoch 0", proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(120) == 128 + signal.SIGINT, proc.stderr.read().decode()[-2000:]
    text = log.read_text()
    assert "saving a checkpoint after this step (or evaluation batch) (Ctrl-C again to stop now)" in text
    assert "Stopped by signal 2 after saving" in text and "End of epoch" not in text
    stopped_at = read_checkpoint(str(log.parent / "checkpoint.pth"))["train_state"]["n_total_iter"]
    assert 1 <= stopped_at < 100
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for_log(log, f"Resumed from .*iteration {stopped_at}", proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(120) == 128 + signal.SIGTERM

    marker = tmp_path / "in_slow_round"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SECOND_ROUND, str(marker), *flags("twice")], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    log = tmp_path / "test" / "twice" / "train.log"
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert marker.exists(), proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)  # at once: torchrun passing the terminal's Ctrl-C on, which is not a second
    wait_for_log(log, "Ctrl-C again to stop now", proc)
    time.sleep(1.5)
    assert proc.poll() is None  # still in its long round
    proc.send_signal(signal.SIGINT)
    code = proc.wait(60)
    assert code not in (0, 128 + signal.SIGINT) and "Stopped by signal" not in log.read_text()
    assert "KeyboardInterrupt" in proc.stderr.read().decode()
    # the log says why it ends there, and that nothing was saved to resume from
    assert log.read_text().rstrip().endswith("Stopped by a second Ctrl-C; no checkpoint was saved: the same "
                                             "command starts over")


def test_eval_only_stops_at_a_signal_and_a_drawn_exp_id_is_named_to_resume(small_sample, tmp_path):
    """--eval_only has nothing to save: SIGTERM stops its evaluation at the next batch (it said it would save,
    and evaluated every set); without --exp_id the line that says how to resume names the drawn one."""
    base = ["--exp_name", "test", "--dump_path", str(tmp_path), "--data_path", str(small_sample), *TINY,
            "--lgs", "en-fr", "--mlm_steps", "en,fr,en-fr"]
    marker = tmp_path / "evaluating"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_EVALUATION, str(marker), *base, "--exp_id", "ev",
                             "--eval_only", "true"], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 128 + signal.SIGTERM, proc.stderr.read().decode()[-2000:]
    text = (tmp_path / "test" / "ev" / "train.log").read_text()
    assert "Received signal 15: stopping at the next evaluation batch" in text
    assert text.rstrip().endswith("Stopped by signal 15; nothing to save") and "__log__" not in text

    proc = subprocess.Popen([sys.executable, "train.py", *base, "--epoch_size", "100000", "--log_interval", "1000"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:  # a failure here must not leave a run of 100,000-sentence epochs behind (it slowed CI's later tests)
        deadline = time.time() + 120
        while not [p for p in (tmp_path / "test").glob("*/train.log") if p.parent.name != "ev"]:  # the drawn id's
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-2000:]
            time.sleep(0.1)
        log = next(p for p in (tmp_path / "test").glob("*/train.log") if p.parent.name != "ev")
        wait_for_log(log, "Starting epoch 0", proc)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 128 + signal.SIGINT
    finally:
        if proc.poll() is None:
            proc.kill()
    assert log.read_text().rstrip().endswith(
        f"Stopped by signal 2 after saving; the same command with --exp_id {log.parent.name} resumes")


def test_a_killed_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pth"
    save_checkpoint({"model": {"w": torch.ones(3)}, "epoch": 1}, path)
    # a writer killed in the middle of torch.save (SIGKILL: no clean-up runs)
    code = ("import os, signal, torch; from xlm.model.checkpoint import save_checkpoint\n"
            "def killed_mid_write(payload, f):\n"
            "    f.write(b'half a checkpoint')\n"
            "    f.flush()\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n"
            "torch.save = killed_mid_write\n"
            f"save_checkpoint({{'model': {{'w': torch.zeros(1000000)}}}}, {str(path)!r})\n")
    proc = python("-c", code, check=False)
    assert proc.returncode == -signal.SIGKILL
    assert read_checkpoint(path)["epoch"] == 1 and torch.equal(read_checkpoint(path)["model"]["w"], torch.ones(3))


def test_torchrun_two_ranks_match_one_process(small_sample, two_rank_run, tmp_path):
    """2 ranks (gloo) read batches 2i and 2i + 1 of one process's order, each a window of the stream laid out
    in --batch_size rows, as each of the original's ranks reads its own: the updates of one process that
    accumulates the gradients of 2 batches, the same losses."""
    # the original counts an epoch in sentences per process: 2 ranks reach 24 when one process reaches 48
    flags = [*TWO_RANK_FLAGS[1:], "--exp_id", "single", "--dump_path", tmp_path, "--data_path", small_sample]
    python("train.py", *flags, "--accumulate_gradients", "2", "--epoch_size", "48")
    single = losses_of((tmp_path / "test" / "single" / "train.log").read_text())
    ddp = losses_of((two_rank_run / "train.log").read_text())
    assert len(single) == 48 and len(ddp) == 24
    for it in ddp:
        a = sum(float(single[2 * it - k].split(":")[1]) for k in (0, 1)) / 2
        b = float(ddp[it].split(":")[1])
        assert abs(a - b) < 1e-4 * max(1, abs(a)), (it, a, b)
    assert (two_rank_run / "train.log-1").exists()
    # words/s is rank 0's own, as the original prints it (each rank predicts 4 x 32 tokens a step here)
    rows = [json.loads(line) for line in (two_rank_run / "train.jsonl").read_text().splitlines()]
    rates = [(r["words_per_s"], r["words_per_s_all_ranks"]) for r in rows if r["kind"] == "train"]
    assert len(rates) == 24 and all(total == pytest.approx(2 * own) for own, total in rates)


def test_torchrun_ranks_draw_their_own_rounds_and_resume_them(small_sample, tmp_path):
    """Each rank draws its own rounds, as each of the original's ranks does (`--mlm_steps en,fr`: two draws of
    en or fr a round, so that an update averages a mix of languages); the checkpoint keeps every rank's data
    positions, and a run resumed at the end of epoch 0 gives the losses of the uninterrupted run."""
    flags = ["train.py", "--exp_name", "t", "--lgs", "en-fr", "--mlm_steps", "en,fr", "--epoch_size", "48",
             "--batch_size", "4", "--log_interval", "1", "--optimizer", "adam,lr=0.001", "--emb_dim", "32",
             "--n_layers", "1", "--n_heads", "4", "--bptt", "16", "--dump_path", tmp_path, "--data_path", small_sample]
    for exp_id, epochs in (("whole", 2), ("resumed", 1), ("resumed", 2)):
        command, env = torchrun(*flags, "--exp_id", exp_id, "--max_epoch", epochs)
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
    positions = read_checkpoint(tmp_path / "t" / "whole" / "checkpoint.pth")["train_state"]["iterators"]
    assert len(positions) == 2
    read = [{key: (state["pass"], state["position"]) for key, state in rank.items()} for rank in positions]
    assert read[0] != read[1], read  # rank 1 read en and fr other times than rank 0
    whole, resumed = (losses_of((tmp_path / "t" / exp_id / "train.log").read_text()) for exp_id in ("whole", "resumed"))
    assert "Resumed from" in (tmp_path / "t" / "resumed" / "train.log").read_text()
    assert len(whole) == 12 and resumed == whole


@pytest.mark.parametrize("flags, message", [
    ([], "nothing to train"),
    (["--mlm_steps", "en,de"], "--mlm_steps: language 'de' is not in --lgs"),
    (["--mlm_steps", "en,en"], "appears twice"),
    (["--mlm_steps", "en", "--word_mask_keep_rand", "0.8,0.1,0.2"], "sum to 1"),
    (["--mlm_steps", "en", "--word_pred", "1.5"], "--word_pred must be in"),
    (["--mlm_steps", "en", "--optimizer", "adam,lr=1e-4"], "plain decimals"),
    (["--mlm_steps", "en", "--optimizer", "adamw,lr=0.1"], "unknown optimizer 'adamw'"),
    (["--mlm_steps", "en", "--lambda_mlm", "0:1,0:2"], "must increase strictly"),
    (["--mlm_steps", "en", "--emb_dim", "30"], "multiple of --n_heads"),
    (["--mlm_steps", "en", "--amp", "0", "--fp16", "true"], "--amp 0 means float32"),
    (["--mlm_steps", "en", "--amp", "1"], "--amp 1 is an apex opt level of float16 training: add --fp16 true"),
    (["--mlm_steps", "en", "--fp16", "true", "--bf16", "true"], "exclusive"),
    (["--mlm_steps", "en", "--asm", "true"], "--share_inout_emb false"),
    (["--mlm_steps", "en", "--epoch_size", "-1"], "broken in the original"),
    (["--mlm_steps", "en", "--stopping_criterion", "valid_en_mlm_ppl"], "metric,N"),
    (["--mt_steps", "en-fr"], "add --encoder_only false"),
    (["--pc_steps", "en-en"], "pairs a language with itself"),
    (["--encoder_only", "false", "--mt_steps", "en-fr", "--word_shuffle", "0.5"], "--word_shuffle must be 0 or > 1"),
    (["--encoder_only", "false", "--bt_steps", "en-fr-fr"], "must be l1-l2-l1"),
    (["--mlm_steps", "en", "--eval_bleu", "true"], "--eval_bleu needs --mt_steps or --bt_steps"),
    (["--encoder_only", "false", "--ae_steps", "en", "--reload_model", "a.pth"], "'encoder_path,decoder_path'"),
    (["--mlm_steps", "en", "--reload_model", "missing.pth"], "is not a file"),
    (["--mlm_steps", "en", "--reload_model", "a.pth,b.pth"], "a.pth,b.pth is not a file (one path for an encoder"),
    (["--mlm_steps", "en", "--use_memory", "true", "--mem_k_dim", "15"], "must be even"),
])
def test_bad_flag_combinations(tmp_path, flags, message):
    argv = ["--exp_name", "x", "--lgs", "en-fr", "--data_path", str(tmp_path), *flags]
    with pytest.raises(DataError, match=re.escape(message)):
        parse_params(argv)


def test_an_encoders_path_may_hold_a_comma(tmp_path):
    """As the original, an encoder's --reload_model is the whole value: a sweep's folder `lr=0.001,bs=32`."""
    path = tmp_path / "lr=0.001,bs=32" / "best.pth"
    path.parent.mkdir()
    path.write_bytes(b"")
    params = parse_params(["--exp_name", "x", "--lgs", "en-fr", "--data_path", str(tmp_path), "--mlm_steps", "en",
                           "--reload_model", str(path)])
    assert params.reload_model_paths == [str(path)]


@pytest.mark.parametrize("argv, message", [
    (["--lgs", "en", "--mlm_steps", "en"], "--exp_name is required"),
    (["--exp_name", "x", "--mlm_steps", "en"], "--lgs is required"),
    (["--exp_name", " ", "--lgs", "en", "--mlm_steps", "en"], "--exp_name is required"),  # as the original asserts
    (["--exp_name", "x", "--lgs", "en-fr-en", "--mlm_steps", "en"], "appears twice in 'en-fr-en'"),
    (["--exp_name", "x", "--lgs", "en", "--mlm_steps", "en", "--data_path", "/nonexistent"], "is not a directory"),
    (["--lgs", "en-fr", "--mlm_steps", "en", "--accumulate_gradients", "0"], "--accumulate_gradients must be"),
    (["--lgs", "en-fr", "--mlm_steps", "en", "--tokens_per_batch", "0"], "--tokens_per_batch must be"),
    (["--lgs", "en-fr", "--mlm_steps", "en", "--amp", "5"], "--amp must be"),
    (["--lgs", "en-fr", "--mlm_steps", "en", "--use_memory", "true", "--mem_enc_positions", "9"],
     "memory position 9 is not a layer of a 4-layer model"),
    (["--lgs", "en-fr", "--mlm_steps", "en", "--use_memory", "true", "--mem_implementation", "dense"],
     "--mem_implementation dense: use pq_fast, pq_default"),
    (["--lgs", "en-fr", "--mlm_steps", "en", "--use_memory", "true", "--mem_implementation", "flat", "--mem_knn", "40",
      "--mem_n_keys", "32", "--mem_enc_positions", "1"], "more than the --mem_n_keys 32 keys"),
    (["--lgs", "en-fr", "--mlm_steps", "en", "--use_memory", "true", "--mem_knn", "40", "--mem_n_keys", "32",
      "--mem_enc_positions", "1"], "more than the --mem_n_keys 32 sub-keys of each half"),
    # an IndexError while the data was read
    (["--lgs", "en-fr", "--eval_only", "true"], "nothing to evaluate: give --clm_steps"),
    # the original made '' a language; xlm dropped it: another model
    (["--lgs", "en--fr", "--mlm_steps", "en"], "--lgs 'en--fr': an empty language name"),
    (["--lgs", "en-fr-", "--mlm_steps", "en"], "--lgs 'en-fr-': an empty language name"),
    # the original asserts it; xlm trained from scratch
    (["--lgs", "en-fr", "--encoder_only", "false", "--mt_steps", "en-fr", "--reload_model", ","],
     "--reload_model ',' names no checkpoint"),
    (["--lgs", "en-fr", "--mlm_steps", "en", "--use_memory", "true", "--mem_enc_positions", "1", "--emb_dim", "64",
      "--mem_v_dim", "32"], "--mem_v_dim 32: a memory's output joins the hidden states of --emb_dim 64"),
])
def test_more_bad_flags(tmp_path, argv, message):
    if "--data_path" not in argv:
        argv = argv + ["--data_path", str(tmp_path)]
    if "--exp_name" not in argv and "--exp_name is required" not in message:
        argv = ["--exp_name", "x"] + argv
    with pytest.raises(DataError, match=re.escape(message)):
        parse_params(argv)


def test_conditional_flags_need_their_switch(tmp_path, capsys):
    """As in the original, --asm_cutoffs and the --mem_* flags exist only with --asm / --use_memory true."""
    with pytest.raises(SystemExit):
        parse_params(["--exp_name", "x", "--lgs", "en", "--mlm_steps", "en", "--data_path", str(tmp_path),
                      "--asm_cutoffs", "10,20"])
    assert "unrecognized arguments: --asm_cutoffs" in capsys.readouterr().err


def test_bad_inputs_are_one_clear_line(small_sample, tmp_path):
    """A metric found unknown once the model is built, through the command; missing data files, which
    train.py names as it loads the data, in this process."""
    proc = python("train.py", "--exp_name", "x", "--lgs", "en", "--mlm_steps", "en", "--data_path", small_sample,
                  "--dump_path", tmp_path, "--stopping_criterion", "valid_en_clm_ppl,2", check=False)
    assert proc.returncode != 0 and "--stopping_criterion: unknown metrics valid_en_clm_ppl" in proc.stderr
    assert "Traceback" not in proc.stderr
    from xlm.data.loader import load_training_data
    with pytest.raises(DataError, match=f"^missing data files: .*{small_sample / 'train.ro.pth'}"):
        load_training_data(parse_params(["--exp_name", "x", "--lgs", "en-ro", "--mlm_steps", "ro", "--data_path",
                                         str(small_sample), "--dump_path", str(tmp_path)]))


def test_per_rank_shards_replace_the_train_file(small_sample, tmp_path):
    """The original's multi-GPU data: train.en.<local_rank>.pth, when present, is that rank's data (in a run of
    several processes)."""
    from xlm.data.loader import load_training_data
    from xlm.train.distributed import DistInfo
    from xlm.train.build import build_iterators
    for f in small_sample.iterdir():
        (tmp_path / f.name).symlink_to(f)
    (tmp_path / "train.en.1.pth").symlink_to(small_sample / "train.fr.pth")
    params = parse_params(["--exp_name", "x", "--lgs", "en-fr", "--mlm_steps", "en,fr", "--data_path", str(tmp_path),
                           "--batch_size", "4", "--bptt", "16"])
    rank1 = load_training_data(params, local_rank=1)
    assert rank1.mono["en"]["train"].path.endswith("train.en.1.pth") and rank1.sharded == {"en"}
    rank0 = load_training_data(params, local_rank=0)
    assert rank0.mono["en"]["train"].path.endswith("train.en.pth") and not rank0.sharded
    (tmp_path / "train.en.0.pth").symlink_to(small_sample / "valid.en.pth")
    single = load_training_data(params)  # one process reads the whole file, as the original (shards: several)
    assert single.mono["en"]["train"].path.endswith("train.en.pth") and not single.sharded
    from xlm.data import BatchIterator, StreamDataset
    iterators = build_iterators(params, rank1, DistInfo(rank=1, world_size=2, local_rank=1))
    fr = rank1.mono["fr"]["train"]
    own = next(BatchIterator(StreamDataset(fr, 4, 16, rank1.n_words), iterators[("pred", "en")].seed)).x
    single = BatchIterator(StreamDataset(fr, 4, 16, rank1.n_words), iterators[("pred", "fr")].seed)
    assert torch.equal(next(iterators[("pred", "en")]).x, own)  # all of its own shard, in batches of --batch_size
    next(single)
    assert torch.equal(next(iterators[("pred", "fr")]).x, next(single).x)  # batch 2 x i + 1 of one process's
    # AE and BT read all of the rank's own shard, in batches of --batch_size (they read half of it, in halves
    # of global batches of its sentences)
    params = parse_params(["--exp_name", "x", "--lgs", "en-fr", "--encoder_only", "false", "--ae_steps", "en,fr",
                           "--data_path", str(tmp_path), "--batch_size", "4"])
    rank1 = load_training_data(params, local_rank=1)
    ae = build_iterators(params, rank1, DistInfo(rank=1, world_size=2, local_rank=1))[("ae", "en")]
    seen = [len(next(ae).lengths) for _ in range(len(ae))]
    assert max(seen) == 4 and sum(seen) == len(ae.dataset.indices) > 0.99 * len(rank1.mono["en"]["train"].lengths)


def test_corpora_of_other_vocabularies_are_one_error(small_sample, tmp_path):
    from xlm.data.binarized import binarize
    from xlm.data.dictionary import Dictionary
    from xlm.data.loader import load_training_data
    for f in small_sample.iterdir():
        (tmp_path / f.name).symlink_to(f)
    (tmp_path / "valid.fr.pth").unlink()
    (tmp_path / "vocab.other").write_text("le 9\nla 8\n", encoding="utf-8")
    binarize(small_sample / "valid.fr", Dictionary.read_vocab(tmp_path / "vocab.other"), tmp_path / "valid.fr.pth")
    params = parse_params(["--exp_name", "x", "--lgs", "en-fr", "--mlm_steps", "en,fr", "--data_path", str(tmp_path)])
    with pytest.raises(DataError, match=re.escape(f"{tmp_path}/valid.fr.pth and {tmp_path}/train.en.pth were "
                                                  "binarized with different vocabularies")):
        load_training_data(params)


def test_each_objective_draws_its_own_batches(small_sample):
    """As the original's separate iterators: AE and BT on one language (or MLM and TLM on one pair) do not
    read the same batches in lockstep, while every rank computes the same order for a given objective."""
    from xlm.data.loader import load_training_data
    from xlm.train.distributed import DistInfo
    from xlm.train.build import build_iterators
    params = parse_params(["--exp_name", "x", "--lgs", "en-fr", "--encoder_only", "false", "--ae_steps", "en",
                           "--bt_steps", "en-fr-en", "--mt_steps", "en-fr,fr-en", "--mlm_steps", "en-fr",
                           "--data_path", str(small_sample), "--batch_size", "8"])
    data = load_training_data(params)
    iterators = build_iterators(params, data, DistInfo())
    assert not torch.equal(next(iterators[("ae", "en")]).x, next(iterators[("bt", "en")]).x)
    assert not torch.equal(next(iterators[("pred", "en", "fr")])[0].x, next(iterators[("mt", "en", "fr")])[0].x)
    # the two directions of a pair: a pass of the pairs each, in orders of their own, over one dataset
    en_fr, fr_en = iterators[("mt", "en", "fr")], iterators[("mt", "fr", "en")]
    assert en_fr.dataset is fr_en.dataset and en_fr.seed != fr_en.seed
    assert not torch.equal(next(en_fr)[0].x, next(fr_en)[0].x)
    from xlm.objectives.lm import MaskingConfig
    from xlm.train.pipeline import Plan, training_sizes
    plan = Plan(params, iterators, MaskingConfig.from_params(params, data.dico, data.n_words),
                torch.Generator().manual_seed(0), np.random.default_rng(0), training_sizes(params, data, iterators),
                {})
    src, tgt = plan._pair("mt", "fr", "en")  # fr-en's batches: French first
    english, french = data.para[("en", "fr")]["train"]
    assert [src.x[0, 1:int(src.lengths[0]) - 1].tolist(), tgt.x[0, 1:int(tgt.lengths[0]) - 1].tolist()] in [
        [french[i].tolist(), english[i].tolist()] for i in range(len(english))]
    again = build_iterators(params, data, DistInfo(rank=1, world_size=2, local_rank=1))
    assert {k: it.seed for k, it in iterators.items()} == {k: it.seed for k, it in again.items()}


def test_scripts_start_without_the_compiler_and_the_tokenizer():
    """torch._dynamo (loaded by torch.nn.attention.varlen, and by any torch.optim.Optimizer) and sacremoses
    added 2-3 s to every start of train.py, translate.py and glue-xnli.py: they are imported where they
    are used, and the original's Adam is not a torch Optimizer."""
    code = ("import sys, torch, xlm.train.loop, xlm.train.finetune, xlm.evaluation.mt, xlm.model.generate\n"
            "from xlm.train.schedules import build_optimizer\n"
            "p = torch.nn.Parameter(torch.zeros(2))\n"
            "o = build_optimizer([p], 'adam_inverse_sqrt,lr=0.001')\n"
            "p.grad = torch.ones(2); o.step(); o.zero_grad(); o.load_state_dict(o.state_dict())\n"
            "print(sorted(m for m in ('torch._dynamo', 'torch._inductor', 'sacremoses') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


@pytest.mark.usefixtures("keep_signal_handlers")
def test_progress_counts_words_and_sentences_as_the_original(small_sample, tmp_path):
    """sent/s counts the rows of each batch (pairs for TLM and PC; fewer than --batch_size with
    --tokens_per_batch), words/s the predicted tokens: every target but a sentence's first for AE, MT and
    BT, and every token of the concatenated pairs for PC."""
    from xlm.train.loop import Trainer
    trainer = Trainer(parse_params([
        "--exp_name", "count", "--dump_path", str(tmp_path), "--data_path", str(small_sample), "--lgs", "en-fr",
        "--encoder_only", "false", "--emb_dim", "32", "--n_layers", "1", "--n_heads", "4", "--batch_size", "8",
        "--bptt", "16", "--max_len", "30", "--tokens_per_batch", "60", "--mlm_steps", "en,en-fr",
        "--clm_steps", "fr", "--pc_steps", "en-fr", "--ae_steps", "en", "--mt_steps", "en-fr",
        "--bt_steps", "en-fr-en", "--word_shuffle", "3", "--word_dropout", "0.1", "--word_blank", "0.1"]))
    seen = []

    def recorded(items):
        for work in items:
            seen.append(work)
            yield work
    trainer.train_round(recorded(trainer.plan.items(0)))
    words = sents = 0
    for work in (w for w in seen if w.kind == "step"):
        t = work.inputs
        if work.objective == "pc":
            words += int(t["lengths"].sum())
            sents += len(t["labels"])
        elif work.objective in ("clm", "mlm"):
            words += len(t["y"])
            sents += len(t["x"])
        else:
            words += int((t["lengths"] - 1).sum())
            sents += len(t["lengths"])
    assert {w.objective for w in seen if w.kind == "step"} == {"clm", "mlm", "pc", "ae", "mt", "bt"}
    assert (trainer.state.n_words, trainer.state.n_sents) == (words, sents)
    assert sents < 8 * sum(w.kind == "step" for w in seen)  # --tokens_per_batch made smaller batches


class FakeClock:
    """loop.py's time: a training round moves it by 1 s, an evaluation by 100 s. Records each progress
    line's words/s and ETA, and each round's words."""

    def __init__(self, trainer, monkeypatch):
        from types import SimpleNamespace
        from xlm.train import loop
        self.now, self.words, self.lines = 0.0, {}, []
        monkeypatch.setattr(loop, "time", SimpleNamespace(time=lambda: self.now, perf_counter=time.perf_counter,
                                                           monotonic=time.monotonic))
        train_round, evaluate = trainer.train_round, trainer.evaluate
        write, info = trainer.metrics.write, trainer.logger.info

        def timed_round(plan):
            before = trainer.state.n_words
            train_round(plan)
            self.words[trainer.state.n_total_iter + 1] = trainer.state.n_words - before
            self.now += 1.0

        def slow_evaluation():
            self.now += 100.0
            return evaluate()

        def logged(message, *args):  # the progress line's text, then its metrics
            if "ETA epoch" in message:
                self.lines.append([None, None, str(args[-1])])
            info(message, *args)

        def recorded(kind, step, values):
            if kind == "train":
                self.lines[-1][:2] = step, values["words_per_s"]
            write(kind, step, values)
        monkeypatch.setattr(trainer, "train_round", timed_round)
        monkeypatch.setattr(trainer, "evaluate", slow_evaluation)
        monkeypatch.setattr(trainer.logger, "info", logged)
        monkeypatch.setattr(trainer.metrics, "write", recorded)


def rates_trainer(small_sample, tmp_path, *flags):
    from xlm.train.loop import Trainer
    return Trainer(parse_params([
        "--exp_name", "rates", "--exp_id", "a", "--dump_path", str(tmp_path), "--data_path", str(small_sample),
        "--lgs", "en", "--mlm_steps", "en", "--emb_dim", "16", "--n_layers", "1", "--n_heads", "2", "--batch_size",
        "8", "--bptt", "16", "--epoch_size", "40", "--max_epoch", "2", "--log_interval", "3", *flags]))


@pytest.mark.usefixtures("keep_signal_handlers")
def test_progress_rates_count_training_time_alone(small_sample, tmp_path, monkeypatch):
    """A progress line's rates divide what was trained since the line before by the time it took, also
    when an epoch ended in between: its last iterations count, its evaluation does not."""
    trainer = rates_trainer(small_sample, tmp_path)  # 5 rounds an epoch
    clock = FakeClock(trainer, monkeypatch)
    trainer.run()
    assert [line[0] for line in clock.lines] == [3, 6, 9]  # the line at 6 follows epoch 0's rounds 4 and 5
    for step, rate, _ in clock.lines:
        assert rate == pytest.approx(sum(clock.words[i] for i in range(step - 2, step + 1)) / 3.0)
    assert clock.lines[0][2] == "0:00:02"  # 3 s for 24 of the epoch's 40 sentences


@pytest.mark.usefixtures("keep_signal_handlers")
def test_eta_of_a_resumed_epoch_counts_from_the_resume(small_sample, tmp_path, monkeypatch):
    """A run resumed in mid-epoch (a checkpoint at iteration 2, 16 of 40 sentences) estimates the rest of
    the epoch from what it trained itself: 8 sentences in 1 s at iteration 3, so 2 s for the last 16."""
    first = rates_trainer(small_sample, tmp_path, "--checkpoint_every", "2")
    rounds = first.train_round

    def crash_after_two(plan):
        if first.state.n_total_iter == 2:
            raise KeyboardInterrupt
        rounds(plan)
    monkeypatch.setattr(first, "train_round", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        first.run()
    resumed = rates_trainer(small_sample, tmp_path)
    assert (resumed.state.n_total_iter, resumed.state.n_sentences) == (2, 16)
    clock = FakeClock(resumed, monkeypatch)
    resumed.run()
    assert clock.lines[0][0] == 3 and clock.lines[0][2] == "0:00:02"


@pytest.mark.usefixtures("keep_signal_handlers")
@pytest.mark.parametrize("when", ["round_4", "evaluation"])
def test_a_signal_in_a_round_or_an_evaluation_saves_and_the_rerun_goes_on(small_sample, tmp_path, monkeypatch,
                                                                          when):
    """SIGTERM in round 4 of an epoch of 5 (progress lines every 3 rounds), or in the second batch of the
    first set its evaluation scores: the run (one process) saves after round 4, or as at the epoch's end,
    unevaluated (before the set's third batch), and stops; the rerun goes on from there (evaluating the
    epoch) and ends as an uninterrupted run."""
    import signal
    import xlm.evaluation.lm as lm_module
    whole = rates_trainer(small_sample, tmp_path / "whole")
    whole.run()
    first = rates_trainer(small_sample, tmp_path / "parts")
    rounds, lm_scores, scored = first.train_round, lm_module.lm_scores, []

    def signalled_in_round_four(plan):
        if first.state.n_total_iter == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        rounds(plan)

    def signalled_in_a_set(*args, **kwargs):
        scored.append(1)
        if len(scored) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return lm_scores(*args, **kwargs)
    if when == "round_4":
        monkeypatch.setattr(first, "train_round", signalled_in_round_four)
    monkeypatch.setattr(lm_module, "lm_scores", signalled_in_a_set)
    first.run()
    assert first.signals.exit_status == 128 + signal.SIGTERM
    assert len(scored) == (0 if when == "round_4" else 2)
    monkeypatch.setattr(lm_module, "lm_scores", lm_scores)
    stopped_at = 4 if when == "round_4" else 5
    assert (first.state.epoch, first.state.n_total_iter) == (0, stopped_at)
    resumed = rates_trainer(small_sample, tmp_path / "parts")
    assert (resumed.state.epoch, resumed.state.n_total_iter) == (0, stopped_at)
    epochs = []
    evaluate = resumed.evaluate
    monkeypatch.setattr(resumed, "evaluate", lambda: epochs.append(resumed.state.epoch) or evaluate())
    resumed.run()
    assert epochs == [0, 1] and resumed.state.n_total_iter == whole.state.n_total_iter == 10
    for name, value in whole.models["model"].state_dict().items():
        assert torch.equal(resumed.models["model"].state_dict()[name], value), name


def test_the_progress_line_lists_losses_in_the_originals_order():
    """CLM, MLM, PC, AE, MT, BT in turn, a language's before a pair's, in --lgs order (it was sorted by name)."""
    from xlm.train.loop import original_order
    names = ["MT-en-fr", "MLM-fr", "BT-en-fr-en", "AE-fr", "MLM-en-fr", "CLM-fr", "AE-en", "MLM-en", "MT-fr-en"]
    assert sorted(names, key=lambda n: original_order(n, ["en", "fr"])) == \
        ["CLM-fr", "MLM-en", "MLM-fr", "MLM-en-fr", "AE-en", "AE-fr", "MT-en-fr", "MT-fr-en", "BT-en-fr-en"]


def test_scores_come_in_the_original_order(small_sample, tmp_path):
    """Each split's CLM, MLM and MT scores, then its means over the languages (after MT's), valid before
    test: the order of the original's `__log__` line, which a log reader may count on."""
    proc = train(small_sample, tmp_path, "order", "--encoder_only", "false", "--lgs", "en-fr", "--clm_steps", "en",
                 "--mlm_steps", "en,fr", "--mt_steps", "en-fr", "--eval_only", "true")
    expected = ["epoch"]
    for split in ("valid", "test"):
        for name in ("en_clm", "en_mlm", "fr_mlm", "en-fr_mt", "clm", "mlm"):
            expected += [f"{split}_{name}_ppl", f"{split}_{name}_acc"]
    assert list(scores_of(proc.stderr)[0]) == expected
