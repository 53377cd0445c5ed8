"""Checkpoints in the original XLM's layout, loaded without trusting the file.

A checkpoint is a dict: `model` (a pretrained model) or `encoder` + `decoder` (a translation model)
state dicts with the original's parameter names, `params` (the run's options), and the vocabulary as
`dico_id2word` / `dico_word2id` / `dico_counts`; training checkpoints add optimizer states and counters.
Files are read with `torch.load(weights_only=True)` and an allow-list of the plain numpy types the
original's `params` contain: anything else is refused, and nothing in the file runs. Files are written
with plain Python types and tensors only, so that `torch.load(weights_only=True)` reads them with no
allow-list.
"""
import os
import pickle
import re
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from ..data.binarized import MAGIC as BINARIZED_MAGIC
from ..data.dictionary import MASK_INDEX, Dictionary
from ..fileio import DataError, atomic_write, check_file
from .memory import MemoryConfig, parse_mem_positions, rename_query_keys_of_before
from .transformer import N_MAX_POSITIONS, TransformerConfig, TransformerModel

try:
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct, scalar

# numpy arrays and scalars (e.g. params['mask_scores']), under both numpy 1 and numpy 2 module names
_NUMPY_GLOBALS = [np.ndarray, np.dtype] + [type(np.dtype(t)) for t in "?bBhHiIlLqQefdgFDG"]
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _NUMPY_GLOBALS += [(_reconstruct, f"{_module}._reconstruct"), (scalar, f"{_module}.scalar")]


# the lines of torch.load's errors that give advice, not the reason (their place varies between versions)
_ADVICE = ("Weights only load failed", "Check the documentation")


def _gist(error):
    """The gist of a torch.load error, no colour codes: what follows "WeightsUnpickler error:" (the
    unpickler's reason, after paragraphs of advice whose wording changes between torch versions), or
    else its first line that is not advice; up to the end of its first sentence."""
    text = str(error).replace("\x1b[1m", "").replace("\x1b[0m", "")
    reason = re.search(r"WeightsUnpickler error:\s*(\S.*)", text)
    if reason:
        return reason.group(1).split(". ")[0].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = next((line for line in lines if not line.startswith(_ADVICE)), lines[0] if lines else type(error).__name__)
    return line.split(". ")[0]


def read_checkpoint(path):
    """The dict of a .pth file, loaded safely on CPU; a clear DataError for anything unexpected."""
    check_file(path)
    with open(path, "rb") as f:
        if f.read(len(BINARIZED_MAGIC)) == BINARIZED_MAGIC:
            raise DataError(f"{path}: a binarized corpus (preprocess.py output), not a model checkpoint")
    try:
        with torch.serialization.safe_globals(_NUMPY_GLOBALS), warnings.catch_warnings():
            # torch's note on a plain pickle file, which the error below explains
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = _gist(e)
        if "xlm.data.dictionary.Dictionary" in reason:
            raise DataError(f"{path}: a binarized corpus (the original's preprocess.py output), not a model "
                            "checkpoint") from None
        if "GLOBAL " in reason:  # a class or function outside the allow-list
            raise DataError(f"{path}: refusing to load, the file holds objects outside the allow-list of plain "
                            f"types ({reason})") from None
        raise DataError(f"{path}: not a PyTorch checkpoint ({reason})") from None
    except Exception as e:  # torch.load reports a file that is not a checkpoint by any of many exceptions
        if isinstance(e, EOFError) or "unexpected EOF" in str(e) or _truncated_zip(path):
            raise DataError(f"{path}: a truncated checkpoint (its end is missing: a copy or a save that did "
                            "not finish?)") from None
        raise DataError(f"{path}: not a PyTorch checkpoint ({type(e).__name__}: {_gist(e)})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a dict, found {type(data).__name__}")
    return data


