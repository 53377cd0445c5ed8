"""The original XLM's Adam (its `adam`, `adam_inverse_sqrt` and `adam_cosine` optimizers).

It differs from torch's Adam/AdamW in where eps goes: the original adds eps to sqrt(v) before the bias
correction, `p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)`, where torch divides by
`sqrt(v) / sqrt(1 - b2^t) + eps` (at step 1 with b2 = 0.999 the original's eps weighs 31x more).
Weight decay is decoupled and applied before the update: `p -= wd * lr * p`.

It follows GradScaler's `found_inf` protocol: with an attribute `found_inf` (a tensor on the device,
non-zero to skip), a skipped update leaves the moments and parameters exactly as they were, decided on
the device without a host synchronisation (the step counts, on the host, still advance:
xlm/train/engine.py takes them back). On the CPU, where reading the flag costs nothing, it is read and
a skipped update is not computed at all, which saves a masked pass over every gradient (half of an
update's time).

On CUDA and the CPU the update is torch's fused AdamW kernel (one pass over each parameter, its gradient
and moments, where the multi-tensor operations below make a dozen): the same update in torch's terms, the
original's eps added to sqrt(v) before the bias correction being eps / sqrt(1 - b2^t) added after it,
equal to the original's operations up to roundings. The kernel counts the updates made in step tensors
of its own, on the device. On the CPU it takes 3-7x less time than the multi-tensor operations (2 to 54
million parameters, one or two threads: 10% of a toy AE+BT run's time was the update). Other devices
take the multi-tensor operations, which are the original's, operation for operation.

It is not a `torch.optim.Optimizer`: torch wraps that class's methods to keep its compiler out of them,
and the first call imports `torch._dynamo`, 1.2-1.6 s at the start of every run. It has the part of that
interface the training loop, GradScaler and checkpoints use (`param_groups`, `state`, `step`,
`zero_grad`, `state_dict` and `load_state_dict`, in torch's format, which the original's files share).
"""
import math
from collections import defaultdict
from copy import deepcopy

import torch


def skips_on_host(found_inf):
    """Whether to read the skip flag on the host: on the CPU, where that does not wait for a device."""
    return found_inf.device.type == "cpu"


def uses_fused_kernel(param):
    """Whether to update with torch's fused kernel (on the devices that have it for every dtype)."""
    return param.device.type in ("cuda", "cpu")


