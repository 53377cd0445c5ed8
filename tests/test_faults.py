"""A 2-rank torchrun run (gloo) in which one rank is killed (SIGKILL) at a random iteration: the other rank
stops within a minute, the last checkpoint (written at each end of epoch) loads, and the same command run
again resumes from it and gives the losses of the uninterrupted run. Also one rank signalled in the middle
of an evaluation."""
import os
import random
import re
import signal
import subprocess
import time

import pytest

from conftest import ROOT, TWO_RANK_FLAGS, torchrun
from test_train import losses_of, scores_of
from xlm.model.checkpoint import read_checkpoint


def workers(torchrun_pid):
    """{rank: pid} of torchrun's workers: its children with RANK in their environment."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
        except OSError:
            continue
        if parent == torchrun_pid and b"RANK" in env:
            found[int(env[b"RANK"])] = int(pid)
    return found


@pytest.mark.parametrize("seed", [0, 1])
def test_a_killed_rank_stops_the_other_and_the_rerun_resumes_exactly(seed, small_sample, two_rank_reference, tmp_path):
    rng = random.Random(seed)
    victim, at = rng.randint(0, 1), rng.randint(7, 20)  # after the first checkpoint (end of epoch 0, iteration 6)
    command, env = torchrun(*TWO_RANK_FLAGS, "--exp_id", "killed", "--dump_path", tmp_path, "--data_path", small_sample)
    log = tmp_path / "test" / "killed" / "train.log"
    output = tmp_path / "torchrun.out"
    with open(output, "wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while (time.time() < deadline and proc.poll() is None
           and not (log.exists() and re.search(rf" - +{at} - ", log.read_text()))):
        time.sleep(0.05)
    ranks = workers(proc.pid)
    assert sorted(ranks) == [0, 1], output.read_text()[-4000:]
    os.kill(ranks[victim], signal.SIGKILL)
    killed = time.time()
    assert proc.wait(60) != 0 and time.time() - killed < 60
    with pytest.raises(ProcessLookupError):  # the other rank is gone too
        os.kill(ranks[1 - victim], 0)
    # the other rank's log says why it stopped: its collective failed, and where the rerun resumes (torchrun's
    # SIGTERM may come before or after, with its own line)
    survivor = [line for line in (log.parent / ("train.log-1" if victim == 0 else "train.log")).read_text()
                .splitlines() if "Stopped by" in line][-1]
    assert "Stopped by RuntimeError: " in survivor and " by peer" in survivor and "pair.cc" not in survivor and \
        survivor.endswith(f"the same command resumes from {log.parent / 'checkpoint.pth'}"), survivor
    ckpt = read_checkpoint(log.parent / "checkpoint.pth")
    assert ckpt["train_state"]["n_total_iter"] in (6, 12, 18) and ckpt["train_state"]["n_total_iter"] <= at + 1

    command, env = torchrun(*TWO_RANK_FLAGS, "--exp_id", "killed", "--dump_path", tmp_path, "--data_path", small_sample)
    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    resumed = log.read_text()
    assert f"Resumed from {log.parent / 'checkpoint.pth'}: epoch " in resumed
    assert losses_of(resumed) == losses_of(two_rank_reference)


SIGNALLED_IN_EVALUATION = """
import os, runpy, signal, sys
import xlm.evaluation.lm as lm
lm_scores, scored = lm.lm_scores, []

def signalled(*args, **kwargs):  # rank 1 alone, in the second batch it scores
    scored.append(1)
    if os.environ["RANK"] == "1" and len(scored) == 2:
        os.kill(os.getpid(), signal.SIGTERM)
    return lm_scores(*args, **kwargs)

lm.lm_scores = signalled
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


def test_a_signal_to_one_rank_mid_evaluation_stops_both_there(small_sample, two_rank_reference, tmp_path):
    """SIGTERM to rank 1 in the middle of epoch 0's first evaluated set: the ranks agree on it before the next
    batch (rank 1's share is the shorter), save the epoch's unevaluated end and stop; the rerun evaluates
    it and ends as the uninterrupted run."""
    script = tmp_path / "signalled_train.py"
    script.write_text(SIGNALLED_IN_EVALUATION)
    flags = [*TWO_RANK_FLAGS[1:], "--exp_id", "signalled", "--dump_path", tmp_path, "--data_path", small_sample]
    command, env = torchrun(script, *flags)
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    log = tmp_path / "test" / "signalled" / "train.log"
    assert proc.returncode != 0, proc.stderr[-4000:]
    for rank_log in (log, log.parent / "train.log-1"):
        text = rank_log.read_text()
        assert "Stopped by signal 15 after saving" in text and "Evaluated" not in text, text[-3000:]
    assert read_checkpoint(log.parent / "checkpoint.pth")["train_state"]["n_total_iter"] == 6

    command, env = torchrun("train.py", *flags)
    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    resumed = log.read_text()
    assert f"Resumed from {log.parent / 'checkpoint.pth'}: epoch 0, iteration 6" in resumed
    assert losses_of(resumed) == losses_of(two_rank_reference)
    assert scores_of(resumed) == scores_of(two_rank_reference)
