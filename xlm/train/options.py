"""train.py's command line: the original XLM's flags, names, defaults and string syntaxes.

`parse_params(argv)` returns an argparse Namespace after every check, with the derived fields the rest
of the code uses (langs, lang2id, step lists, ...). A flag combination that cannot work is a
`DataError` naming the flag, raised before any work starts.
"""
import argparse
import getpass
import math
import os
import random
import re
import string
import sys

import torch

from ..cli import OriginalFlagsFirst
from ..fileio import DataError
from ..data.dictionary import N_RESERVED
from ..model.linear import onednn_chosen
from ..model.memory import MemoryConfig, parse_mem_positions
from ..model.transformer import N_MAX_POSITIONS
from .schedules import SPARSE_OPTIMIZERS, LambdaSchedule, build_optimizer, finite_number, parse_optimizer


def bool_flag(s):
    if s.lower() in ("on", "true", "1"):
        return True
    if s.lower() in ("off", "false", "0"):
        return False
    raise argparse.ArgumentTypeError("expected a boolean: true/false, on/off, 1/0")


def norm_bound(s):
    """--clip_grad_norm's value: a finite float, or inf (no clipping: the original runs it so)."""
    return math.inf if s.strip().lower() in ("inf", "+inf", "infinity") else finite_float(s)


def finite_float(s):
    """A float flag's value; nan and inf are refused (a nan --length_penalty or --dropout runs on, silently
    wrong)."""
    value = finite_number(s)
    if value is None:
        raise argparse.ArgumentTypeError(f"expected a finite number, got {s!r}")
    return value


def length_penalty(s):
    """--length_penalty: a finite number within +-50, where n ** penalty stays a double for any hypothesis
    length (the original stops with an OverflowError past it: 512 ** 114)."""
    value = finite_float(s)
    if abs(value) > 50:
        raise argparse.ArgumentTypeError(f"expected a number from -50 to 50, got {s!r}")
    return value


def add_memory_flags(parser):
    for name, f in MemoryConfig.__dataclass_fields__.items():
        kind = {bool: bool_flag, float: finite_float}.get(f.type, f.type)
        parser.add_argument(f"--mem_{name}", type=kind, default=f.default,
                            help=MemoryConfig.HELP[name])
    parser.add_argument("--mem_values_optimizer", type=str, default="adam,lr=0.001",
                        help="optimizer of the memory values (--optimizer's syntax)")
    for name, default in MemoryConfig.UNSUPPORTED.items():
        parser.add_argument(f"--mem_{name}", type=bool_flag if isinstance(default, bool) else str, default=default,
                            help="the original's experimental variant: not supported")
    where = "comma list of layers: K replaces layer K's feed-forward by a memory, K+ adds one after layer K"
    parser.add_argument("--mem_enc_positions", type=str, default="", help="encoder memories: " + where)
    parser.add_argument("--mem_dec_positions", type=str, default="", help="decoder memories: " + where)


# train.py's flags that the original lacks: an abbreviation still means the original's flag it starts
OWN_FLAGS = ("--seed", "--checkpoint_every", "--log_interval", "--bf16", "--compile", "--tokens_per_batch_padded",
             "--local-rank")