class Adam:
    """State per parameter as torch's and the original's: `step` (an int), `exp_avg`, `exp_avg_sq`."""
    _step_supports_amp_scaling = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"Adam: invalid lr={lr}, betas={betas}, eps={eps} or weight_decay={weight_decay}")
        self.defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        self.state = defaultdict(dict)
        self.device_steps = {}  # the fused kernel's update counts, a float32 tensor per parameter
        self.param_groups = []
        params = list(params)
        if not params:
            raise ValueError("Adam: no parameters to optimize")
        for group in params if isinstance(params[0], dict) else [{"params": params}]:
            members = group["params"]
            self.param_groups.append({**self.defaults, **group, "params": [members] if isinstance(
                members, torch.Tensor) else list(members)})

    def zero_grad(self, set_to_none=True):
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.detach_().zero_()

    def state_dict(self):
        """torch's layout: parameters numbered in group order, the state keyed by those numbers."""
        number = {}
        groups = [{**{k: v for k, v in group.items() if k != "params"},
                   "params": [number.setdefault(id(p), len(number)) for p in group["params"]]}
                  for group in self.param_groups]
        return {"state": {number[id(p)]: s for p, s in self.state.items()}, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """As torch's: the saved groups replace these (their parameters kept), the moments take each
        parameter's dtype and device. ValueError when the groups do not match."""
        saved = deepcopy(state_dict["param_groups"])
        if len(saved) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(saved)} parameter groups, the optimizer "
                             f"{len(self.param_groups)}")
        if any(len(a["params"]) != len(b["params"]) for a, b in zip(saved, self.param_groups)):
            raise ValueError("loaded state dict contains a parameter group that doesn't match the size of "
                             "optimizer's group")
        params = {i: p for a, b in zip(saved, self.param_groups) for i, p in zip(a["params"], b["params"])}
        self.state, self.device_steps = defaultdict(dict), {}
        for i, s in state_dict["state"].items():
            p = params[i]
            self.state[p] = {k: v.to(device=p.device, dtype=p.dtype if p.is_floating_point() else None)
                             if isinstance(v, torch.Tensor) and k != "step" else v for k, v in s.items()}
        self.param_groups = [{**a, "params": b["params"]} for a, b in zip(saved, self.param_groups)]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("Adam does not take sparse gradients: use sparseadam (--mem_sparse true)")
            states = [self.state[p] for p in params]
            for p, state in zip(params, states):
                if not state:
                    state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                state["step"] += 1
            grads = [p.grad for p in params]
            found_inf = getattr(self, "found_inf", None)
            if found_inf is not None and skips_on_host(found_inf):
                if found_inf.item():
                    continue
                found_inf = None
            if uses_fused_kernel(params[0]):
                self._fused_step(group, params, grads, states, found_inf)
                continue
            if getattr(self, "grad_scale", None) is not None:  # gradients GradScaler.step left scaled
                grads = torch._foreach_div(grads, self.grad_scale)
            keep = None if found_inf is None else found_inf == 0
            if keep is not None:  # a skipped update adds zero gradients to unchanged moments
                grads = [torch.where(keep, g, 0.0) for g in grads]
            exp_avg = [s["exp_avg"] for s in states]
            exp_avg_sq = [s["exp_avg_sq"] for s in states]
            (beta1, beta2), lr, wd = group["betas"], group["lr"], group["weight_decay"]
            # the original's operations in its order, one multi-tensor kernel each
            torch._foreach_mul_(exp_avg, beta1 if keep is None else torch.where(keep, beta1, 1.0))
            torch._foreach_add_(exp_avg, grads, alpha=1 - beta1)
            torch._foreach_mul_(exp_avg_sq, beta2 if keep is None else torch.where(keep, beta2, 1.0))
            torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
            denom = torch._foreach_sqrt(exp_avg_sq)
            torch._foreach_add_(denom, group["eps"])
            if keep is not None:  # an infinite denominator: the step is exactly 0
                torch._foreach_div_(denom, keep.float())
            if wd != 0 and keep is None:
                torch._foreach_add_(params, params, alpha=-wd * lr)
            elif wd != 0:
                torch._foreach_add_(params, torch._foreach_mul(params, torch.where(keep, -wd * lr, 0.0)))
            # steps differ between parameters only when some of them missed gradients at some updates
            step_sizes = [-lr * math.sqrt(1 - beta2 ** s["step"]) / (1 - beta1 ** s["step"]) for s in states]
            torch._foreach_addcdiv_(params, exp_avg, denom, step_sizes)
        return loss

    def _fused_step(self, group, params, grads, states, found_inf):
        """torch's fused AdamW kernel: `p *= 1 - lr * wd`, then `p -= lr / (1 - b1^t) * m / (sqrt(v) /
        sqrt(1 - b2^t) + eps')`, which with eps' = eps / sqrt(1 - b2^t) is the original's update. t is
        the kernel's count on the device (updates made); eps' takes the host's (updates tried), which
        is ahead of it by the updates skipped since the last `StepEngine.settle()`."""
        (beta1, beta2), eps = group["betas"], group["eps"]
        skip = None if found_inf is None else (found_inf > 0).float()  # the kernel skips on exactly 1
        by_step = defaultdict(list)  # parameters that missed gradients at some updates have fewer steps
        for p, g, state in zip(params, grads, states):
            by_step[state["step"], p.dtype].append((p, g, state))
        for (step, _), members in by_step.items():
            ps, gs, ss = (list(t) for t in zip(*members))
            steps = []
            for p, state in zip(ps, ss):
                if p not in self.device_steps:  # a fill, not a copy from the host
                    self.device_steps[p] = torch.full((), float(state["step"] - 1), device=p.device)
                steps.append(self.device_steps[p])
            torch._foreach_add_(steps, 1)
            torch._fused_adamw_(ps, gs, [s["exp_avg"] for s in ss], [s["exp_avg_sq"] for s in ss], [], steps,
                                lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
                                eps=eps / math.sqrt(1 - beta2 ** step), amsgrad=False, maximize=False,
                                grad_scale=getattr(self, "grad_scale", None), found_inf=skip)
            if skip is not None:
                torch._foreach_sub_(steps, [skip] * len(steps))
