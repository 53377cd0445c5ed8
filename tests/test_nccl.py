"""NCCL on one GPU: the collectives of evaluation, progress lines and the step engine's skip flag, and a
DistributedDataParallel step, through a process group of one rank (two NCCL ranks cannot share a GPU;
gloo tests the sharing of work among ranks). Skipped without CUDA: bench/gpu.sh runs it."""
import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from xlm.train.checkpointing import gather_rank_states, rng_state
from xlm.train.distributed import DistInfo, all_reduce_sum, all_reduce_tensors, broadcast_from_master, gather_to_master
from xlm.train.engine import StepEngine
from xlm.train.schedules import build_optimizer


class PartlyUsed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.used, self.unused = torch.nn.Linear(8, 2), torch.nn.Linear(2, 2)

    def forward(self, x):
        return self.used(x)


@pytest.mark.skipif(not torch.cuda.is_available() or not dist.is_nccl_available(), reason="needs a GPU and NCCL")
def test_nccl_collectives_and_a_ddp_step_on_cuda(tmp_path, monkeypatch):
    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        monkeypatch.setattr(DistInfo, "multi", property(lambda self: True))  # the multi-rank code paths
        info = DistInfo(device=device)
        assert all_reduce_sum([1.5, 2.0, 3], info) == [1.5, 2.0, 3.0]
        counts = all_reduce_tensors([torch.ones(3, dtype=torch.float64, device=device),
                                     torch.arange(2, dtype=torch.float64, device=device)], info)
        assert [c.tolist() for c in counts] == [[1.0, 1.0, 1.0], [0.0, 1.0]]
        assert broadcast_from_master({"stop": True}, info) == {"stop": True}
        assert gather_to_master({3: [1, 2]}, info) == [{3: [1, 2]}]

        torch.manual_seed(0)
        model = PartlyUsed().to(device)
        # as loop.py builds it: a step may leave parameters unused (PC's output layer, the encoder's
        # prediction layer in translation steps)
        ddp = DistributedDataParallel(model, device_ids=[device], gradient_as_bucket_view=True,
                                      find_unused_parameters=True)
        optimizer = build_optimizer(list(model.parameters()), "adam,lr=0.01")
        engine = StepEngine({"model": optimizer}, {"model": list(model.parameters())}, [ddp], device,
                            torch.bfloat16, accumulate=2, clip_grad_norm=1.0, multi=True)
        x = torch.randn(4, 8, device=device)
        before = model.used.weight.detach().clone()
        for _ in range(2):
            engine.step(lambda: ddp(x).float().pow(2).mean())
        after = model.used.weight.detach().clone()
        assert not torch.equal(before, after)
        for loss in (lambda: ddp(x).float().pow(2).mean(), lambda: ddp(x).float().sum() * float("inf")):
            engine.step(loss)  # an update whose second micro-step is not finite: skipped on every rank
        assert torch.equal(model.used.weight, after) and engine.settle() == 1
        # a checkpoint between two updates: the pending gradients' means over ranks, the ranks' random states
        engine.step(lambda: ddp(x).float().pow(2).mean())
        pending = engine.pending_gradients({"model": model})
        assert sorted(pending["grads"]["model"]) == ["used.bias", "used.weight"]
        assert torch.equal(pending["grads"]["model"]["used.weight"], model.used.weight.grad.cpu())
        states = gather_rank_states(rng_state(device), info)
        assert len(states) == 1 and torch.equal(states[0]["cuda"], torch.cuda.get_rng_state(device))
    finally:
        dist.destroy_process_group()