def build_parser():
    p = OriginalFlagsFirst(description="XLM pretraining and translation training",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter, own_flags=OWN_FLAGS)
    a = p.add_argument
    # experiment
    a("--dump_path", type=str, default="./dumped/", help="experiments go to DUMP_PATH/EXP_NAME/EXP_ID/")
    a("--exp_name", type=str, default="", help="experiment name (required)")
    a("--save_periodic", type=int, default=0, help="also save periodic-EPOCH.pth every N epochs (0: never)")
    a("--exp_id", type=str, default="", help="run id (empty: $SLURM_JOB_ID, or a random one); a rerun with the "
      "same id resumes from its checkpoint.pth")
    a("--seed", type=int, default=0, help="random seed (xlm)")
    a("--checkpoint_every", type=int, default=0,
      help="also save checkpoint.pth every N iterations, not only at the end of each epoch (xlm; 0 = off)")
    a("--log_interval", type=int, default=5, help="iterations between progress lines (xlm)")
    # precision
    a("--fp16", type=bool_flag, default=False, help="float16 autocast with loss scaling (torch.amp)")
    a("--amp", type=int, default=-1, help="apex opt level of old command lines, accepted: 1-3 need --fp16 true, "
      "0 means float32, -1 off")
    a("--bf16", type=bool_flag, default=False, help="bfloat16 autocast (xlm)")
    a("--compile", type=bool_flag, default=False,
      help="torch.compile the training forward; padded batches are padded to a multiple of 8 tokens (xlm)")
    # model
    a("--encoder_only", type=bool_flag, default=True, help="one model (CLM, MLM, TLM, PC); false: an encoder and "
      "a decoder (AE, MT, BT)")
    a("--emb_dim", type=int, default=512, help="model dimension (the feed-forward layers are 4x wider)")
    a("--n_layers", type=int, default=4, help="layers of the model (of the encoder and of the decoder each)")
    a("--n_heads", type=int, default=8, help="attention heads (must divide --emb_dim)")
    a("--dropout", type=finite_float, default=0, help="dropout")
    a("--attention_dropout", type=finite_float, default=0, help="dropout on the attention weights")
    a("--gelu_activation", type=bool_flag, default=False, help="GELU in the feed-forward layers (false: ReLU)")
    a("--share_inout_emb", type=bool_flag, default=True, help="the output layer's weight is the word embeddings")
    a("--sinusoidal_embeddings", type=bool_flag, default=False, help="fixed sinusoidal position embeddings")
    a("--use_lang_emb", type=bool_flag, default=True, help="add language embeddings")
    a("--use_memory", type=bool_flag, default=False, help="product-key memory layers (adds the --mem_* flags)")
    a("--asm", type=bool_flag, default=False, help="adaptive softmax output (adds --asm_cutoffs, --asm_div_value)")
    a("--context_size", type=int, default=0, help="CLM: the first N positions of a stream row are not predicted")
    a("--word_pred", type=finite_float, default=0.15, help="MLM: share of the tokens predicted")
    a("--sample_alpha", type=finite_float, default=0, help="MLM: pick the predicted tokens with probability "
      "count^-ALPHA (0: uniformly)")
    a("--word_mask_keep_rand", type=str, default="0.8,0.1,0.1", help="MLM: probabilities that a predicted token "
      "is masked, kept, or replaced by a random word")
    a("--word_shuffle", type=finite_float, default=0,
      help="AE noise: shuffle words by at most K positions (0: off, or > 1)")
    a("--word_dropout", type=finite_float, default=0, help="AE noise: probability to drop a word")
    a("--word_blank", type=finite_float, default=0, help="AE noise: probability to mask a word")
    # data
    a("--data_path", type=str, default="", help="folder of the binarized files (train.en.pth, valid.en-fr.fr.pth, "
      "...)")
    a("--lgs", type=str, default="", help="languages, joined by '-' (en-fr-de); their ids are in sorted order")
    a("--max_vocab", type=int, default=-1, help="keep the N first words of the vocabulary (-1: all)")
    a("--min_count", type=int, default=0, help="drop the words seen fewer than N times")
    a("--lg_sampling_factor", type=finite_float, default=-1, help="CLM/MLM/PC steps: draw each round's steps with "
      "probability ~ (training sentences)^FACTOR (-1: every step once a round)")
    a("--bptt", type=int, default=256, help="tokens per row of a text stream (CLM, MLM)")
    a("--max_len", type=int, default=100, help="longest training sentence kept, in tokens (0: no limit)")
    a("--group_by_size", type=bool_flag, default=True, help="batch sentences of similar lengths together")
    a("--batch_size", type=int, default=32, help="sentences (or stream rows) per batch and process")
    a("--max_batch_size", type=int, default=0, help="with --tokens_per_batch: at most N sentences a batch (0: no "
      "limit)")
    a("--tokens_per_batch", type=int, default=-1, help="batches of about N tokens per process instead of "
      "--batch_size sentences (-1: off)")
    a("--tokens_per_batch_padded", type=bool_flag, default=False,
      help="count padding in --tokens_per_batch (sentences x longest <= budget): smaller batches, bounded memory (xlm)")
    a("--split_data", type=bool_flag, default=False, help="accepted; the processes always read data of their own")
    # training
    a("--optimizer", type=str, default="adam,lr=0.0001", help="NAME[,key=value...]: adam, adam_inverse_sqrt, "
      "adam_cosine, sgd, adagrad, rmsprop, ...")
    a("--clip_grad_norm", type=norm_bound, default=5, help="clip the gradients' norm to this (0: off)")
    a("--epoch_size", type=int, default=100000, help="training sentences between evaluations")
    a("--max_epoch", type=int, default=100000, help="epochs to train")
    a("--stopping_criterion", type=str, default="", help="METRIC,N: stop after N epochs without a better METRIC "
      "(_METRIC: smaller is better)")
    a("--validation_metrics", type=str, default="", help="comma list of metrics to save best-METRIC.pth on "
      "(_METRIC: smaller is better)")
    a("--accumulate_gradients", type=int, default=1, help="objective steps per update")
    for obj in ("mlm", "clm", "pc", "ae", "mt", "bt"):
        a(f"--lambda_{obj}", type=str, default="1", help=f"weight of the {obj.upper()} losses: a number, or a "
          "schedule ITER:VALUE,ITER:VALUE,... (linear between points)")
    steps = {"clm": "CLM steps: languages (en) or pairs (en-fr)", "mlm": "MLM steps: languages (en), TLM pairs (en-fr)",
             "mt": "supervised MT steps: src-tgt pairs", "ae": "denoising auto-encoder steps: languages",
             "bt": "back-translation steps: lang1-lang2-lang1 triples", "pc": "parallel classification steps: pairs"}
    for obj in ("clm", "mlm", "mt", "ae", "bt", "pc"):
        a(f"--{obj}_steps", type=str, default="", help=steps[obj] + ", comma-separated")
    a("--reload_emb", type=str, default="", help="word embeddings to start from (fastText .bin, or .vec text)")
    a("--reload_model", type=str, default="", help="weights to start from: a model, or ENCODER,DECODER (either may "
      "be empty)")
    a("--reload_checkpoint", type=str, default="", help="a checkpoint to resume training from")
    a("--beam_size", type=int, default=1, help="BLEU evaluation: beam size (1: greedy)")
    a("--length_penalty", type=length_penalty, default=1,
      help="beam search: length penalty (< 1 favours short outputs)")
    a("--early_stopping", type=bool_flag, default=False, help="beam search: stop a sentence at --beam_size "
      "finished hypotheses")
    a("--eval_bleu", type=bool_flag, default=False, help="evaluate BLEU of the MT and BT directions")
    a("--eval_only", type=bool_flag, default=False, help="evaluate, then exit")
    a("--debug_train", type=bool_flag, default=False, help="train on the valid files (loads fast)")
    a("--debug_slurm", type=bool_flag, default=False,
      help="inside a SLURM job, ignore its tasks: one process, or torchrun's")
    a("--debug", action="store_true",
      help="--exp_name debug, a random --exp_id (one given is kept, where the original replaced it), --debug_train "
           "and --debug_slurm")
    a("--local_rank", "--local-rank", type=int, default=-1,  # the latter from torch.distributed.launch
      help="set by torch.distributed.launch (torchrun sets LOCAL_RANK instead)")
    a("--master_port", type=int, default=-1,
      help="srun jobs of several tasks: rank 0's port, in 10001..20000 (required there)")
    return p


