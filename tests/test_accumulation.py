"""--accumulate_gradients N: N batches of B, each loss a mean, make one optimizer step with the gradient of
one batch of N x B (xlm averages the N backward passes; the original summed them), clipped as a whole."""
import pytest
import torch

from xlm.objectives.lm import clm_targets
from xlm.train.loop import Trainer
from xlm.train.options import parse_params

pytestmark = pytest.mark.usefixtures("keep_signal_handlers")


def trainer(small_sample, tmp_path, accumulate):
    params = parse_params(["--exp_name", "acc", "--exp_id", str(accumulate), "--dump_path", str(tmp_path),
                           "--data_path", str(small_sample), "--lgs", "en", "--clm_steps", "en", "--emb_dim", "32",
                           "--n_layers", "2", "--n_heads", "4", "--bptt", "16", "--batch_size", "8",
                           "--optimizer", "sgd,lr=0.5", "--clip_grad_norm", "0.1",
                           "--accumulate_gradients", str(accumulate)])
    return Trainer(params)


def clm_loss(t, x):
    lengths = torch.full((len(x),), x.shape[1])
    pred_mask, y = clm_targets(x, lengths)
    return lambda: t.ddp["model"](x, None, causal=True, pred_mask=pred_mask, y=y)


def test_accumulated_batches_equal_one_large_batch(small_sample, tmp_path):
    one, three = trainer(small_sample, tmp_path, 1), trainer(small_sample, tmp_path, 3)
    assert all(torch.equal(a, b) for a, b in zip(one.models["model"].parameters(), three.models["model"].parameters()))
    torch.manual_seed(0)
    for _ in range(2):  # two optimizer steps
        x = torch.randint(14, 500, (12, 16))
        # the norm of the whole gradient is about 0.9, far above 0.1: both runs clip, after accumulating
        one.optimize("CLM-en", clm_loss(one, x))
        before = [p.detach().clone() for p in three.models["model"].parameters()]
        for part in x.chunk(3):
            three.optimize("CLM-en", clm_loss(three, part))
        # the parameters move only after the third backward pass
        if three.engine.n_micro == 3:
            assert any(not torch.equal(a, b) for a, b in zip(before, three.models["model"].parameters()))
    # SGD shows the gradients as they are (Adam would magnify the rounding noise of gradients that are
    # zero in exact arithmetic, such as the key biases')
    for a, b in zip(one.models["model"].parameters(), three.models["model"].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert one.engine.n_micro == 2 and three.engine.n_micro == 6


def _replicas(rank, world, port, out):
    """One rank of test_a_model_left_out_of_the_updating_step_is_still_all_reduced."""
    import os

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from xlm.train.distributed import DistInfo, shutdown
    from xlm.train.engine import StepEngine
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    encoder, decoder = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    ddp = [DistributedDataParallel(m) for m in (encoder, decoder)]
    params = [*encoder.parameters(), *decoder.parameters()]
    engine = StepEngine({"model": torch.optim.SGD(params, lr=0.5)}, {"model": params}, ddp, torch.device("cpu"),
                        accumulate=2, multi=True)
    x = torch.randn(3, 2 * world, 4, generator=torch.Generator().manual_seed(1)).chunk(world, dim=1)[rank]
    for batch in x:
        engine.step(lambda: ddp[1](ddp[0](batch)).pow(2).mean())  # an AE step: under no_sync
        engine.step(lambda: ddp[0](batch).pow(2).mean())          # an MLM step, the encoder's: the update
    torch.save([p.detach() for p in params], f"{out}.{rank}")
    shutdown(DistInfo(rank, world))  # as train.py ends: destroying the group at once may abort the exit


def test_a_model_left_out_of_the_updating_step_is_still_all_reduced(tmp_path):
    """With --accumulate_gradients, DDP all-reduces on the updating micro-step only: a decoder that ran in an
    earlier one (AE) and not in that one (MLM) must still get the mean of the ranks' gradients, so that
    the replicas stay equal, and equal to one process over the whole batches."""
    from conftest import free_port
    torch.multiprocessing.spawn(_replicas, args=(2, free_port(), str(tmp_path / "params")), nprocs=2)
    ranks = [torch.load(tmp_path / f"params.{r}", weights_only=True) for r in range(2)]
    torch.manual_seed(0)
    encoder, decoder = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    optimizer = torch.optim.SGD([*encoder.parameters(), *decoder.parameters()], lr=0.5)
    for batch in torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(1)):
        ((decoder(encoder(batch)).pow(2).mean() + encoder(batch).pow(2).mean()) / 2).backward()
        optimizer.step()
        optimizer.zero_grad()
    for a, b, one in zip(*ranks, [*encoder.parameters(), *decoder.parameters()]):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, one.detach(), rtol=1e-5, atol=1e-6)


def test_a_checkpoint_between_two_updates_resumes_exactly(small_sample, tmp_path):
    """Checkpoints fall at the ends of rounds, which need not be updates (3 steps a round, accumulating 2): the
    gradients accumulated since the last update are saved with them, so that the resumed run makes the
    update the uninterrupted one makes."""
    from xlm.model.checkpoint import read_checkpoint
    from xlm.train.loop import main

    def run(exp_id, epochs):
        main(["--exp_name", "acc", "--exp_id", exp_id, "--dump_path", str(tmp_path), "--data_path", str(small_sample),
              "--lgs", "en-fr", "--mlm_steps", "en,fr", "--clm_steps", "en", "--emb_dim", "32", "--n_layers", "1",
              "--n_heads", "2", "--batch_size", "4", "--bptt", "32", "--epoch_size", "12", "--max_epoch", str(epochs),
              "--accumulate_gradients", "2", "--optimizer", "adam,lr=0.001"])
        return read_checkpoint(tmp_path / "acc" / exp_id / "checkpoint.pth")

    whole = run("whole", 2)
    assert run("resumed", 1)["train_state"]["pending"] is not None  # the case itself: 3 backward passes
    resumed = run("resumed", 2)
    assert whole["train_state"]["n_steps"] == resumed["train_state"]["n_steps"] == 6
    for k, v in whole["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
