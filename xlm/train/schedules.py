"""Loss-coefficient schedules (`--lambda_*`) and optimizers with their learning-rate schedules
(`--optimizer 'adam_inverse_sqrt,lr=0.0001,warmup_updates=4000'`), with the original's syntaxes."""
import math
import re
from dataclasses import dataclass

import torch

from ..fileio import DataError

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")


@dataclass
class LambdaSchedule:
    """A coefficient: one float, or `iter:value,...` pairs, piecewise linear in the iteration count."""
    points: list  # [(iteration, value)]

    @classmethod
    def parse(cls, value, flag="lambda"):
        if ":" not in value:
            if not _NUMBER.match(value):
                raise DataError(f"--{flag}: '{value}' is not a number")
            return cls([(0, float(value))])
        points = []
        for item in value.split(","):
            it, _, v = item.partition(":")
            if not it.isdigit() or not _NUMBER.match(v):
                raise DataError(f"--{flag}: '{item}' is not 'iteration:value'")
            points.append((int(it), float(v)))
        if any(b[0] <= a[0] for a, b in zip(points, points[1:])):
            raise DataError(f"--{flag}: iterations must increase strictly in '{value}'")
        return cls(points)

    def __call__(self, n_iter):
        if n_iter <= self.points[0][0]:
            return self.points[0][1]
        for (x0, y0), (x1, y1) in zip(self.points, self.points[1:]):
            if x0 <= n_iter < x1:
                return y0 + (n_iter - x0) * (y1 - y0) / (x1 - x0)
        return self.points[-1][1]


OPTIMIZERS = {
    "adadelta": torch.optim.Adadelta, "adagrad": torch.optim.Adagrad, "adamax": torch.optim.Adamax,
    "asgd": torch.optim.ASGD, "rmsprop": torch.optim.RMSprop, "rprop": torch.optim.Rprop, "sgd": torch.optim.SGD,
}
ADAM_FAMILY = {"adam": {}, "adam_inverse_sqrt": {"warmup_updates": 4000, "warmup_init_lr": 1e-7, "exp_factor": 0.5},
               "adam_cosine": {"warmup_updates": 4000, "warmup_init_lr": 1e-7, "min_lr": 1e-9,
                               "init_period": 1000000, "period_mult": 1, "lr_shrink": 0.75}}


def parse_optimizer(spec):
    """'name,key=value,...' -> (name, {key: float}); values are plain decimals as in the original."""
    name, *items = spec.split(",")
    if name not in OPTIMIZERS and name not in ADAM_FAMILY:
        raise DataError(f"--optimizer: unknown optimizer '{name}' "
                        f"(one of {', '.join(sorted(list(OPTIMIZERS) + list(ADAM_FAMILY)))})")
    options = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not _NUMBER.match(value):
            raise DataError(f"--optimizer: '{item}' must be key=number (plain decimals: 0.0001, not 1e-4)")
        options[key] = float(value)
    if name == "sgd" and "lr" not in options:
        raise DataError("--optimizer: sgd needs lr=...")
    return name, options


def build_optimizer(parameters, spec):
    """The optimizer of `spec`; the learning rate of its schedule is set by `update_lr` after each step."""
    name, options = parse_optimizer(spec)
    if name in OPTIMIZERS:
        try:
            return OPTIMIZERS[name](parameters, **options)
        except TypeError as e:
            raise DataError(f"--optimizer: {e}") from None
    schedule = dict(ADAM_FAMILY[name])
    kwargs = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}
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
            raise DataError(f"--optimizer: '{key}' is not an option of {name}")
    # AdamW: the original's Adam applies weight decay decoupled from the gradient (p -= wd * lr * p)
    optimizer = torch.optim.AdamW(parameters, **kwargs)
    for group in optimizer.param_groups:
        group.update(schedule_name=name, base_lr=kwargs["lr"], num_updates=0, **schedule)
        group["lr"] = scheduled_lr(group)
    return optimizer


def scheduled_lr(group):
    """The learning rate of a param group after `num_updates` steps, by its schedule."""
    name, n, lr = group.get("schedule_name"), group.get("num_updates", 0), group.get("base_lr", group["lr"])
    if name == "adam_inverse_sqrt":
        warmup, init = group["warmup_updates"], group["warmup_init_lr"]
        if n < warmup:
            return init + n * (lr - init) / warmup
        return lr * warmup ** group["exp_factor"] * n ** -group["exp_factor"]
    if name == "adam_cosine":
        warmup, init = group["warmup_updates"], group["warmup_init_lr"]
        if n < warmup:
            return init + n * (lr - init) / warmup
        t, period, max_lr = n - warmup, group["init_period"], lr
        # SGDR: restarts after periods growing by period_mult, each peak shrunk by lr_shrink
        while t >= period:
            t -= period
            period *= group["period_mult"]
            max_lr *= group["lr_shrink"]
        return group["min_lr"] + 0.5 * (max_lr - group["min_lr"]) * (1 + math.cos(math.pi * t / period))
    return group["lr"]


def update_lr(optimizer):
    """Count one update and set each group's learning rate from its schedule."""
    for group in optimizer.param_groups:
        if "schedule_name" in group:
            group["num_updates"] += 1
            group["lr"] = scheduled_lr(group)
