"""No training step reads a device value on the host: MLM, TLM, CLM, PC, AE, MT and BT steps built as
train.py builds them. On the CPU, every op that makes the host wait for the device on a GPU (reading a
scalar, finding non-zero entries, boolean-mask indexing) is counted while the steps run; on a GPU,
torch.cuda.set_sync_debug_mode("error") raises at any synchronisation. Greedy generation inside BT
still reads `unfinished.any()` per token (another change removes it): it is counted apart, not here."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from xlm.model import transformer
from xlm.train import adam
from xlm.train.loop import Trainer
from xlm.train.options import parse_params
from xlm.train.pipeline import Prefetcher

aten = torch.ops.aten
SYNCING = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default, aten.item.default,
           aten.is_nonzero.default, aten.equal.default}


class HostReads(TorchDispatchMode):
    """Counts the ops that read device values on the host (paused while `paused`)."""

    def __init__(self):
        super().__init__()
        self.found, self.paused = [], False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        boolean_index = func in (aten.index.Tensor, aten.index_put_.default, aten.index_put.default) and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or []))
        if not self.paused and (func in SYNCING or boolean_index):
            self.found.append(str(func))
        return func(*args, **kwargs)


pytestmark = pytest.mark.usefixtures("keep_signal_handlers")


def translation_trainer(small_sample, tmp_path, *flags):
    return Trainer(parse_params([
        "--exp_name", "sync", "--exp_id", "0", "--dump_path", str(tmp_path), "--data_path", str(small_sample),
        "--emb_dim", "32", "--n_layers", "1", "--n_heads", "4", "--batch_size", "4", "--bptt", "16", "--max_len", "20",
        "--lgs", "en-fr", "--encoder_only", "false", "--mlm_steps", "en,en-fr", "--clm_steps", "fr",
        "--pc_steps", "en-fr", "--ae_steps", "en", "--mt_steps", "en-fr", "--bt_steps", "en-fr-en",
        "--word_shuffle", "3", "--word_dropout", "0.1", "--word_blank", "0.1", "--lambda_ae", "1",
        "--clip_grad_norm", "1", "--accumulate_gradients", "2", "--epoch_size", "100000", *flags]))


def run_steps(trainer, n_rounds, mode):
    """Rounds of the plan, made by train.py's background thread (outside the mode; pinned on a GPU, whose
    copies to the device are then asynchronous), trained inside the mode."""
    items = Prefetcher(trainer.plan.items(0), pin=trainer.info.device.type == "cuda")
    objectives = set()
    try:
        for _ in range(n_rounds):
            for work in iter(lambda: next(items), None):
                if work.kind == "round":
                    break
                if work.kind == "step":
                    objectives.add(work.objective)
                    with mode:
                        trainer.optimize(work.name, lambda: trainer.loss(work), work.lam)
    finally:
        items.close()
    return objectives


def test_a_training_step_reads_nothing_on_the_host(small_sample, tmp_path, monkeypatch):
    # what a GPU runs: there the padding of a batch is not looked for, and Adam skips an update on the
    # device (both read values on the host on the CPU, where that is free), in torch's fused kernel
    monkeypatch.setattr(transformer, "reads_on_host", lambda device: False)
    monkeypatch.setattr(adam, "skips_on_host", lambda found_inf: False)
    monkeypatch.setattr(adam, "uses_fused_kernel", lambda param: True)
    trainer = translation_trainer(small_sample, tmp_path)
    generate = trainer.back_translate
    mode = HostReads()

    def back_translate(*args):
        mode.paused = True
        try:
            return generate(*args)
        finally:
            mode.paused = False
    trainer.back_translate = back_translate
    # the mode sees ops that run on a GPU's tensors: it must see a boolean index and a scalar read
    with mode:
        h = torch.randn(2, 3, 4)
        h[h[..., 0] > 0].sum().item()
    assert aten._local_scalar_dense.default.__str__() in mode.found and len(mode.found) >= 2
    mode.found.clear()
    objectives = run_steps(trainer, 3, mode)
    assert objectives == {"clm", "mlm", "pc", "ae", "mt", "bt"}
    assert mode.found == []
    assert trainer.engine.n_micro > 6  # updates happened (accumulation 2) inside the mode


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("precision", [[], ["--bf16", "true"], ["--fp16", "true"]], ids=["float32", "bf16", "fp16"])
def test_no_synchronisation_on_a_gpu(small_sample, tmp_path, precision):
    """float32, bf16 (where padded batches go through the varlen kernel) and fp16 (the loss scaler)."""
    trainer = translation_trainer(small_sample, tmp_path, *precision)
    generate = trainer.back_translate

    def back_translate(*args):
        torch.cuda.set_sync_debug_mode(0)
        try:
            return generate(*args)
        finally:
            torch.cuda.set_sync_debug_mode("error")

    class SyncErrors:
        def __enter__(self):
            torch.cuda.set_sync_debug_mode("error")

        def __exit__(self, *exc):
            torch.cuda.set_sync_debug_mode(0)
    trainer.back_translate = back_translate
    run_steps(trainer, 1, SyncErrors())  # warm-up: lazy initialisations may synchronise once
    assert run_steps(trainer, 4, SyncErrors()) == {"clm", "mlm", "pc", "ae", "mt", "bt"}


def test_evaluation_runs_in_full_float32(small_sample, tmp_path, monkeypatch):
    """Training matmuls use TF32 on CUDA (and only there: the CPU's stay IEEE float32); evaluation turns it
    off, so that its scores and hypotheses are the float32 ones of the original (a TF32 rounding can flip
    a close argmax)."""
    from xlm.train import loop
    trainer = translation_trainer(small_sample, tmp_path)
    seen = []

    def cpu_precision():  # oneDNN's switch, in torch 2.9 and later
        return getattr(getattr(torch.backends.mkldnn, "matmul", None), "fp32_precision", "ieee")

    def record(name):
        def evaluate(*args, **kwargs):
            seen.append((name, torch.backends.cuda.matmul.allow_tf32, cpu_precision()))
            return {}
        return evaluate
    monkeypatch.setattr(loop, "evaluate_lm", record("lm"))
    monkeypatch.setattr(loop, "evaluate_mt", record("mt"))
    monkeypatch.setattr(loop, "stream_means", lambda *args: {})
    assert torch.backends.cuda.matmul.allow_tf32 and cpu_precision() != "tf32"
    trainer.evaluate()
    assert [(name, tf32) for name, tf32, _ in seen] == [("lm", False), ("mt", False)] * 2  # valid, test
    assert all(cpu != "tf32" for _, _, cpu in seen)
    assert torch.backends.cuda.matmul.allow_tf32
