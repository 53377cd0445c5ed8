"""Loss-coefficient schedules (`--lambda_*`) and optimizers with their learning-rate schedules
(`--optimizer 'adam_inverse_sqrt,lr=0.0001,warmup_updates=4000'`), with the original's syntaxes and
formulas; gradient clipping that also takes the sparse gradients of the memory values (`--mem_sparse`)."""
import inspect
import math
import re
from dataclasses import dataclass

import torch

from ..fileio import DataError
from .adam import Adam

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")


def finite_number(text):
    """float(text), as the original reads loss coefficients and probabilities (1e-3 included), or None where
    that fails or gives nan or inf."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@dataclass
class LambdaSchedule:
    """A coefficient: one float, or `iter:value,...` pairs, piecewise linear in the iteration count."""
    points: list  # [(iteration, value)]

    @classmethod
    def parse(cls, value, flag="lambda"):
        if ":" not in value:
            if finite_number(value) is None:
                raise DataError(f"--{flag}: '{value}' is not a number (or 'iteration:value,...' pairs)")
            return cls([(0, finite_number(value))])
        points = []
        for item in value.split(","):
            it, _, v = item.partition(":")
            if not it.isdecimal() or finite_number(v) is None:
                raise DataError(f"--{flag}: '{item}' is not 'iteration:value'")
            points.append((int(it), finite_number(v)))
        if any(b[0] <= a[0] for a, b in zip(points, points[1:])):
            raise DataError(f"--{flag}: iterations must increase strictly in '{value}'")
        return cls(points)

    def __call__(self, n_iter):
        if n_iter <= self.points[0][0]:
            return self.points[0][1]
        for (x0, y0), (x1, y1) in zip(self.points, self.points[1:]):
            if x0 <= n_iter < x1:
                return y0 + (n_iter - x0) * ((y1 - y0) / (x1 - x0))
        return self.points[-1][1]


OPTIMIZERS = {
    "adadelta": torch.optim.Adadelta, "adagrad": torch.optim.Adagrad, "adamax": torch.optim.Adamax,
    "asgd": torch.optim.ASGD, "rmsprop": torch.optim.RMSprop, "rprop": torch.optim.Rprop, "sgd": torch.optim.SGD,
}
ADAM_FAMILY = {"adam": {}, "adam_inverse_sqrt": {"warmup_updates": 4000, "warmup_init_lr": 1e-7, "exp_factor": 0.5},
               "adam_cosine": {"warmup_updates": 4000, "warmup_init_lr": 1e-7, "min_lr": 1e-9,
                               "init_period": 1000000, "period_mult": 1, "lr_shrink": 0.75},
               # torch's SparseAdam (no weight decay), which --mem_sparse true puts in place of adam
               "sparseadam": {}}
SPARSE_OPTIMIZERS = ("sparseadam", "sgd", "adagrad")  # those that take sparse gradients


def parse_optimizer(spec, flag="optimizer"):
    """'name,key=value,...' -> (name, {key: float}); values are plain decimals as in the original."""
    name, *items = spec.split(",")
    if name not in OPTIMIZERS and name not in ADAM_FAMILY:
        raise DataError(f"--{flag}: unknown optimizer '{name}' "
                        f"(one of {', '.join(sorted(list(OPTIMIZERS) + list(ADAM_FAMILY)))})")
    options = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not _NUMBER.match(value):
            raise DataError(f"--{flag}: '{item}' must be key=number (plain decimals: 0.0001, not 1e-4)")
        if key in options:
            raise DataError(f"--{flag}: {key} is given twice")
        options[key] = float(value)
        if options[key] < 0:
            raise DataError(f"--{flag}: {key}={value} must not be negative")
        if name in OPTIMIZERS and key not in torch_options(name):
            raise DataError(f"--{flag}: '{key}' is not an option of {name} (its options: "
                            f"{', '.join(torch_options(name))})")
        if key == "betas" or name in OPTIMIZERS and isinstance(torch_options(name)[key], tuple):
            raise DataError(f"--{flag}: {key} is a pair, which key=number cannot give"
                            + (": use beta1= and beta2=" if name in ADAM_FAMILY else ""))
    if name == "sgd" and "lr" not in options:
        raise DataError(f"--{flag}: sgd needs lr=...")
    return name, options


def torch_options(name):
    """{option: default} of torch's optimizer `name`. As the original (which checks them with
    inspect.getfullargspec), only the constructor's positional parameters are options; of those,
    `capturable` (CUDA graphs) and `differentiable` (a step inside autograd) are torch's internals."""
    parameters = inspect.signature(OPTIMIZERS[name].__init__).parameters.values()
    return {p.name: p.default for p in parameters if p.kind == p.POSITIONAL_OR_KEYWORD
            and p.name not in ("self", "params", "capturable", "differentiable")}


