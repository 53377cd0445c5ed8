"""Optimizers, learning-rate and lambda schedules against the original's formulas written out here,
and product-key memory training with --mem_sparse false/true."""
import io
import json
import math
import os
import random
import re
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from xlm.data.binarized import binarize
from xlm.data.dictionary import Dictionary
from xlm.fileio import DataError
from xlm.model.checkpoint import read_checkpoint
from xlm.train import adam
from xlm.train.adam import Adam
from xlm.train.build import check_backend
from xlm.train.distributed import DistInfo
from xlm.train.options import parse_params
from xlm.train.schedules import (LambdaSchedule, build_optimizer, clip_grad_norm_, load_optimizer_state,
                                 scheduled_lr, update_lr)


# ---------------------------------------------------------------------------------------------- Adam
def original_adam(p, grads, lr, beta1, beta2, eps, wd):
    """The original's Adam.step in float64: `grads[t]` is the gradient at update t+1 (None: no gradient,
    the parameter's own step count does not advance)."""
    p, m, v, t = p.double(), torch.zeros_like(p, dtype=torch.float64), torch.zeros_like(p, dtype=torch.float64), 0
    for g in grads:
        if g is None:
            continue
        g, t = g.double(), t + 1
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        denom = v.sqrt() + eps
        step_size = lr * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
        p = p - wd * lr * p
        p = p - step_size * m / denom
    return p


GROUPS = [dict(lr=0.01, betas=(0.9, 0.999), eps=1e-3, weight_decay=0.0),
          dict(lr=0.003, betas=(0.8, 0.98), eps=1e-4, weight_decay=0.1)]


def run_adam(optimizer_class, params, grads):
    optimizer = optimizer_class([{"params": [p], **g} for p, g in zip(params, GROUPS)])
    for step in grads:
        for p, g in zip(params, step):
            p.grad = None if g is None else g.clone()
        optimizer.step()
    return optimizer


@pytest.mark.parametrize("fused", [False, True], ids=["multi_tensor", "fused_kernel"])
@pytest.mark.parametrize("n_steps", [1, 6])
def test_adam_is_the_originals_update(n_steps, fused, monkeypatch):
    """Both ways of updating: the multi-tensor operations (the CPU's) and torch's fused kernel (CUDA's)."""
    monkeypatch.setattr(adam, "uses_fused_kernel", lambda param: fused)
    torch.manual_seed(0)
    init = [torch.randn(5, 7), torch.randn(11)]
    grads = [[0.01 * torch.randn(5, 7), 0.01 * torch.randn(11)] for _ in range(n_steps)]
    if n_steps > 1:
        grads[1][1] = None  # the second parameter misses one update: its bias correction lags behind
    params = [x.clone().requires_grad_() for x in init]
    optimizer = run_adam(Adam, params, grads)
    for i, (p, group) in enumerate(zip(params, GROUPS)):
        expected = original_adam(init[i], [s[i] for s in grads], group["lr"], *group["betas"], group["eps"],
                                 group["weight_decay"])
        assert torch.allclose(p.double(), expected, rtol=1e-6, atol=1e-7), (i, (p.double() - expected).abs().max())
        assert optimizer.state[p]["step"] == sum(s[i] is not None for s in grads)
    # torch's AdamW adds eps after the bias correction: a different first step
    other = [x.clone().requires_grad_() for x in init]
    run_adam(torch.optim.AdamW, other, grads[:1])
    ours = [x.clone().requires_grad_() for x in init]
    run_adam(Adam, ours, grads[:1])
    assert (ours[0] - other[0]).abs().max() > 1e-3


def test_adam_bf16_parameters_follow_the_formula():
    torch.manual_seed(0)
    init, grads = torch.randn(64), [[0.01 * torch.randn(64)] for _ in range(3)]
    p = init.bfloat16().requires_grad_()
    optimizer = Adam([p], lr=0.01, eps=1e-3)
    for (g,) in grads:
        p.grad = g.bfloat16()
        optimizer.step()
    assert optimizer.state[p]["exp_avg"].dtype == torch.bfloat16
    expected = original_adam(init.bfloat16().float(), [g.bfloat16() for (g,) in grads], 0.01, 0.9, 0.999, 1e-3, 0)
    assert torch.allclose(p.double(), expected, atol=0.02)


