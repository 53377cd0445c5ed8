"""How the product-key memories are used over the valid sets, with the original's statistics and names:
`valid_<set>_self.<model>.memories.<layer>_<in|after>_mem_used` (% of the slots read at all), `_mem_kl_w/_u`
(KL divergence from the uniform distribution over slots), `_mem_gini_w/_u` (Gini coefficient) and
`_mem_top50/90/99_w/_u` (how many of the most read slots hold 50, 90 and 99% of the reads), where `_w`
weighs each read by its softmax weight and `_u` counts reads. The original counts a padded batch's
padding positions as reads; xlm counts the real tokens only."""
import functools
from contextlib import contextmanager

import numpy as np
import torch

from ..model.memory import parse_mem_positions
from ..train.distributed import all_reduce_tensors


def named_memories(models):
    """[(name, memory)] of {model name: model}, named as the original's trainer finds them."""
    return [(f"self.{name}.memories.{key}", memory) for name, model in models.items()
            for key, memory in model.memories.items()]


def memory_metric_names(params, prefix, model_names):
    """The usage statistics evaluate_lm / evaluate_mt report for a valid set `prefix` (`valid_en`),
    from the flags alone: for checking --validation_metrics before training."""
    if not params.use_memory:
        return []
    names = []
    for model in model_names:
        spec = params.mem_dec_positions if model == "decoder" else params.mem_enc_positions
        for layer, where in parse_mem_positions(spec, params.n_layers):
            base = f"{prefix}_self.{model}.memories.{layer}_{where}_mem"
            names += [f"{base}_{s}" for s in STATISTICS]
    return names


STATISTICS = ("used", "kl_w", "kl_u", "gini_w", "gini_u", "top50_w", "top90_w", "top99_w", "top50_u", "top90_u",
              "top99_u")


class MemoryUsage:
    """Reads of every memory slot (weighted and counted) over the forward passes run inside `reading`."""

    def __init__(self, models, device):
        self.memories = named_memories(models)
        self.weighted = {n: torch.zeros(m.config.size, dtype=torch.float64, device=device) for n, m in self.memories}
        self.counted = {n: torch.zeros(m.config.size, dtype=torch.float64, device=device) for n, m in self.memories}
        self.real = None

    def __bool__(self):
        return bool(self.memories)

    @contextmanager
    def reading(self, x, lengths=None):
        """Count the reads of the forward passes inside, on x (bs, slen) whose rows have these lengths
        (None: no padding); the reads of padding positions are left out where the model computes them."""
        self.real = None if lengths is None else \
            (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]).flatten()
        hooks = [memory.values.register_forward_hook(functools.partial(self._add, name), with_kwargs=True)
                 for name, memory in self.memories]
        try:
            yield
        finally:
            for hook in hooks:
                hook.remove()

    def _add(self, name, values, args, kwargs, output):
        indices, weights = args[0], kwargs["per_sample_weights"]  # (positions, heads * knn) each
        if self.real is not None and len(indices) == len(self.real):
            indices, weights = indices[self.real], weights[self.real]
        indices = indices.flatten()
        self.weighted[name].index_add_(0, indices, weights.flatten().double())
        self.counted[name].index_add_(0, indices, torch.ones_like(indices, dtype=torch.float64))

    def scores(self, prefix, info):
        """The statistics of every memory, `prefix`_<memory name>_mem_<statistic>, summed over the ranks
        of `info`; the counts start again from zero."""
        names = [n for n, _ in self.memories]
        totals = all_reduce_tensors([self.weighted[n] for n in names] + [self.counted[n] for n in names], info)
        scores = {}
        for i, name in enumerate(names):
            w, u = totals[i].cpu().numpy(), totals[len(names) + i].cpu().numpy()
            if w.sum() > 0:
                scores.update(usage_statistics(f"{prefix}_{name}", w / w.sum(), u / u.sum()))
            self.weighted[name].zero_(), self.counted[name].zero_()
        return scores


def usage_statistics(name, w, u):
    """The original's statistics of two distributions over the slots: w (reads weighted), u (counted)."""
    scores = {f"{name}_mem_used": float(100 * np.count_nonzero(w) / len(w))}
    for suffix, p in (("w", w), ("u", u)):
        scores[f"{name}_mem_kl_{suffix}"] = float(np.log(len(p)) + (p * np.log(np.where(p > 0, p, 1))).sum())
    for suffix, p in (("w", w), ("u", u)):
        # 1 - 2 x the mean of the cumulated sorted shares (0: uniform, toward 1: a few slots take all)
        scores[f"{name}_mem_gini_{suffix}"] = float(1 - 2 * np.cumsum(np.sort(p)).mean())
    for suffix, p in (("w", w), ("u", u)):
        cumulated = np.cumsum(np.sort(p))
        for share, below in ((50, 0.5), (90, 0.1), (99, 0.01)):
            # the slots past the point where the least read ones hold `below` of the reads
            scores[f"{name}_mem_top{share}_{suffix}"] = float(len(p) - np.searchsorted(cumulated, below))
    return scores
