"""A 2-rank torchrun run (gloo) in which one rank is killed (SIGKILL) at a random iteration: the other rank
stops within a minute, the last checkpoint (written at each end of epoch) loads, and the same command run
again resumes from it and gives the losses of the uninterrupted run."""
import os
import random
import re
import signal
import subprocess
import time

import pytest

from conftest import ROOT, TWO_RANK_FLAGS, torchrun
from test_train import losses_of
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
    ckpt = read_checkpoint(log.parent / "checkpoint.pth")
    assert ckpt["train_state"]["n_total_iter"] in (6, 12, 18) and ckpt["train_state"]["n_total_iter"] <= at + 1

    command, env = torchrun(*TWO_RANK_FLAGS, "--exp_id", "killed", "--dump_path", tmp_path, "--data_path", small_sample)
    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    resumed = log.read_text()
    assert f"Resumed from {log.parent / 'checkpoint.pth'}: epoch " in resumed
    assert losses_of(resumed) == losses_of(two_rank_reference)