def _truncated_zip(path):
    """Whether the file starts as a zip archive (torch.save's format) but lacks the directory at its end."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04" and not zipfile.is_zipfile(path)


def require_keys(data, keys, path):
    missing = [k for k in keys if k not in data]
    if missing:
        raise DataError(f"{path}: not a checkpoint of XLM's layout (no {', '.join(missing)})")


def strip_module_prefix(state_dict, name="model"):
    """Remove the `module.` that DistributedDataParallel puts before every key (if all have it); `name` says
    whose weights a file holds in place of a state dict."""
    if not isinstance(state_dict, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                   for k, v in state_dict.items()):
        raise DataError(f"the {name} weights are not a state dict (names to tensors)")
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def dico_from_checkpoint(data, path=""):
    require_keys(data, ["dico_id2word", "dico_word2id", "dico_counts"], path)
    try:
        return Dictionary({int(i): w for i, w in data["dico_id2word"].items()}, dict(data["dico_word2id"]),
                          dict(data["dico_counts"]))
    except (AttributeError, TypeError, ValueError, KeyError) as e:
        raise DataError(f"{path}: malformed vocabulary in the checkpoint ({type(e).__name__}: {e})") from None


def check_vocabulary(data, dico, path):
    """Refuse a checkpoint whose words are not `dico`'s at the same ids: its embedding rows would be read
    as other words, with no error from the shapes when the sizes agree."""
    check_same_vocabulary(dico_from_checkpoint(data, path), dico, path)


def check_same_vocabulary(saved, dico, path):
    """`check_vocabulary` of a checkpoint's vocabulary already read (`saved`, a Dictionary)."""
    diff = saved.first_difference(dico)
    if diff is None:
        return
    i, in_checkpoint, in_data = diff
    if in_checkpoint is not None and in_data is not None:
        detail = f"id {i} is {in_checkpoint!r} in the checkpoint but {in_data!r} in the data"
    else:
        detail = (f"{len(saved)} words in the checkpoint, {len(dico)} in the data (id {i} is "
                  f"{in_checkpoint if in_data is None else in_data!r} only in the "
                  f"{'checkpoint' if in_data is None else 'data'})")
    raise DataError(f"{path}: the checkpoint's vocabulary is not the data's: {detail}; binarize the data with the "
                    "checkpoint's vocabulary (and its --max_vocab / --min_count)")


def _int_list(value):
    return [int(v) for v in value.split(",") if v] if isinstance(value, str) else [int(v) for v in value]


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_flag(value):
    return isinstance(value, (bool, np.bool_)) or _is_int(value) and value in (0, 1)


def check_config(config):
    """Each number of a config of the type and range a model needs, found before any layer is built: the
    params of a damaged or hand-edited checkpoint would otherwise fail inside the model, or later."""
    def refuse(name, expected):
        raise DataError(f"params {name}={getattr(config, name)!r}, expected {expected}")
    for name in ("n_words", "emb_dim", "n_heads", "n_langs", "n_positions"):
        if not _is_int(getattr(config, name)) or getattr(config, name) < 1:
            refuse(name, "an integer >= 1")
    if not _is_int(config.n_layers) or config.n_layers < 0:
        refuse("n_layers", "an integer >= 0")
    for name in ("pad_index", "eos_index"):
        if not _is_int(getattr(config, name)) or not 0 <= getattr(config, name) < config.n_words:
            refuse(name, f"a word id below {config.n_words}")
    for name in ("dropout", "attention_dropout", "layer_norm_eps", "asm_div_value"):
        value = getattr(config, name)
        if not (_is_int(value) or isinstance(value, (float, np.floating))) or not 0 <= value < 1e9:
            refuse(name, "a number >= 0")
    if not config.dropout < 1 or not config.attention_dropout < 1:
        refuse("dropout" if config.dropout >= 1 else "attention_dropout", "a probability below 1")
    for name in ("gelu_activation", "share_inout_emb", "sinusoidal_embeddings", "use_lang_emb", "asm"):
        if not _is_flag(getattr(config, name)):
            refuse(name, "true or false")


def check_sizes(config, state_dict, name="model"):
    """Refuse params that say more than the weights hold, before the model is built: a damaged n_layers or
    emb_dim would otherwise allocate (or loop) for as long as it says. Smaller sizes are left to
    `load_weights`, which names every key that does not fit."""
    sizes = {"emb_dim": ("embeddings.weight", 1), "n_positions": ("position_embeddings.weight", 0)}
    if config.has_lang_emb:
        sizes["n_langs"] = ("lang_embeddings.weight", 0)
    for option, (key, dim) in sizes.items():
        if key in state_dict and getattr(config, option) > state_dict[key].shape[dim]:
            raise DataError(f"params {option}={getattr(config, option)}, but the {name} weights' {key} is "
                            f"{tuple(state_dict[key].shape)}")
    layers = {m.group(1) for m in map(re.compile(r"attentions\.(\d+)\.").match, state_dict) if m}
    if config.n_layers > len(layers):
        raise DataError(f"params n_layers={config.n_layers}, but the {name} weights have {len(layers)} layers")


