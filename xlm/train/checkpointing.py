"""Training checkpoints: everything a resumed run needs to continue exactly where it stopped.

The file has the original's keys (epoch, n_total_iter, best_metrics, best_stopping_criterion, model,
model_optimizer, the vocabulary and params), so the original code and `xlm.load_model` read it, plus
`train_state`: the gradient scaler, every data iterator's position, the loop's counters and running
stats, and the random states of python, numpy and torch (CPU and CUDA) of every rank.
"""
import random

import numpy as np
import torch
import torch.distributed as dist

from ..fileio import DataError
from ..model.checkpoint import (check_vocabulary, checkpoint_payload, load_weights, read_checkpoint, require_keys,
                                save_checkpoint)
from .schedules import load_optimizer_state


def rng_state(device):
    """This process's global random states: python's, numpy's, torch's on the CPU and on its own GPU (a
    resumed run may see a different set of GPUs, e.g. one per task under srun)."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng_state(state, device):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda = state["cuda"]
    if isinstance(cuda, list):  # checkpoints of earlier versions: every visible GPU's state
        cuda = cuda[device.index] if device.type == "cuda" and device.index < len(cuda) else None
    if cuda is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda, device)


def restore_rng_state(saved, info, logger):
    """This rank's state of the ranks' saved random states (`gather_rank_states`) restored and returned; None,
    with a warning, for a run saved with another number of ranks."""
    if len(saved) != info.world_size:
        logger.warning("Resuming with %i ranks a run saved with %i: random states are not restored",
                       info.world_size, len(saved))
        return None
    set_rng_state(saved[info.rank], info.device)
    return saved[info.rank]


def gather_rank_states(state, info):
    """Every rank's `state` (its random states, its data positions), on rank 0 (only rank 0 writes checkpoints)."""
    if not info.multi:
        return [state]
    states = [None] * info.world_size
    dist.all_gather_object(states, state)
    return states


def saved_positions(saved, info):
    """This rank's data positions of a checkpoint's (`gather_rank_states`); a checkpoint of another number of
    ranks gives rank 0's, which the iterators refuse, naming the number. Before 2026-12-06 checkpoints held
    one set for all ranks, whose rounds were the same."""
    if isinstance(saved, dict):
        return saved
    return saved[info.rank] if len(saved) == info.world_size else saved[0]


def save_training_checkpoint(path, models, optimizers, dico, params, train_state):
    """models: {'model': m} or {'encoder': e, 'decoder': d}, saved under those keys as the original.
    The file's `epoch` is the last finished one, as the original writes it (it resumes at epoch + 1);
    train_state keeps the loop's own position, mid-epoch included."""
    payload = checkpoint_payload(dico, vars(params), **models, epoch=train_state["epoch"] - 1,
                                 n_total_iter=train_state["n_total_iter"], best_metrics=train_state["best_metrics"],
                                 best_stopping_criterion=train_state["best_stopping_criterion"])
    for name, optimizer in optimizers.items():
        payload[f"{name}_optimizer"] = optimizer.state_dict()
    payload["train_state"] = train_state
    save_checkpoint(payload, path)


# what a resumed run may change, but rarely means to: its batches (their saved positions are then read in
# other batches) and its updates
BATCHING_FLAGS = ("batch_size", "bptt", "tokens_per_batch", "max_len", "group_by_size", "optimizer",
                  "accumulate_gradients", "fp16", "bf16")


def load_optimizer_states(optimizers, data, path, logger, untrained=()):
    """Each optimizer's state saved in the checkpoint `data` (as `<name>_optimizer`), where it fits: a
    run resumed with another optimizer, or other parameters to train, starts that state afresh. untrained:
    the positions, among the model optimizer's parameters as the original lists them, of those xlm does
    not train (a translation encoder's output bias): a state of the original holds them, and they are left
    out of it."""
    for name, optimizer in optimizers.items():
        if f"{name}_optimizer" in data:
            state = data[f"{name}_optimizer"]
            if name == "model" and untrained and _n_params(state) == _n_params(optimizer.state_dict()) + len(untrained):
                state = _without_params(state, set(untrained))
            try:
                load_optimizer_state(optimizer, state)
            except (ValueError, KeyError, RuntimeError) as e:
                logger.warning("%s: the %s optimizer state does not fit (%s); starting it afresh", path, name, e)


def _n_params(state):
    return sum(len(group["params"]) for group in state["param_groups"])