def test_optimizer_state_round_trips_and_keeps_the_schedule():
    torch.manual_seed(0)
    spec = "adam_inverse_sqrt,lr=0.01,warmup_updates=4,weight_decay=0.01"
    grads = [0.1 * torch.randn(6) for _ in range(8)]

    def train(p, optimizer, steps):
        for g in steps:
            p.grad = g.clone()
            optimizer.step()
            update_lr(optimizer)

    straight, resumed = torch.ones(6, requires_grad=True), torch.ones(6, requires_grad=True)
    uninterrupted, first = build_optimizer([straight], spec), build_optimizer([resumed], spec)
    train(straight, uninterrupted, grads)
    train(resumed, first, grads[:5])
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    # a file of the original: its param groups have no schedule keys, only num_updates
    saved["param_groups"] = [{k: g[k] for k in ("lr", "betas", "eps", "weight_decay", "num_updates", "params")}
                             for g in saved["param_groups"]]
    second = build_optimizer([resumed], spec)
    load_optimizer_state(second, saved)
    train(resumed, second, grads[5:])
    assert torch.equal(resumed, straight)
    assert second.param_groups[0]["lr"] == uninterrupted.param_groups[0]["lr"] == \
        pytest.approx(0.01 * 4 ** 0.5 * 8 ** -0.5)


class TorchFormat(torch.optim.Optimizer):
    """The original's Adam as a torch Optimizer (an int `step`, `exp_avg`, `exp_avg_sq`): torch's own
    state_dict and load_state_dict are the reference for the format of xlm's Adam, a plain class."""

    def __init__(self, params, **defaults):
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                state["step"] += 1
                state["exp_avg"].add_(p.grad)
                state["exp_avg_sq"].add_(p.grad * p.grad)


def test_adam_state_dict_has_torchs_format():
    torch.manual_seed(0)
    make = lambda: [torch.randn(3, requires_grad=True), torch.randn(2, 2, requires_grad=True),  # noqa: E731
                    torch.randn(4, requires_grad=True)]
    groups = lambda ps: [{"params": ps[:2], **GROUPS[0]}, {"params": ps[2:], **GROUPS[1]}]  # noqa: E731
    ours, theirs = make(), make()
    adam, reference = Adam(groups(ours)), TorchFormat(groups(theirs))
    for params, optimizer in ((ours, adam), (theirs, reference)):
        for p in params[:2]:  # the third parameter gets no gradient: no state
            p.grad = torch.ones_like(p)
        optimizer.step()
    mine, torchs = adam.state_dict(), reference.state_dict()
    assert [g["params"] for g in mine["param_groups"]] == [g["params"] for g in torchs["param_groups"]] == [[0, 1], [2]]
    assert mine["param_groups"] == torchs["param_groups"]
    assert sorted(mine["state"]) == sorted(torchs["state"]) == [0, 1]
    for i in (0, 1):
        assert mine["state"][i]["step"] == torchs["state"][i]["step"] == 1
    # each loads the other's file (as saved and read back), moments on each parameter's dtype
    for target, source in ((Adam(groups(make())), torchs), (TorchFormat(groups(make())), mine)):
        buffer = io.BytesIO()
        torch.save(source, buffer)
        buffer.seek(0)
        target.load_state_dict(torch.load(buffer, weights_only=True))
        assert target.param_groups[1]["lr"] == GROUPS[1]["lr"]
        assert sorted(target.state_dict()["state"]) == [0, 1]
    half = [p.detach().to(torch.bfloat16).requires_grad_() for p in make()]
    loaded = Adam(groups(half))
    loaded.load_state_dict(mine)
    assert all(s["exp_avg"].dtype == torch.bfloat16 for s in loaded.state.values())
    with pytest.raises(ValueError, match="doesn't match the size"):
        Adam([{"params": make()}]).load_state_dict({"state": {}, "param_groups": [{**GROUPS[0], "params": [0, 1]}]})


