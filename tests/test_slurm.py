"""train.py under SLURM without a cluster: two tasks started as srun starts them (the SLURM_* variables of
a 1-node, 2-task job step) and a stand-in `scontrol` on PATH (conftest's fixture) that expands host lists as
the real one does and records `scontrol requeue`. They must train as torchrun does, and SLURM's time-limit
warning (SIGUSR1) must leave a checkpoint and a requeued job whose rerun resumes exactly."""
import os
import re
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from conftest import ROOT, TWO_RANK_FLAGS, free_port
from test_train import losses_of
from xlm.fileio import DataError
from xlm.train.distributed import slurm_env

JOB_ID = "4242"

def srun(data, dump, port):
    """Both tasks of `srun --ntasks 2 python train.py ...` (no --exp_id: SLURM's job id is the default)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "LOCAL_RANK",
                                                                     "MASTER_"))}
    base.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", SLURM_JOB_ID=JOB_ID, SLURM_JOBID=JOB_ID, SLURM_STEP_ID="0",
                SLURM_NTASKS="2", SLURM_NPROCS="2", SLURM_JOB_NUM_NODES="1", SLURM_NNODES="1", SLURM_NODEID="0",
                SLURM_JOB_NODELIST="localhost", SLURM_STEP_NODELIST="localhost", SLURM_TASKS_PER_NODE="2",
                SLURM_NTASKS_PER_NODE="2")
    return [subprocess.Popen([sys.executable, *TWO_RANK_FLAGS, "--dump_path", str(dump), "--data_path", str(data),
                              "--master_port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env={**base, "SLURM_PROCID": str(task), "SLURM_LOCALID": str(task)}) for task in (0, 1)]


def finished(tasks):
    codes = [task.wait(300) for task in tasks]
    return codes, [task.stderr.read().decode()[-2000:] for task in tasks]


def test_srun_tasks_train_as_torchrun_and_a_time_limit_warning_requeues(small_sample, two_rank_reference, tmp_path,
                                                                        scontrol):
    expected = losses_of(two_rank_reference)
    assert sorted(expected) == list(range(1, 25))
    # the job's tasks rendezvous through `scontrol show hostnames`, and are warned of the time limit at
    # iteration 9 (SLURM signals every task of the step)
    log = tmp_path / "test" / JOB_ID / "train.log"
    tasks = srun(small_sample, tmp_path, free_port(10001, 20000))
    deadline = time.time() + 300
    while time.time() < deadline and not (log.exists() and re.search(r" - +9 - ", log.read_text())):
        time.sleep(0.1)
    for task in tasks:
        task.send_signal(signal.SIGUSR1)
    codes, errors = finished(tasks)
    assert codes == [128 + signal.SIGUSR1] * 2, errors
    first = losses_of(log.read_text())
    stopped_at = max(first)
    assert 9 <= stopped_at < 24 and "Stopped by signal 10 after saving" in log.read_text()
    assert first == {it: expected[it] for it in first}  # the torchrun run's losses
    assert scontrol.read_text() == f"requeue {JOB_ID}\n"  # once, by task 0

    # SLURM reruns the same command with the same variables
    tasks = srun(small_sample, tmp_path, free_port(10001, 20000))
    codes, errors = finished(tasks)
    assert codes == [0, 0], errors
    resumed = log.read_text()
    epoch = (stopped_at - 1) // 6  # stopped at the end of an epoch, it is evaluated after the resumption
    assert f"Resumed from {log.parent / 'checkpoint.pth'}: epoch {epoch}, iteration {stopped_at}" in resumed
    assert losses_of(resumed) == expected


@pytest.mark.parametrize("nodes, node, task, local, master", [
    ("node[01-02]", 0, 0, 0, "node01"), ("node[01-02]", 1, 3, 1, "node01"), ("gpu7,gpu3", 1, 2, 0, "gpu7")])
def test_multi_node_variables_resolve(scontrol, nodes, node, task, local, master):
    """2 nodes x 2 tasks: the master is the first host of the list, ranks are SLURM's task ids."""
    environ = dict(SLURM_JOB_ID="7", SLURM_STEP_ID="0", SLURM_NTASKS="4", SLURM_JOB_NUM_NODES="2",
                   SLURM_JOB_NODELIST=nodes, SLURM_NODEID=str(node), SLURM_PROCID=str(task), SLURM_LOCALID=str(local),
                   SLURM_TASKS_PER_NODE="2(x2)")
    params = SimpleNamespace(debug_slurm=False, master_port=12345)
    assert slurm_env(params, environ) == dict(MASTER_ADDR=master, MASTER_PORT="12345", WORLD_SIZE="4",
                                              RANK=str(task), LOCAL_RANK=str(local))
    # outside SLURM, one task, --debug_slurm, or torchrun inside a job: nothing to set
    assert slurm_env(params, {}) == slurm_env(params, {**environ, "SLURM_NTASKS": "1"}) == {}
    assert slurm_env(SimpleNamespace(debug_slurm=True, master_port=-1), environ) == {}
    assert slurm_env(params, {**environ, "RANK": "0", "TORCHELASTIC_RUN_ID": "none"}) == {}
    # a RANK an sbatch script exported itself (or the submitting shell's) is no torchrun: SLURM's variables rule
    assert slurm_env(params, {**environ, "RANK": "9", "WORLD_SIZE": "4"})["RANK"] == str(task)