def parse_params(argv=None):
    parser = build_parser()
    # like the original, the memory and adaptive-softmax options exist only when switched on; unlike it,
    # `--use_memory true --help` lists them (the first parse would print the help before they exist)
    argv = list(sys.argv[1:] if argv is None else argv)
    known, _ = parser.parse_known_args([a for a in argv if a not in ("-h", "--help")])
    if known.use_memory:
        add_memory_flags(parser)
    if known.asm:
        parser.add_argument("--asm_cutoffs", type=str, default="8000,20000",
                            help="adaptive softmax: word ids where its clusters start")
        parser.add_argument("--asm_div_value", type=finite_float, default=4,
                            help="adaptive softmax: each cluster's dimension is the one before's / this")
    params = parser.parse_args(argv)
    params.command = " ".join(["python", "train.py"] + argv)
    check_params(params)
    return params


# what each kind of step list holds, for its error
STEP_FORMS = {"mono_or_pair": "a language or a pair, e.g. en or en-fr", "pair": "a pair, e.g. en-fr",
              "mono": "a language, e.g. en", "triple": "three languages, the first and last the same, e.g. en-fr-en"}


def parse_steps(value, flag, langs, kind):
    """'en,fr,en-fr' -> [('en', None), ('fr', None), ('en', 'fr')] with the original's rules."""
    steps = []
    for item in filter(None, value.split(",")):
        parts = item.split("-")
        if kind == "mono_or_pair" and len(parts) not in (1, 2) or kind == "pair" and len(parts) != 2 \
                or kind == "mono" and len(parts) != 1 or kind == "triple" and len(parts) != 3:
            raise DataError(f"--{flag}: cannot parse '{item}' (expected {STEP_FORMS[kind]})")
        for lg in parts:
            if lg not in langs:
                raise DataError(f"--{flag}: language '{lg}' is not in --lgs")
        if kind == "pair" and parts[0] == parts[1]:
            raise DataError(f"--{flag}: '{item}' pairs a language with itself")
        if kind == "triple" and (parts[0] != parts[2] or parts[0] == parts[1]):
            raise DataError(f"--{flag}: '{item}' must be l1-l2-l1 with l1 != l2")
        step = tuple(parts) if kind in ("pair", "triple") else (parts[0], parts[1] if len(parts) == 2 else None)
        if kind == "mono":
            step = parts[0]
        if step in steps:
            raise DataError(f"--{flag}: '{item}' appears twice")
        steps.append(step)
    return steps