# ---------------------------------------------------------------------------------------------- LR schedules
def inverse_sqrt(n, lr, warmup_updates=4000, warmup_init_lr=1e-7, exp_factor=0.5):
    """The original's AdamInverseSqrtWithWarmup.get_lr_for_step."""
    if n < warmup_updates:
        return warmup_init_lr + n * ((lr - warmup_init_lr) / warmup_updates)
    return lr * warmup_updates ** exp_factor * n ** -exp_factor


def cosine(n, lr, warmup_updates=4000, warmup_init_lr=1e-7, min_lr=1e-9, init_period=1000000, period_mult=1,
           lr_shrink=0.75):
    """The original's AdamCosineWithWarmup.get_lr_for_step."""
    if n < warmup_updates:
        return warmup_init_lr + n * ((lr - warmup_init_lr) / warmup_updates)
    t = n - warmup_updates
    if period_mult == 1:
        pid = math.floor(t / init_period)
        t_i, t_curr = init_period, t - init_period * pid
    else:
        pid = math.floor(math.log(1 - t / init_period * (1 - period_mult), period_mult))
        t_i = init_period * period_mult ** pid
        t_curr = t - (1 - period_mult ** pid) / (1 - period_mult) * init_period
    shrink = lr_shrink ** pid
    return min_lr * shrink + 0.5 * (lr * shrink - min_lr * shrink) * (1 + math.cos(math.pi * t_curr / t_i))


def lr_at(spec, n):
    group = build_optimizer([torch.zeros(1, requires_grad=True)], spec).param_groups[0]
    group["num_updates"] = n
    return scheduled_lr(group)


STEPS = [0, 1, 9, 10, 11, 50, 109, 110, 111, 250, 420, 10 ** 7]


@pytest.mark.parametrize("spec, oracle", [
    ("adam,lr=0.0003", lambda n: 0.0003),
    ("adam_inverse_sqrt,lr=0.001,warmup_updates=10", lambda n: inverse_sqrt(n, 0.001, 10)),
    ("adam_inverse_sqrt,lr=0.001,warmup_updates=10,warmup_init_lr=0.0001,exp_factor=0.3",
     lambda n: inverse_sqrt(n, 0.001, 10, 0.0001, 0.3)),
    ("adam_cosine,lr=0.001,warmup_updates=10,init_period=100,min_lr=0.0001,lr_shrink=0.5",
     lambda n: cosine(n, 0.001, 10, 1e-7, 0.0001, 100, 1, 0.5)),
    ("adam_cosine,lr=0.001,warmup_updates=10,init_period=100,min_lr=0.0001,period_mult=2,lr_shrink=0.5",
     lambda n: cosine(n, 0.001, 10, 1e-7, 0.0001, 100, 2, 0.5)),
])
def test_lr_schedules_follow_the_original(spec, oracle):
    for n in STEPS:
        assert lr_at(spec, n) == pytest.approx(oracle(n), rel=1e-12, abs=1e-20), n
    optimizer = build_optimizer([torch.zeros(1, requires_grad=True)], spec)
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(12):
        update_lr(optimizer)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([oracle(n) for n in range(13)], rel=1e-12)


def test_cosine_restarts_shrink_both_bounds_in_constant_time():
    spec = "adam_cosine,lr=0.001,warmup_updates=10,init_period=100,min_lr=0.0001,period_mult=2,lr_shrink=0.5"
    # periods after warmup: [0, 100), [100, 300), [300, 700): peaks and floors halve at each restart
    assert lr_at(spec, 10) == pytest.approx(0.001)
    assert lr_at(spec, 10 + 100) == pytest.approx(0.0005)
    assert lr_at(spec, 10 + 300) == pytest.approx(0.00025)
    assert lr_at(spec, 10 + 299) == pytest.approx(0.00005, rel=1e-3)   # the end of period 1: min_lr / 2
    assert lr_at(spec, 10 + 200) == pytest.approx((0.0005 + 0.00005) / 2)
    # a loop over periods would not end here
    flat = "adam_cosine,lr=0.001,warmup_updates=10,init_period=3,min_lr=0.0001,lr_shrink=1"
    assert lr_at(flat, 10 + 3 * 10 ** 12 + 1) == pytest.approx(0.0001 + 0.5 * 0.0009 * (1 + math.cos(math.pi / 3)))


