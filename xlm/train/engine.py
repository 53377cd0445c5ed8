"""The training step of train.py and glue-xnli.py: forward under autocast, loss scaling (fp16),
gradient accumulation, clipping per parameter set, the non-finite skip, the optimizer steps and the
learning-rate schedules.

Nothing in a step reads a device value on the host, so that the host runs ahead of the GPU: a
non-finite loss, or float16 gradients that overflowed the loss scale, is noted in a flag on the device
(all-reduced over ranks without being read) and the optimizers turn the update into a no-op themselves
(GradScaler's `found_inf` protocol, which the original's Adam of xlm/train/adam.py follows). The host
learns of skipped updates at `settle()`, called at log lines and before checkpoints: it then takes them
back from the learning-rate schedules, so a skipped update does not advance them (until then, the steps
in between ran one update ahead), and stops a run whose last MAX_CONSECUTIVE_NONFINITE updates were all
skipped.
"""
from contextlib import ExitStack, nullcontext

import torch
import torch.distributed as dist

from ..fileio import DataError
from .schedules import clip_grad_norm_, scheduled_lr, update_lr

MAX_CONSECUTIVE_NONFINITE = 20


def amp_dtype(params):
    """The dtype autocast computes in (--fp16, --bf16), or None for float32."""
    return torch.float16 if params.fp16 else torch.bfloat16 if params.bf16 else None