def build_optimizer(parameters, spec, flag="optimizer"):
    """The optimizer of `spec` (given by --`flag`); the learning rate of its schedule is set by `update_lr`
    after each step."""
    name, options = parse_optimizer(spec, flag)
    if name in OPTIMIZERS:
        try:
            return OPTIMIZERS[name](parameters, **options)
        except (TypeError, ValueError) as e:
            raise DataError(f"--{flag}: {e}") from None
    schedule = dict(ADAM_FAMILY[name])
    kwargs = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8}
    if name != "sparseadam":
        kwargs["weight_decay"] = 0.0
    for key, value in options.items():
        if key in ("beta1", "beta2"):
            betas = list(kwargs["betas"])
            betas[key == "beta2"] = value
            kwargs["betas"] = tuple(betas)
        elif key in kwargs:
            kwargs[key] = value
        elif key in schedule:
            schedule[key] = value
        else:
            raise DataError(f"--{flag}: '{key}' is not an option of {name}")
    if schedule.get("warmup_updates", 1) <= 0 or schedule.get("init_period", 1) <= 0:
        raise DataError(f"--{flag}: {name} needs warmup_updates > 0 and init_period > 0")
    if schedule.get("period_mult", 1) < 1:
        # shorter and shorter periods would end after init_period / (1 - period_mult) updates
        raise DataError(f"--{flag}: {name} needs period_mult >= 1")
    try:
        optimizer = (torch.optim.SparseAdam if name == "sparseadam" else Adam)(parameters, **kwargs)
    except ValueError as e:
        raise DataError(f"--{flag}: {e}") from None
    for group in optimizer.param_groups:
        group.update(schedule_name=name, base_lr=kwargs["lr"], num_updates=0, **schedule)
        group["lr"] = scheduled_lr(group)
    return optimizer


def scheduled_lr(group):
    """The learning rate of a param group after `num_updates` steps, by the original's formulas."""
    name, n, lr = group.get("schedule_name"), group.get("num_updates", 0), group.get("base_lr", group["lr"])
    if name not in ("adam_inverse_sqrt", "adam_cosine"):
        return group["lr"]
    warmup, init = group["warmup_updates"], group["warmup_init_lr"]
    if n < warmup:
        return init + n * ((lr - init) / warmup)
    if name == "adam_inverse_sqrt":
        return lr * warmup ** group["exp_factor"] * n ** -group["exp_factor"]
    # SGDR: period k (from 0) lasts init_period * period_mult^k updates, its bounds shrunk by lr_shrink^k
    t, period, mult = n - warmup, group["init_period"], group["period_mult"]
    if mult == 1:
        k = math.floor(t / period)
        t_k, start = period, period * k
    else:
        k = math.floor(math.log(1 - t / period * (1 - mult), mult))
        t_k, start = period * mult ** k, (1 - mult ** k) / (1 - mult) * period
    shrink = group["lr_shrink"] ** k
    min_lr, max_lr = group["min_lr"] * shrink, lr * shrink
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * (t - start) / t_k))


def update_lr(optimizer):
    """Count one update and set each group's learning rate from its schedule."""
    for group in optimizer.param_groups:
        if "schedule_name" in group:
            group["num_updates"] += 1
            group["lr"] = scheduled_lr(group)


def load_optimizer_state(optimizer, state):
    """Restore the moments and update counts of `state`; the rest of each param group (lr schedule, betas,
    ...) stays the command line's, the lr is recomputed. torch's load_state_dict alone would replace the
    groups whole, and the original's files have no schedule keys: their learning rate would freeze."""
    mine = [{k: v for k, v in group.items() if k not in ("params", "num_updates")} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, kept in zip(optimizer.param_groups, mine):
        group.update(kept)
        if "schedule_name" in group:
            group["num_updates"] = group.get("num_updates", 0)
            group["lr"] = scheduled_lr(group)


def clip_grad_norm_(parameters, max_norm):
    """torch.nn.utils.clip_grad_norm_ (L2), which refuses sparse gradients: those (the memory values' with
    --mem_sparse) are coalesced, summing the rows a batch read several times, and clipped through their
    values. All gradients are on one device. Returns the total norm before clipping."""
    grads = []
    for p in parameters:
        if p.grad is not None and p.grad.is_sparse:
            p.grad = p.grad.coalesce()
        if p.grad is not None:
            grads.append(p.grad._values() if p.grad.is_sparse else p.grad)
    if not grads:
        return torch.tensor(0.0)
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total