def test_optimizer_strings():
    sparse = build_optimizer([torch.zeros(3, requires_grad=True)], "sparseadam,lr=0.01,beta1=0.8,eps=0.0001")
    assert isinstance(sparse, torch.optim.SparseAdam)
    assert sparse.param_groups[0]["betas"] == (0.8, 0.999) and sparse.param_groups[0]["lr"] == 0.01
    for spec, message in [("sparseadam,weight_decay=0.1", "'weight_decay' is not an option of sparseadam"),
                          ("adam_inverse_sqrt,warmup_updates=0", "warmup_updates > 0"),
                          ("adamw,lr=0.1", "unknown optimizer 'adamw'"),
                          # a pair cannot be one number (adam's raised a TypeError, rprop's failed at its step)
                          ("adam,lr=0.1,betas=0.5", "betas is a pair, which key=number cannot give: use beta1="),
                          ("rprop,lr=0.01,step_sizes=1", "step_sizes is a pair"),
                          # as the original: only the constructor's positional parameters (differentiable=1
                          # failed at the first step), less torch's internals
                          ("sgd,lr=0.1,differentiable=1", "'differentiable' is not an option of sgd (its options: "
                                                          "lr, momentum, dampening, weight_decay, nesterov)"),
                          ("sgd,lr=0.1,maximize=1", "'maximize' is not an option of sgd"),
                          ("rmsprop,lr=0.01,capturable=1", "'capturable' is not an option of rmsprop")]:
        with pytest.raises(DataError, match=re.escape(message)):
            build_optimizer([torch.zeros(3, requires_grad=True)], spec)
    rmsprop = build_optimizer([torch.zeros(3, requires_grad=True)], "rmsprop,lr=0.01,centered=1,maximize=1")
    assert rmsprop.param_groups[0]["centered"] and rmsprop.param_groups[0]["maximize"]


# ---------------------------------------------------------------------------------------------- lambdas
def original_lambda(config, n):
    """The original's get_lambda_value."""
    inside = [i for i in range(len(config) - 1) if config[i][0] <= n < config[i + 1][0]]
    if not inside:
        return config[-1][1]
    (xa, ya), (xb, yb) = config[inside[0]], config[inside[0] + 1]
    return ya + (n - xa) * float(yb - ya) / float(xb - xa)


@pytest.mark.parametrize("spec, config", [
    ("1", [(0, 1.0)]),
    ("0:1,1000:0.1", [(0, 1.0), (1000, 0.1)]),
    ("0:0,1000:0,2000:1", [(0, 0.0), (1000, 0.0), (2000, 1.0)]),
])
def test_lambda_schedules(spec, config):
    schedule = LambdaSchedule.parse(spec)
    for n in (0, 1, 333, 999, 1000, 1001, 1500, 1999, 2000, 2001, 10 ** 7):
        assert schedule(n) == original_lambda(config, n), n


@pytest.mark.parametrize("spec", ["x", "0:1,1000", "0:1,0:2", "1000:1,0:0", "0:1,-5:2", "0:a", ""])
def test_bad_lambda_strings(spec):
    with pytest.raises(DataError, match="--lambda_mlm"):
        LambdaSchedule.parse(spec, "lambda_mlm")


# ---------------------------------------------------------------------------------------------- sparse memory values
def test_clipping_takes_sparse_gradients():
    torch.manual_seed(0)
    bag = torch.nn.EmbeddingBag(50, 8, mode="sum", sparse=True)
    linear = torch.nn.Linear(8, 8)
    indices = torch.randint(0, 50, (6, 12))  # repeated rows: an uncoalesced gradient
    linear(bag(indices, per_sample_weights=torch.rand(6, 12))).pow(2).sum().backward()
    assert bag.weight.grad.is_sparse
    dense = [bag.weight.grad.to_dense(), linear.weight.grad.clone(), linear.bias.grad.clone()]
    params = [torch.nn.Parameter(g.clone()) for g in dense]
    for p, g in zip(params, dense):
        p.grad = g.clone()
    expected = torch.nn.utils.clip_grad_norm_(params, 0.5)
    total = clip_grad_norm_([bag.weight, linear.weight, linear.bias], 0.5)
    assert total == pytest.approx(expected.item(), rel=1e-5) and total > 0.5
    for p, got in zip(params, [bag.weight.grad.to_dense(), linear.weight.grad, linear.bias.grad]):
        assert torch.allclose(got, p.grad, rtol=1e-5, atol=1e-7)