class StepEngine:
    """`step(compute_loss)` runs one micro-step; every `accumulate`-th makes an update with the mean of
    their gradients (each loss a mean, the gradient of one batch N times as large)."""

    def __init__(self, optimizers, param_sets, modules, device, amp_dtype=None, accumulate=1, clip_grad_norm=0.0,
                 multi=False):
        self.optimizers, self.param_sets, self.modules = optimizers, param_sets, list(modules)
        self.device, self.amp_dtype, self.accumulate, self.clip = device, amp_dtype, accumulate, clip_grad_norm
        self.multi = multi
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)
        self.n_micro = 0                                                     # backward passes
        self.nonfinite = torch.zeros((), dtype=torch.float32, device=device)  # since the last update
        self.skipped = torch.zeros((), dtype=torch.int64, device=device)      # updates skipped, in all
        self.in_a_row = torch.zeros((), dtype=torch.int64, device=device)
        self.longest_run = torch.zeros((), dtype=torch.int64, device=device)  # since the last settle()
        self.n_skipped = 0                                                   # as last read by settle()
        # a model that ran under no_sync but not in the updating micro-step (an AE step's decoder, then an
        # MLM step) holds gradients of this rank alone: `update` all-reduces them itself
        self.ran, self.unsynced = set(), set()
        if multi:
            for module in self.modules:
                module.register_forward_pre_hook(lambda module, args: self.ran.add(module))

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()

    def step(self, compute_loss, weight=1.0):
        """compute_loss() -> a scalar loss (a mean); returns it detached, on the device."""
        update = (self.n_micro + 1) % self.accumulate == 0
        self.ran.clear()
        with ExitStack() as stack:
            if self.multi and not update:
                for module in self.modules:  # gradients are all-reduced on the last micro-step only
                    stack.enter_context(module.no_sync())
            with self.autocast():
                loss = compute_loss()
            self.nonfinite = torch.maximum(self.nonfinite, (~torch.isfinite(loss.detach())).float())
            self.scaler.scale(loss * (weight / self.accumulate)).backward()
        self.n_micro += 1
        if self.multi and not update:
            self.unsynced |= self.ran
        if update:
            if self.multi:
                for module in self.modules:  # the same order on every rank: they run the same objectives
                    if module in self.unsynced and module not in self.ran:
                        all_reduce_mean_grads(module)
                self.unsynced.clear()
            self.update()
        return loss.detach()

    def update(self):
        for optimizer in self.optimizers.values():
            self.scaler.unscale_(optimizer)
        # one decision for all optimizers: a non-finite loss, or float16 gradients that overflowed the loss
        # scale (on DDP's all-reduced gradients); an update is made or skipped whole, and counted as such
        skip = self.nonfinite
        if self.scaler.is_enabled():
            skip = skip + sum(v.to(self.device) for optimizer in self.optimizers.values()
                              for v in self.scaler._found_inf_per_device(optimizer).values())
        if self.multi:
            dist.all_reduce(skip, op=dist.ReduceOp.MAX)  # every rank skips the same updates
        if self.clip > 0:
            for params in self.param_sets.values():
                if params:
                    clip_grad_norm_(params, self.clip)
        for optimizer in self.optimizers.values():
            if getattr(optimizer, "_step_supports_amp_scaling", False):
                optimizer.found_inf = skip
                optimizer.step()
                del optimizer.found_inf
            elif not skip.item():  # torch's other optimizers cannot skip on the device
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            update_lr(optimizer)
        self.scaler.update()
        skipped = (skip > 0).long()
        self.skipped += skipped
        self.in_a_row = (self.in_a_row + 1) * skipped
        self.longest_run = torch.maximum(self.longest_run, self.in_a_row)
        self.nonfinite = torch.zeros_like(self.nonfinite)

    def settle(self):
        """Read the skipped updates (a host synchronisation: at log lines and checkpoints), take them back
        from the schedules, and stop a run that diverged. Returns the number newly skipped."""
        total, longest = (int(v) for v in torch.stack([self.skipped, self.longest_run]).tolist())
        new, self.n_skipped = total - self.n_skipped, total
        self.longest_run.zero_()
        if new:
            for optimizer in self.optimizers.values():
                # an optimizer that skips on the device was stepped, and counted the skipped updates; the
                # others (SparseAdam for --mem_sparse) were not called
                counted = getattr(optimizer, "_step_supports_amp_scaling", False)
                for group in optimizer.param_groups:
                    if "schedule_name" in group:
                        group["num_updates"] -= new
                        group["lr"] = scheduled_lr(group)
                    for p in group["params"] if counted else ():
                        state = optimizer.state.get(p)
                        if state and isinstance(state.get("step"), int):
                            state["step"] = max(state["step"] - new, 0)
        if longest >= MAX_CONSECUTIVE_NONFINITE:
            # a DataError, so that train.py and glue-xnli.py stop with this one line (the flags are to blame)
            raise DataError(f"{longest} updates in a row skipped for a non-finite loss or float16 overflow: the run "
                            "diverged; lower the learning rate, or use --bf16 instead of --fp16")
        return new

    def pending_gradients(self, models):
        """What the micro-steps since the last update accumulated, when a checkpoint falls between two
        updates, so that a resumed run makes the update the uninterrupted one makes: {"grads": {model:
        {parameter: gradient}}, "sparse": the sparse ones' names, "nonfinite": flag}, the gradients dense,
        their mean over ranks (as the update's all-reduce takes them); None at an update. Every rank takes
        part."""
        if self.n_micro % self.accumulate == 0:
            return None
        grads, sparse, nonfinite = {}, [], self.nonfinite.clone()
        if self.multi:
            dist.all_reduce(nonfinite, op=dist.ReduceOp.MAX)
        for name, model in models.items():
            named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
            sparse += [f"{name}.{k}" for k, p in named if p.grad is not None and p.grad.is_sparse]
            dense = dense_grads([p for _, p in named])
            held = torch.tensor([p.grad is not None for _, p in named], dtype=torch.int32, device=self.device)
            if self.multi:
                dense = mean_over_ranks(dense)
                dist.all_reduce(held, op=dist.ReduceOp.MAX)
            grads[name] = {k: g.cpu().clone() for (k, _), g, h in zip(named, dense, held.tolist()) if h}
        return {"grads": grads, "sparse": sparse, "nonfinite": float(nonfinite)}

    def load_scaler_state(self, state):
        """The loss scale saved with a run; one saved without float16 (a disabled scaler's state is empty)
        and resumed with it starts from GradScaler's first scale, as a new float16 run does."""
        if state or not self.scaler.is_enabled():
            self.scaler.load_state_dict(state)

    def load_state_dict(self, state, models=None):
        self.load_scaler_state(state["scaler"])
        self.n_micro, self.n_skipped = state["n_micro"], state["n_skipped"]
        self.skipped.fill_(self.n_skipped)
        pending = state.get("pending")
        if pending and models is not None:
            for name, grads in pending["grads"].items():
                params = dict(models[name].named_parameters())
                for k, g in grads.items():
                    p = params[k]
                    g = g.to(p.device, p.dtype)
                    # sparse gradients (--mem_sparse's values) were saved dense: rows again for SparseAdam
                    p.grad = g.to_sparse(sparse_dim=1) if f"{name}.{k}" in pending["sparse"] else g
            self.nonfinite.fill_(pending["nonfinite"])


def dense_grads(params):
    """The parameters' gradients as dense tensors, zeros where there is none."""
    return [(p.grad.to_dense() if p.grad.is_sparse else p.grad) if p.grad is not None else torch.zeros_like(p)
            for p in params]


def mean_over_ranks(tensors):
    """The tensors' means over ranks, in one all-reduce."""
    flat = torch.cat([t.flatten() for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    return [m.view_as(t) for m, t in zip(flat.split([t.numel() for t in tensors]), tensors)]


def all_reduce_mean_grads(module):
    """What DDP does to a module's gradients in a synchronised backward: their mean over ranks (a
    parameter without a gradient on this rank contributes zeros)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p, g in zip(params, mean_over_ranks(dense_grads(params))):
        p.grad = g.to_sparse(sparse_dim=1) if p.grad is not None and p.grad.is_sparse else g