def parse_float_list(value, flag, n):
    numbers = [finite_number(s) for s in value.split(",")]
    if len(numbers) != n or None in numbers:
        raise DataError(f"--{flag}: expected {n} comma-separated numbers, got '{value}'")
    return numbers


def set_experiment_names(params):
    """The run folder dump_path/exp_name/exp_id, with the original's defaults."""
    if not params.exp_name.strip():
        raise DataError("--exp_name is required: runs are stored in dump_path/exp_name/exp_id")
    # a random id (no --exp_id, no job id) is named in the line that says how to resume
    params.exp_id_drawn = not (params.exp_id or os.environ.get("CHRONOS_JOB_ID") or os.environ.get("SLURM_JOB_ID"))
    if not params.exp_id:
        params.exp_id = os.environ.get("CHRONOS_JOB_ID") or os.environ.get("SLURM_JOB_ID") or \
            "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(10))
    for flag in ("exp_name", "exp_id"):
        check_folder_name(getattr(params, flag), flag)
    if not params.dump_path:
        params.dump_path = os.path.join("/checkpoint", user_name(), "dumped")


def user_name():
    """The original's getpass.getuser(), which reads $LOGNAME, $USER, ... and then the password database."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container's uid without a name
        return "user"


def check_folder_name(value, flag):
    """A folder below --dump_path: a name, or several (`xnli/run1`, which the original's `mkdir -p` makes
    too); an absolute path or '..' would put the run elsewhere."""
    parts = value.replace(os.altsep or os.sep, os.sep).split(os.sep)
    if os.path.isabs(value) or ".." in parts or not value.strip("./" + (os.altsep or "")):
        raise DataError(f"--{flag} '{value}' must be a folder below --dump_path (a name, or names joined by '/'; "
                        "not absolute, no '..')")


def check_optimizer(spec, flag, memory_values=False):
    """Build the optimizer of --`flag` on a dummy parameter, so that a value torch refuses (lr=-1,
    beta1=1.5) is refused now rather than when the model exists. sparseadam (which the original lacks) is
    for the memory values' sparse gradients alone."""
    if parse_optimizer(spec, flag)[0] == "sparseadam" and not memory_values:
        raise DataError(f"--{flag} sparseadam takes only sparse gradients: it is for the memory values "
                        "(--mem_values_optimizer with --mem_sparse true)")
    build_optimizer([torch.nn.Parameter(torch.zeros(1))], spec, flag)