def config_from_params(params, n_words, is_decoder=False):
    """A TransformerConfig from the original's params dict (older files lack the later keys; the original's
    own lack `n_positions` and `layer_norm_eps`, which only models converted from Hugging Face set)."""
    required = ["emb_dim", "n_layers", "n_heads"]
    missing = [k for k in required if k not in params]
    if missing:
        raise DataError(f"checkpoint params lack {', '.join(missing)}")
    use_memory = params.get("use_memory", False)
    if not _is_flag(use_memory):
        raise DataError(f"params use_memory={use_memory!r}, expected true or false")
    config = TransformerConfig(
        n_words=n_words, emb_dim=params["emb_dim"], n_layers=params["n_layers"], n_heads=params["n_heads"],
        dropout=params.get("dropout", 0.0), attention_dropout=params.get("attention_dropout", 0.0),
        gelu_activation=params.get("gelu_activation", False), share_inout_emb=params.get("share_inout_emb", True),
        sinusoidal_embeddings=params.get("sinusoidal_embeddings", False),
        use_lang_emb=params.get("use_lang_emb", True), n_langs=params.get("n_langs", 1), is_decoder=is_decoder,
        asm=params.get("asm", False), asm_cutoffs=tuple(_int_list(params.get("asm_cutoffs", "8000,20000"))),
        asm_div_value=params.get("asm_div_value", 4.0),
        memory=MemoryConfig.from_params(params) if use_memory else None,
        mem_positions=parse_mem_positions(params.get("mem_dec_positions" if is_decoder else "mem_enc_positions", ""),
                                          params["n_layers"]) if use_memory else [],
        pad_index=params.get("pad_index", 2), eos_index=params.get("eos_index", 1),
        n_positions=params.get("n_positions", N_MAX_POSITIONS), layer_norm_eps=params.get("layer_norm_eps", 1e-12))
    check_config(config)
    return config


def _hint(key, saved, wanted):
    """What differs between the checkpoint's shape and the model's: a table's rows are its vocabulary,
    languages or positions, any other size the model's dimensions."""
    if len(saved) == len(wanted) == 2 and saved[1] == wanted[1] and key.startswith(
            ("embeddings.", "pred_layer.", "lang_embeddings.", "position_embeddings.")):
        return {"embeddings": " (vocabulary size)", "pred_layer": " (vocabulary size)",
                "lang_embeddings": " (number of languages)", "position_embeddings": " (position table)"}[
                    key.split(".")[0]]
    if key.startswith("pred_layer.") and len(saved) == len(wanted) == 1:
        return " (vocabulary size)"
    return " (model dimensions)"


def load_weights(model, state_dict, name="model"):
    """Load a state dict strictly; one error listing every missing, unexpected or misshapen key."""
    state_dict = strip_module_prefix(state_dict, name)
    rename_query_keys_of_before(model, state_dict)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
              f"{_hint(k, tuple(state_dict[k].shape), tuple(v.shape))}"
              for k, v in expected.items() if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
    if shapes:
        problems.append("shape mismatch: " + "; ".join(shapes[:8]))
    if problems:
        raise DataError(f"the {name} weights do not fit the model: " + " | ".join(problems))
    model.load_state_dict(state_dict)


@dataclass
class LoadedModel:
    encoder: TransformerModel
    decoder: TransformerModel  # None for a pretrained (single) model
    dico: Dictionary
    params: dict
    # a glue-xnli.py checkpoint's head (sentence vector -> Dropout -> Linear): the Linear's "1.weight"
    # (n_outputs, dim) and "1.bias", and its task; None elsewhere
    classifier: dict = None
    task: str = None


