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