def check_positions(params, n_positions, source=""):
    """Refuse a stream longer than the position table, which torch would report deep in an embedding
    lookup. A --max_len past the table is the original's too: the sentences are checked once read
    (`check_long_sentences`)."""
    lm_steps = list(params.clm_steps) + list(params.mlm_steps)
    if any(l2 is None for _, l2 in lm_steps) and params.bptt > n_positions:
        raise DataError(f"--bptt {params.bptt} is longer than the {n_positions} positions of the model{source}")


def check_languages_and_steps(params):
    """The languages (ids in alphabetical order, not the --lgs order, as the original), the steps of each
    objective, and the flags that go with them."""
    params.langs = ["en"] if params.lgs == "debug" else params.lgs.split("-") if params.lgs else []
    if not params.langs:
        raise DataError("--lgs is required, e.g. --lgs en-fr")
    if "" in params.langs:
        # the original would take '' as a language, with an id and an embedding of its own
        raise DataError(f"--lgs '{params.lgs}': an empty language name (languages are separated by one '-')")
    if any("," in lg for lg in params.langs):
        raise DataError(f"--lgs '{params.lgs}': languages are separated by '-' (--lgs en-fr), not ','")
    if len(set(params.langs)) != len(params.langs):
        raise DataError(f"--lgs: a language appears twice in '{params.lgs}'")
    params.id2lang = dict(enumerate(sorted(params.langs)))
    params.lang2id = {lg: i for i, lg in params.id2lang.items()}
    params.n_langs = len(params.langs)

    params.clm_steps = parse_steps(params.clm_steps, "clm_steps", params.langs, "mono_or_pair")
    params.mlm_steps = parse_steps(params.mlm_steps, "mlm_steps", params.langs, "mono_or_pair")
    params.pc_steps = parse_steps(params.pc_steps, "pc_steps", params.langs, "pair")
    params.mt_steps = parse_steps(params.mt_steps, "mt_steps", params.langs, "pair")
    params.ae_steps = parse_steps(params.ae_steps, "ae_steps", params.langs, "mono")
    params.bt_steps = parse_steps(params.bt_steps, "bt_steps", params.langs, "triple")
    translation = params.mt_steps or params.ae_steps or params.bt_steps
    if translation and params.encoder_only:
        raise DataError("--mt_steps, --ae_steps and --bt_steps train an encoder-decoder: add --encoder_only false")
    if not (params.clm_steps or params.mlm_steps or params.pc_steps or translation):
        raise DataError(f"nothing to {'evaluate' if params.eval_only else 'train'}: give --clm_steps, --mlm_steps, "
                        "--pc_steps, --mt_steps, --ae_steps or --bt_steps")
    if params.pc_steps and params.tokens_per_batch == -1 and params.batch_size < 2:
        raise DataError("--pc_steps needs --batch_size >= 2: a pair's negative examples are the other pairs of its "
                        "batch (a batch of one is skipped)")
    if params.eval_bleu and not (params.mt_steps or params.bt_steps):
        raise DataError("--eval_bleu needs --mt_steps or --bt_steps")
    if not (params.word_shuffle == 0 or params.word_shuffle > 1):
        raise DataError("--word_shuffle must be 0 or > 1 (the largest displacement of a word)")
    if not (0 <= params.word_dropout < 1 and 0 <= params.word_blank < 1):
        raise DataError("--word_dropout and --word_blank must be in [0, 1)")
    noise = next((f for f in ("word_shuffle", "word_dropout", "word_blank") if getattr(params, f)), None)
    if noise and not params.ae_steps:  # the original refuses it too: the noise would be silently unused
        raise DataError(f"--{noise} {getattr(params, noise):g} is the noise of --ae_steps' inputs, and this run has "
                        "no --ae_steps: drop it, or add them")
    if params.lg_sampling_factor != -1 and params.lg_sampling_factor <= 0:
        raise DataError("--lg_sampling_factor must be -1 (off) or > 0")
    if params.beam_size < 1:
        raise DataError("--beam_size must be >= 1")
    # an encoder's path is the whole value, commas included (a sweep's folder), as the original reads it
    params.reload_model_paths = ([] if not params.reload_model else [params.reload_model] if params.encoder_only
                                 else params.reload_model.split(","))
    if params.reload_model and len(params.reload_model_paths) != (1 if params.encoder_only else 2):
        raise DataError("--reload_model: 'encoder_path,decoder_path' with --encoder_only false (the same path "
                        "twice to start both from one model; either empty to leave that one fresh)")
    if params.reload_model and not any(params.reload_model_paths):
        raise DataError("--reload_model ',' names no checkpoint: give the encoder's, the decoder's or both "
                        "(the original refuses it too)")