def _without_params(state, positions):
    """An optimizer state dict without the parameters at `positions` (of 0..n-1 in its groups' order), the
    others numbered again from 0."""
    kept = [i for group in state["param_groups"] for i in group["params"] if i not in positions]
    number = {old: new for new, old in enumerate(kept)}
    return {"state": {number[i]: s for i, s in state["state"].items() if i in number},
            "param_groups": [{**group, "params": [number[i] for i in group["params"] if i in number]}
                             for group in state["param_groups"]]}


def untrained_positions(models):
    """The positions of the parameters xlm leaves untrained among those of the original's model optimizer
    (every parameter of the models in order, the memory values apart)."""
    named = [(n, p) for m in models.values() for n, p in m.named_parameters() if not n.endswith(".values.weight")]
    return [i for i, (_, p) in enumerate(named) if not p.requires_grad]


# flags that build a model whose weights have the same names and shapes whatever their values: a checkpoint
# trained with other values loads without an error, and computes another function
SHAPELESS_FLAGS = ("n_heads", "gelu_activation", "sinusoidal_embeddings", "share_inout_emb")


def warn_of_other_flags(params, saved, path, logger):
    """Warn where this run's flags (`params`) build another model than the one `path` was trained as
    (`saved`: its params), with weights that load nonetheless: the flags above, and language ids that
    name other languages (each language would take the embedding of the one with its id there)."""
    other = differing_flags(params, saved, SHAPELESS_FLAGS)
    if other:
        logger.warning("%s was trained with other flags (%s): its weights load, but compute something else",
                       path, "; ".join(other))
    lang2id = saved.get("lang2id")
    if isinstance(lang2id, dict) and params.use_lang_emb and params.n_langs > 1:
        moved = [f"{lang} {i} here, {lang2id.get(lang, 'absent')} there"
                 for lang, i in sorted(params.lang2id.items()) if lang2id.get(lang) != i]
        if moved:
            logger.warning("%s has other language ids (%s): each language takes the embedding of the language "
                           "that had its id there", path, ", ".join(moved))


def differing_flags(params, saved, names):
    """`--flag value there, value here` for each flag of names whose value in this run's params differs from
    the saved run's (`saved`: its params)."""
    return [f"--{k} {saved[k]} there, {getattr(params, k)} here" for k in names
            if k in saved and saved[k] != getattr(params, k)]


def check_kind(data, models, path):
    """Refuse a checkpoint of another kind than the run's models: a fine-tuning one, or the other of
    encoder-only and encoder-decoder, whose weights --reload_model can take where they fit."""
    if "classifier" in data:
        raise DataError(f"{path}: a glue-xnli.py checkpoint (task {data.get('task', '?')}), not train.py's: rerun "
                        "glue-xnli.py to resume it, or start from its encoder with --reload_model")
    missing = [name for name in models if name not in data]
    if not missing:
        return
    if "model" in data:
        raise DataError(f"{path}: an encoder-only checkpoint ('model' weights), where this run (--encoder_only "
                        f"false) resumes 'encoder' and 'decoder': start from it with --reload_model {path},{path}")
    if "encoder" in data:
        raise DataError(f"{path}: a translation checkpoint ('encoder' and 'decoder' weights), where this run "
                        "(--encoder_only true) resumes 'model'")
    raise DataError(f"{path}: no '{missing[0]}' weights to resume from")


def load_training_checkpoint(path, models, optimizers, logger, dico, params=None):
    """Restore weights and optimizer states; returns the file's train_state. A file written by the
    original code keeps no such state: then the weights, the counters and the optimizer states return
    (its update counts, so that the learning-rate schedule goes on, and its moments, which the original
    itself does not restore). The file's vocabulary must be the data's `dico`; flags of `params` that
    build another model than the file's are warned of."""
    data = read_checkpoint(path)
    check_kind(data, models, path)
    check_vocabulary(data, dico, path)
    if params is not None and isinstance(data.get("params"), dict):
        saved = data["params"]
        warn_of_other_flags(params, saved, path, logger)
        changed = differing_flags(params, saved, BATCHING_FLAGS)
        if changed:
            logger.warning("%s: resumed with other flags than the run's (%s): it goes on with this command's",
                           path, "; ".join(changed))
    for name, model in models.items():
        load_weights(model, data[name], f"{path} ({name})")
    load_optimizer_states(optimizers, data, path, logger, untrained_positions(models))
    state = data.get("train_state")
    if state is None:
        require_keys(data, ["epoch", "n_total_iter", "best_metrics", "best_stopping_criterion"], path)
        state = {"epoch": data["epoch"] + 1, "n_total_iter": data["n_total_iter"],
                 "best_metrics": data["best_metrics"], "best_stopping_criterion": data["best_stopping_criterion"]}
    return state