def test_slurm_mistakes_are_one_clear_line(scontrol, tmp_path, monkeypatch):
    environ = dict(SLURM_JOB_ID="7", SLURM_STEP_ID="0", SLURM_NTASKS="2", SLURM_JOB_NODELIST="node[1-2]",
                   SLURM_PROCID="0", SLURM_LOCALID="0")
    params = SimpleNamespace(debug_slurm=False, master_port=12345)
    with pytest.raises(DataError, match="--master_port in 10001..20000"):
        slurm_env(SimpleNamespace(debug_slurm=False, master_port=-1), environ)
    # `python train.py` run straight in a batch script with --ntasks 2: task 0 would wait for a second forever
    with pytest.raises(DataError, match="not started by srun"):
        slurm_env(params, {k: v for k, v in environ.items() if k != "SLURM_STEP_ID"})
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="scontrol show hostnames node\\[1-2\\]"):
        slurm_env(params, environ)
    with pytest.raises(DataError, match="SLURM_NTASKS='abc' is not a number of tasks"):
        slurm_env(params, {**environ, "SLURM_NTASKS": "abc"})
    for missing in ("SLURM_JOB_NODELIST", "SLURM_LOCALID"):
        with pytest.raises(DataError, match=f"but {missing} not set: start the tasks with srun"):
            slurm_env(params, {k: v for k, v in environ.items() if k != missing})


def test_a_rank_without_a_master_is_one_clear_line(monkeypatch):
    """RANK and WORLD_SIZE set by hand without torchrun's MASTER_ADDR / MASTER_PORT."""
    from xlm.train.distributed import init_distributed
    for var in ("MASTER_ADDR", "MASTER_PORT", "SLURM_JOB_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DataError, match="WORLD_SIZE=2 are set but not MASTER_ADDR and MASTER_PORT: start the "
                                        "processes with torchrun"):
        init_distributed(SimpleNamespace(debug_slurm=False, master_port=-1, local_rank=-1))


def test_a_task_that_sees_one_gpu_uses_it(monkeypatch):
    """srun --gpus-per-task=1 (or cgroups) shows each task its own GPU as cuda:0, whatever its local rank."""
    import torch
    from xlm.train.distributed import cuda_device
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert cuda_device(3) == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert cuda_device(3) == torch.device("cuda", 3)
    with pytest.raises(DataError, match="local rank 5 but only 4 GPUs"):
        cuda_device(5)


def test_processes_sharing_one_visible_gpu_are_one_clear_error(monkeypatch):
    """torchrun --nproc_per_node 2 where one GPU is visible: NCCL would stop at the first collective with
    "Duplicate GPU detected"; one line names the cause instead."""
    import torch
    from xlm.train.distributed import cuda_device
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(DataError, match="2 processes on this node .* but one GPU is visible"):
        cuda_device(1)