def check_data_flags(params):
    """--data_path and the batching and vocabulary flags."""
    if not params.data_path or not os.path.isdir(params.data_path):
        raise DataError(f"--data_path '{params.data_path}' is not a directory")
    if params.bptt < 2 or params.batch_size < 1:
        raise DataError("--bptt must be >= 2 and --batch_size >= 1")
    check_sentence_batching(params)


def check_sentence_batching(params):
    """The sentence batches' and the vocabulary's flags, which glue-xnli.py shares."""
    if params.tokens_per_batch != -1 and params.tokens_per_batch < 1:
        raise DataError("--tokens_per_batch must be -1 (off) or positive")
    if params.max_len < 0:
        raise DataError("--max_len must be >= 0 (0: no limit on the training sentences' length)")
    params.max_batch_size = max(params.max_batch_size, 0)  # the original's test is `0 < max_batch_size`: off
    if params.max_vocab != -1 and params.max_vocab <= N_RESERVED:
        raise DataError(f"--max_vocab {params.max_vocab}: -1 (all words), or more than the {N_RESERVED} special "
                        "words that every vocabulary starts with")
    if params.min_count < 0:
        raise DataError("--min_count must be >= 0")


def check_masking_flags(params):
    """MLM's masking: --word_pred, --sample_alpha, --word_mask_keep_rand."""
    if not 0 <= params.word_pred < 1:
        raise DataError("--word_pred must be in [0, 1)")
    if not 0 <= params.sample_alpha < 1:
        raise DataError("--sample_alpha must be in [0, 1)")
    params.word_mask, params.word_keep, params.word_rand = parse_float_list(params.word_mask_keep_rand,
                                                                            "word_mask_keep_rand", 3)
    probs = [params.word_mask, params.word_keep, params.word_rand]
    if not all(0 <= p <= 1 for p in probs) or abs(sum(probs) - 1) > 1e-6:
        raise DataError("--word_mask_keep_rand: three probabilities in [0, 1] that sum to 1")


def check_precision_and_loop_flags(params):
    """Precision (--fp16 maps onto torch.amp float16; apex's --amp levels are accepted, not needed), gradient
    accumulation and clipping, and the loop's counts."""
    if params.amp == 0 and params.fp16:
        raise DataError("--amp 0 means float32: it cannot be combined with --fp16 true")
    if params.amp not in (-1, 0, 1, 2, 3):
        raise DataError("--amp must be -1 (off) or an apex opt level 0..3")
    if params.amp > 0 and not (params.fp16 or params.bf16):  # the original refuses it too
        raise DataError(f"--amp {params.amp} is an apex opt level of float16 training: add --fp16 true "
                        "(or drop --amp to train in float32)")
    if params.fp16 and params.bf16:
        raise DataError("--fp16 and --bf16 are exclusive")
    if params.accumulate_gradients < 1:
        raise DataError("--accumulate_gradients must be >= 1")
    # as in the original, a value <= 0 turns these off
    params.clip_grad_norm, params.save_periodic = max(params.clip_grad_norm, 0), max(params.save_periodic, 0)
    if params.epoch_size < 1:
        raise DataError("--epoch_size must be positive (-1, 'the parallel data size', is broken in the original)")
    for flag, least, note in (("log_interval", 1, ""), ("checkpoint_every", 0, " (0: off)"),
                              ("max_epoch", 0, " (0: set up and stop, as the original)")):
        if getattr(params, flag) < least:
            raise DataError(f"--{flag} must be >= {least}{note}")
    if not 0 <= params.seed < 2 ** 32:
        raise DataError("--seed must be in [0, 2**32)")


