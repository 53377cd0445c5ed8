"""--fp16 true through train.py when the loss scale overflows: a skipped update is counted and logged, the
learning-rate schedule and Adam's step count do not advance on it, the run goes on; 20 in a row stop it
with one line. The faults are forced at chosen objective steps by wrapping Trainer.loss."""
import re

import pytest
import torch

from xlm.fileio import DataError
from xlm.model.checkpoint import read_checkpoint
from xlm.train import adam, loop
from xlm.train.options import parse_params

pytestmark = pytest.mark.usefixtures("keep_signal_handlers")

LR, INIT, WARMUP = 0.001, 0.0001, 40


def flags(data, dump, exp_id, epoch_size):
    return ["--exp_name", "fp16", "--exp_id", exp_id, "--dump_path", str(dump), "--data_path", str(data),
            "--lgs", "en", "--clm_steps", "en", "--emb_dim", "32", "--n_layers", "1", "--n_heads", "4",
            "--batch_size", "4", "--bptt", "16", "--fp16", "true", "--log_interval", "1", "--max_epoch", "1",
            "--epoch_size", str(epoch_size),
            "--optimizer", f"adam_inverse_sqrt,lr={LR},warmup_updates={WARMUP},warmup_init_lr={INIT}"]


class InfiniteGradient(torch.autograd.Function):
    """The identity whose gradient is infinite: a finite loss whose scaled gradients overflow float16."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


@pytest.mark.parametrize("on_host, fused", [(True, False), (False, False), (False, True)],
                         ids=["cpu_skip", "gpu_skip", "fused_kernel_skip"])
def test_overflowing_steps_are_skipped_counted_and_leave_the_schedule(small_sample, tmp_path, monkeypatch, on_host,
                                                                      fused):
    """On the host as on the CPU, and on the device as on a GPU: Adam's masked update, or the fused
    kernel's skip (the flag is 2 at step 7, both a non-finite loss and an overflow)."""
    monkeypatch.setattr(adam, "skips_on_host", lambda found_inf: on_host)
    monkeypatch.setattr(adam, "uses_fused_kernel", lambda param: fused)
    faults = {3: "overflow", 7: "nan", 8: "overflow"}  # objective step (from 1) -> fault; one step per iteration
    loss, calls = loop.Trainer.loss, []

    def faulty_loss(self, work):
        value = loss(self, work)
        calls.append(1)
        fault = faults.get(len(calls))
        return value * float("nan") if fault == "nan" else InfiniteGradient.apply(value) if fault else value
    monkeypatch.setattr(loop.Trainer, "loss", faulty_loss)
    loop.main(flags(small_sample, tmp_path, "faults", 4 * 12))

    dump = tmp_path / "fp16" / "faults"
    log = (dump / "train.log").read_text()
    assert "End of epoch 0" in log and len(calls) == 12
    skipped_before = {int(m.group(2)): int(m.group(1)) for m in
                      re.finditer(r"float16 overflow: (\d+) update\(s\) skipped before iteration (\d+)", log)}
    assert skipped_before == {3: 1, 7: 1, 8: 1}
    lrs = {int(m.group(1)): float(m.group(2)) for m in re.finditer(r" - +(\d+) - .*? model LR: ([0-9.e+-]+)", log)}
    assert sorted(lrs) == list(range(1, 13))
    for it, lr in lrs.items():
        updates = it - sum(1 for k in faults if k <= it)  # the warm-up of adam_inverse_sqrt, by its formula
        assert lr == pytest.approx(INIT + updates * (LR - INIT) / WARMUP, rel=1e-4), it
    ckpt = read_checkpoint(dump / "checkpoint.pth")
    assert ckpt["train_state"]["n_nonfinite"] == 3
    assert {s["step"] for s in ckpt["model_optimizer"]["state"].values()} == {12 - 3}
    # GradScaler halved its scale at each of the three (2**16 at the start, no growth within 2000 steps)
    assert ckpt["train_state"]["scaler"]["scale"] == 2.0 ** 16 / 8


def test_twenty_skipped_updates_in_a_row_stop_the_run(small_sample, tmp_path, monkeypatch):
    loss, calls = loop.Trainer.loss, []

    def diverging_loss(self, work):
        calls.append(1)
        return loss(self, work) * (float("nan") if len(calls) > 5 else 1.0)
    monkeypatch.setattr(loop.Trainer, "loss", diverging_loss)
    # a DataError: train.py and glue-xnli.py print it as this one line and exit with status 1
    with pytest.raises(DataError) as stop:
        loop.main(flags(small_sample, tmp_path, "diverge", 4 * 1000))
    assert str(stop.value) == ("20 updates in a row skipped for a non-finite loss or float16 overflow: the run "
                               "diverged; lower the learning rate, or use --bf16 instead of --fp16")
    log = (tmp_path / "fp16" / "diverge" / "train.log").read_text()
    iterations = [int(i) for i in re.findall(r" - +(\d+) - .*? model LR", log)]
    assert iterations == list(range(1, 25))  # 5 good steps, 19 skipped ones logged, stopped at the 20th


def test_an_fp16_update_reads_nothing_on_the_host(small_sample, tmp_path, monkeypatch):
    """The overflow check of float16 gradients, the skip and its count stay on the device (as a GPU runs
    Adam; on the CPU it reads the skip flag, for free)."""
    monkeypatch.setattr(adam, "skips_on_host", lambda found_inf: False)
    from test_step_sync import HostReads, run_steps
    trainer = loop.Trainer(parse_params(flags(small_sample, tmp_path, "sync", 4 * 1000)))
    mode = HostReads()
    run_steps(trainer, 3, mode)
    assert mode.found == [] and trainer.engine.n_micro == 3
    assert trainer.engine.settle() == 0  # read here, at a log line


def test_a_run_resumed_in_another_precision_goes_on_and_says_so(small_sample, tmp_path):
    """A run saved without float16 (bf16 GPUs) and resumed with it (fp16 GPUs) starts from GradScaler's first
    scale; the other way round the loss scale is left out. Either way the log names the change."""
    def run(precision, epochs):
        base = flags(small_sample, tmp_path, "moved", 40)
        base[base.index("--fp16"):base.index("--fp16") + 2] = precision
        base[base.index("--max_epoch") + 1] = str(epochs)
        loop.main(base)
        return read_checkpoint(tmp_path / "fp16" / "moved" / "checkpoint.pth")["train_state"]

    assert run(["--bf16", "true"], 1)["epoch"] == 1  # the epoch to resume at
    state = run(["--fp16", "true"], 2)
    assert state["epoch"] == 2 and state["scaler"]["scale"] > 0
    assert run(["--fp16", "false"], 3)["scaler"] == {}
    log = (tmp_path / "fp16" / "moved" / "train.log").read_text()
    assert ("resumed with other flags than the run's (--fp16 False there, True here; --bf16 True there, False "
            "here)") in log
    assert "(--fp16 True there, False here)" in log