def test_mem_sparse_turns_adam_into_sparseadam(tmp_path):
    argv = ["--exp_name", "x", "--lgs", "en", "--mlm_steps", "en", "--data_path", str(tmp_path), "--use_memory", "true",
            "--mem_enc_positions", "1", "--optimizer", "adam_inverse_sqrt,lr=0.0001"]
    assert parse_params(argv).mem_values_optimizer == "adam,lr=0.001"
    assert parse_params(argv + ["--mem_sparse", "true"]).mem_values_optimizer == "sparseadam,lr=0.001"
    assert parse_params(argv + ["--mem_values_optimizer", ""]).mem_values_optimizer == "adam_inverse_sqrt,lr=0.0001"
    with pytest.raises(DataError, match="--mem_sparse true: --mem_values_optimizer adam_inverse_sqrt does not take"):
        parse_params(argv + ["--mem_sparse", "true", "--mem_values_optimizer", ""])
    with pytest.raises(DataError, match="sparseadam needs --mem_sparse true"):
        parse_params(argv + ["--mem_values_optimizer", "sparseadam,lr=0.01"])
    with pytest.raises(DataError, match="--optimizer sparseadam takes only sparse gradients"):
        parse_params(argv + ["--optimizer", "sparseadam"])
    # NCCL has no all-reduce of sparse tensors (gloo has)
    sparse = parse_params(argv + ["--mem_sparse", "true"])
    check_backend(sparse, DistInfo(rank=0, world_size=2, device=torch.device("cpu")))
    check_backend(sparse, DistInfo(device=torch.device("cuda", 0)))
    with pytest.raises(DataError, match="NCCL cannot all-reduce the sparse gradients"):
        check_backend(sparse, DistInfo(rank=0, world_size=2, device=torch.device("cuda", 0)))
    check_backend(parse_params(argv), DistInfo(rank=0, world_size=2, device=torch.device("cuda", 0)))


def test_a_skipped_update_leaves_every_optimizers_step_count_at_the_updates_made():
    """xlm's Adam is stepped on a non-finite loss (a no-op that counts) and the engine takes the count back;
    torch's SparseAdam (--mem_sparse's values) is not called at all, so its count must not be taken back."""
    from xlm.train.engine import StepEngine
    torch.manual_seed(0)
    values, linear = torch.nn.EmbeddingBag(10, 4, mode="sum", sparse=True), torch.nn.Linear(4, 1)
    optimizers = {"model": build_optimizer(list(linear.parameters()), "adam,lr=0.001"),
                  "memory": build_optimizer([values.weight], "sparseadam,lr=0.001", "mem_values_optimizer")}
    engine = StepEngine(optimizers, {"model": list(linear.parameters()), "memory": [values.weight]},
                        [linear, values], torch.device("cpu"))
    for scale in (1.0, 1.0, 1.0, float("nan"), 1.0):
        engine.step(lambda: linear(values(torch.tensor([[1, 2], [3, 4]]))).sum() * scale)
    assert engine.settle() == 1
    assert optimizers["memory"].state[values.weight]["step"] == 4
    assert optimizers["model"].state[linear.weight]["step"] == 4


@pytest.fixture(scope="module")
def toy_corpus(tmp_path_factory):
    """60 words in cyclic order (w3 w4 w5 ...): masked words are predictable from their neighbours."""
    out = tmp_path_factory.mktemp("toy")
    words = [f"w{i}" for i in range(60)]
    (out / "vocab").write_text("".join(f"{w} {1000 - i}\n" for i, w in enumerate(words)))
    dico = Dictionary.read_vocab(out / "vocab")
    rng = random.Random(0)
    for split, n in (("train", 2000), ("valid", 100), ("test", 100)):
        starts = [(rng.randrange(60), rng.randrange(5, 15)) for _ in range(n)]
        (out / f"{split}.en").write_text("".join(" ".join(words[(s + j) % 60] for j in range(k)) + "\n"
                                                 for s, k in starts))
        binarize(out / f"{split}.en", dico, out / f"{split}.en.pth", threads=1)
    return out