def check_model_flags(params):
    """The model's size and variants, and its positions against --max_len."""
    for flag in ("emb_dim", "n_heads"):
        if getattr(params, flag) < 1:
            raise DataError(f"--{flag} must be >= 1, got {getattr(params, flag)}")
    if params.n_layers < (0 if params.encoder_only else 1):
        raise DataError(f"--n_layers {params.n_layers}: must be >= 1 (>= 0 for an encoder only; a decoder needs "
                        "layers to read the source)")
    for flag in ("dropout", "attention_dropout"):
        if not 0 <= getattr(params, flag) < 1:
            raise DataError(f"--{flag} must be in [0, 1)")
    if params.context_size < 0:
        raise DataError("--context_size must be >= 0")
    if any(l2 is None for _, l2 in params.clm_steps) and params.context_size >= params.bptt - 1 \
            and not params.eval_only:
        # training's CLM predicts the tokens after the first context_size of each stream row of bptt (the
        # evaluation predicts every token)
        raise DataError(f"--context_size {params.context_size} leaves no token to predict in a --bptt "
                        f"{params.bptt} stream: it must be below {params.bptt - 1}")
    if params.emb_dim % params.n_heads:
        raise DataError(f"--emb_dim {params.emb_dim} must be a multiple of --n_heads {params.n_heads}")
    if params.asm and params.share_inout_emb:
        raise DataError("--asm true needs --share_inout_emb false: the adaptive softmax has its own weights")
    if params.asm:
        cutoffs = params.asm_cutoffs.split(",")
        if not all(c.isdecimal() and int(c) > 0 for c in cutoffs) or \
                any(int(b) <= int(a) for a, b in zip(cutoffs, cutoffs[1:])):
            raise DataError(f"--asm_cutoffs '{params.asm_cutoffs}': increasing positive integers, e.g. 8000,20000")
        if params.asm_div_value <= 1:
            raise DataError("--asm_div_value must be > 1: each cluster of words gets a smaller projection")
    params.n_positions = N_MAX_POSITIONS  # a reloaded model's own table replaces it once read (build_models)
    if not params.reload_model_paths or not any(params.reload_model_paths):
        check_positions(params, N_MAX_POSITIONS)  # a reloaded model may have another table: checked once read