def load_model(path):
    """Load a checkpoint of the original's layout (pretrained or translation) on CPU, in eval mode.

    Returns `.encoder`, `.decoder` (None for a pretrained model), `.dico` and `.params`, and for a
    fine-tuned model of glue-xnli.py `.classifier` and `.task`. Move the models to a device with
    `.to(device)`.
    """
    data = read_checkpoint(path)
    params = {} if data.get("params") is None else data["params"]
    if not isinstance(params, dict):
        raise DataError(f"{path}: 'params' is a {type(params).__name__}, not a dict")
    params = dict(params)
    dico = dico_from_checkpoint(data, path)
    n_words = len(dico)
    if not _is_int(params.get("n_words", n_words)) or params.get("n_words", n_words) != n_words:
        raise DataError(f"{path}: params say n_words={params['n_words']} but the vocabulary has {n_words} words")
    if "model" in data:
        parts = [("model", False)]
    elif "encoder" in data and "decoder" in data:
        parts = [("encoder", False), ("decoder", True)]
    else:
        raise DataError(f"{path}: no 'model' nor 'encoder'/'decoder' weights")
    models = []
    for key, is_decoder in parts:
        try:
            config = config_from_params(params, n_words, is_decoder)
            check_sizes(config, strip_module_prefix(data[key], key), key)
            model = TransformerModel(config)
        except (TypeError, ValueError, ZeroDivisionError) as e:  # DataError included
            raise DataError(f"{path}: its params do not describe a model ({e})") from None
        try:
            load_weights(model, data[key], key)
        except DataError as e:
            raise DataError(f"{path}: {e}") from None
        models.append(model.eval())
    classifier = data.get("classifier")
    if classifier is not None and not (isinstance(classifier, dict) and {"1.weight", "1.bias"} <= set(classifier)):
        raise DataError(f"{path}: 'classifier' is not the weights of glue-xnli.py's classifier")
    return LoadedModel(models[0], models[1] if len(models) > 1 else None, dico, params, classifier,
                       data.get("task") if classifier is not None else None)


def checkpoint_payload(dico, params, model=None, encoder=None, decoder=None, **extra):
    """The dict the original writes (and reads): weights, params and the vocabulary. params gets the
    vocabulary's size and special indices, which the original's training derives into its params and
    its translate.py reads back from them, and the model flags in the forms its loaders build the model
    from (`parsed_model_flags`)."""
    params = {**parsed_model_flags(params), "n_words": len(dico), "bos_index": dico.bos_index,
              "eos_index": dico.eos_index, "pad_index": dico.pad_index, "unk_index": dico.unk_index,
              "mask_index": MASK_INDEX}
    payload = {}
    if model is not None:
        payload["model"] = model.state_dict()
    else:
        payload["encoder"], payload["decoder"] = encoder.state_dict(), decoder.state_dict()
    payload.update(dico_id2word=dict(dico.id2word), dico_word2id=dict(dico.word2id),
                   dico_counts=dict(dico.counts), params=params, **extra)
    return payload


def parsed_model_flags(params):
    """params with the model flags that the original parses at start-up as it keeps them, since its
    translate.py and glue-xnli.py build a checkpoint's model from them: --asm_cutoffs and
    --mem_query_layer_sizes as lists of ints, the memory positions as (layer, 'in' | 'after') pairs, and
    the memory sizes it derives (n_indices, mem_size, mem_product_quantization). Values already parsed (a
    checkpoint of the original's params) stay as they are."""
    params = dict(params)
    if params.get("asm") and isinstance(params.get("asm_cutoffs"), str):
        params["asm_cutoffs"] = _int_list(params["asm_cutoffs"])
    if params.get("use_memory"):
        for key in ("mem_enc_positions", "mem_dec_positions"):
            if isinstance(params.get(key), str):
                params[key] = parse_mem_positions(params[key], params["n_layers"], key)
        sizes = params.get("mem_query_layer_sizes")
        if isinstance(sizes, str) and sizes:
            params["mem_query_layer_sizes"] = _int_list(sizes)
        config = MemoryConfig.from_params(params)
        params.setdefault("n_indices", config.n_indices)
        params.setdefault("mem_size", config.size)
        params.setdefault("mem_product_quantization", config.product_keys)
    return params


def plain(value, where="checkpoint"):
    """`value` in the types any torch.load(weights_only=True) reads without an allow-list: numpy scalars as
    Python numbers, numpy arrays (e.g. numpy's random state) as lists, dict subclasses as dicts. Containers
    are copied, never changed in place (params is a live namespace's __dict__)."""
    if value is None or type(value) in (str, int, float, bool) or isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        out = OrderedDict() if isinstance(value, OrderedDict) else {}
        for k, v in value.items():
            out[plain(k, where)] = plain(v, f"{where}[{k!r}]")
        if hasattr(value, "_metadata"):  # a module state dict's versions, read back by load_state_dict
            out._metadata = plain(value._metadata, where)
        return out
    if type(value) in (list, tuple):
        return type(value)(plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    raise TypeError(f"{where}: a {type(value).__name__} has no place in a checkpoint that plain "
                    "torch.load(weights_only=True) must read")


def save_checkpoint(payload, path):
    """torch.save atomically (a crash while writing leaves the previous file intact), plain types only. A
    write that fails (a full disk) is a DataError naming the file; the previous file stays."""
    payload = plain(payload)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path) as f:
        torch.save(payload, f)