def test_product_key_memory_trains_with_dense_and_sparse_values(toy_corpus, tmp_path):
    flags = ["--exp_name", "pkm", "--dump_path", tmp_path, "--data_path", toy_corpus, "--lgs", "en",
             "--mlm_steps", "en", "--emb_dim", "32", "--n_layers", "2", "--n_heads", "4", "--batch_size", "8",
             "--bptt", "32", "--max_len", "40", "--use_memory", "true", "--mem_enc_positions", "1",
             "--mem_n_keys", "8", "--mem_k_dim", "16", "--mem_heads", "2", "--mem_knn", "4",
             "--optimizer", "adam,lr=0.002", "--epoch_size", "400", "--max_epoch", "2", "--log_interval", "10"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    runs = {sparse: subprocess.Popen([sys.executable, "train.py", *map(str, flags), "--exp_id", sparse,
                                      "--mem_sparse", sparse], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
            for sparse in ("false", "true")}
    for sparse, proc in runs.items():
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:]
        log = (tmp_path / "pkm" / sparse / "train.log").read_text()
        losses = [float(v) for v in re.findall(r"MLM-en: +(\S+)", log)]
        scores = [json.loads(line.split("__log__:", 1)[1]) for line in log.splitlines() if "__log__:" in line]
        assert len(losses) == 10 and all(math.isfinite(x) for x in losses)
        assert sum(losses[-3:]) < sum(losses[:3]) - 0.3
        assert scores[1]["valid_mlm_ppl"] < scores[0]["valid_mlm_ppl"]
        ckpt = read_checkpoint(tmp_path / "pkm" / sparse / "checkpoint.pth")
        assert ckpt["params"]["mem_values_optimizer"] == ("sparseadam,lr=0.001" if sparse == "true"
                                                          else "adam,lr=0.001")
        assert [s["step"] for s in ckpt["memory_optimizer"]["state"].values()] == [100]


def test_the_originals_translation_optimizer_state_loads_without_the_untrained_bias(tmp_path):
    """The original's translation runs train the encoder's output bias too (no gradient ever reaches it), so its
    optimizer state has one parameter more than xlm's: that one is left out, and every other parameter gets its
    own moments and the update count goes on (the whole state was refused: warmup started over)."""
    import logging
    from xlm.train.build import build_models, build_optimizers
    from xlm.train.checkpointing import load_optimizer_states, untrained_positions
    from xlm.train.schedules import build_optimizer
    from xlm.data.dictionary import SPECIAL_WORDS
    dico = Dictionary.from_words([(w, 0) for w in SPECIAL_WORDS] + [(f"w{i}", 10) for i in range(20)])
    params = parse_params(["--exp_name", "x", "--data_path", str(tmp_path), "--lgs", "en-fr", "--encoder_only",
                           "false", "--mt_steps", "en-fr", "--emb_dim", "16", "--n_layers", "1", "--n_heads", "2",
                           "--optimizer", "adam_inverse_sqrt,lr=0.001,warmup_updates=40"])
    params.n_words = len(dico)
    models = build_models(params, dico, torch.device("cpu"), logging.getLogger("test"))
    optimizer, _ = build_optimizers(models, params)
    untrained = untrained_positions(models)
    assert len(untrained) == 1
    # the original's optimizer: every parameter in order, the untrained bias among them
    everything = [p for m in models.values() for p in m.parameters()]
    original = build_optimizer(everything, params.optimizer)
    for _ in range(3):
        for i, p in enumerate(everything):
            p.grad = None if i in untrained else torch.randn_like(p)
        original.step()
        original.param_groups[0]["num_updates"] += 1  # as the training loop counts them
    state = original.state_dict()
    load_optimizer_states(optimizer, {"model_optimizer": state}, "orig.pth", logging.getLogger("test"), untrained)
    loaded = optimizer["model"]
    trained = [p for i, p in enumerate(everything) if i not in untrained]
    assert loaded.param_groups[0]["num_updates"] == 3
    for p, q in zip(trained, loaded.param_groups[0]["params"]):
        assert p is q
        assert torch.equal(loaded.state[q]["exp_avg"], original.state[p]["exp_avg"])