def check_memory_flags(params):
    """Product-key memory layers (--use_memory true)."""
    if not params.use_memory:
        return
    MemoryConfig.from_params(vars(params))
    if params.mem_v_dim > 0 and params.mem_v_dim != params.emb_dim:
        raise DataError(f"--mem_v_dim {params.mem_v_dim}: a memory's output joins the hidden states of --emb_dim "
                        f"{params.emb_dim}; use -1 (the default) or {params.emb_dim}")
    encoder = parse_mem_positions(params.mem_enc_positions, params.n_layers, "mem_enc_positions")
    decoder = parse_mem_positions(params.mem_dec_positions, params.n_layers, "mem_dec_positions")
    if decoder and params.encoder_only:
        raise DataError("--mem_dec_positions: a model with --encoder_only true has no decoder; use "
                        "--mem_enc_positions")
    if not (encoder or decoder):
        raise DataError("--use_memory true needs --mem_enc_positions (e.g. 4,7 or 7+)")
    if params.mem_query_batchnorm and not params.eval_only:
        # the steps on sentence batches that the original reaches (a coefficient of 0 skips them before their batch)
        padded = [f"--{kind}_steps" for kind, steps in (
            ("clm", [s for s in params.clm_steps if s[1]]), ("mlm", [s for s in params.mlm_steps if s[1]]),
            ("pc", params.pc_steps), ("ae", params.ae_steps), ("mt", params.mt_steps), ("bt", params.bt_steps))
            if steps and any(v > 0 for _, v in LambdaSchedule.parse(getattr(params, f"lambda_{kind}"),
                                                                    f"lambda_{kind}").points)]
        if padded:
            raise DataError(f"--mem_query_batchnorm true with {', '.join(padded)}: these steps train on padded "
                            "sentence batches, whose padding would enter the query network's batch statistics (the "
                            "original stops at their first batch); only streams (CLM and MLM of one language) "
                            "train with it")
    # as the original: "" means --optimizer, and sparse updates turn adam into sparseadam (which the
    # original forgot to define: it stopped at start-up)
    params.mem_values_optimizer = params.mem_values_optimizer or params.optimizer
    name, _ = parse_optimizer(params.mem_values_optimizer, "mem_values_optimizer")
    if params.mem_sparse and name == "adam":
        params.mem_values_optimizer = "sparseadam" + params.mem_values_optimizer[len(name):]
    elif params.mem_sparse and name not in SPARSE_OPTIMIZERS:
        raise DataError(f"--mem_sparse true: --mem_values_optimizer {name} does not take sparse gradients "
                        f"(use {', '.join(SPARSE_OPTIMIZERS)} or adam, which becomes sparseadam)")
    elif name == "sparseadam" and not params.mem_sparse:
        raise DataError("--mem_values_optimizer sparseadam needs --mem_sparse true (sparse gradients)")


def check_reloaded_files(params):
    """The files that --reload_model, --reload_emb and --reload_checkpoint name."""
    for path in params.reload_model_paths:
        if path and not os.path.isfile(path):
            two = " (one path for an encoder: --encoder_only true)" if params.encoder_only and "," in path else ""
            raise DataError(f"--reload_model: {path} is not a file{two}")
    if params.reload_emb and not os.path.isfile(params.reload_emb):
        raise DataError(f"--reload_emb: {params.reload_emb} is not a file")
    if params.reload_checkpoint and not os.path.isfile(params.reload_checkpoint):
        raise DataError(f"--reload_checkpoint: {params.reload_checkpoint} is not a file")


def check_schedule_and_metric_flags(params):
    """Optimizers, loss coefficients (--lambda_*), --stopping_criterion."""
    check_optimizer(params.optimizer, "optimizer")
    if params.use_memory:
        check_optimizer(params.mem_values_optimizer, "mem_values_optimizer", memory_values=True)
    trained = []
    for obj in ("mlm", "clm", "pc", "ae", "mt", "bt"):
        schedule = LambdaSchedule.parse(getattr(params, f"lambda_{obj}"), f"lambda_{obj}")
        if any(value < 0 for _, value in schedule.points):
            raise DataError(f"--lambda_{obj}: a loss coefficient must not be negative")
        if getattr(params, f"{obj}_steps") and schedule.points[-1][1] > 0:
            trained.append(obj)
    if not trained and not params.eval_only:
        # once every step is skipped, an epoch (counted in trained sentences) never ends
        raise DataError("every objective of this run ends with a --lambda_* of 0: training would stop advancing")
    if params.stopping_criterion:
        m = re.match(r"^(_?[\w.-]+),(\d+)$", params.stopping_criterion)
        if not m:
            raise DataError("--stopping_criterion must be 'metric,N', e.g. _valid_mlm_ppl,10")


def check_params(params):
    if params.debug:
        params.exp_name = "debug"
        params.exp_id = params.exp_id or "debug_%08i" % random.randint(0, 10 ** 8)
        params.debug_slurm = params.debug_train = True
    set_experiment_names(params)

    check_languages_and_steps(params)
    check_data_flags(params)
    check_masking_flags(params)
    check_precision_and_loop_flags(params)
    check_model_flags(params)
    check_memory_flags(params)
    check_reloaded_files(params)
    check_schedule_and_metric_flags(params)
    onednn_chosen()  # a bad XLM_ONEDNN in the environment stops the run here, not at its first layer
