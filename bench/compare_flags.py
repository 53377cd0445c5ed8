"""The original XLM's train.py and xlm's, side by side on the same command lines: for each flag set, both
train one tiny epoch on the same data, and the exit codes, the number of `__log__` lines, the metric names
and the epoch of the last one must be the same, so must the names and shapes of the checkpoint's weights,
and every file the original writes in its run's folder must be written by xlm too (a user's command
written for the original runs here, logs what it logged and leaves the files it left; where both refuse
the command, xlm before writing anything). Also the seconds of each whole command.
Prints one JSON object; exit status 1 if any case differs.

Users bring the original's checkpoints: before the cases that name one ({mlm}, {mt}, {memory}, {variants},
{mlm_checkpoint}, ...), the original trains it once (PRETRAINED). Evaluation is deterministic
(the original draws its MLM evaluation masks from RandomState(0)), so where both sides only evaluate the
same checkpoint (SAME_SCORES) every score must be equal, within float rounding, and the BLEU hypothesis
files byte for byte. Last, both translate.py translate the valid English sentences with the {mt} checkpoint
(greedy, the original's only mode; two batch sizes): the outputs must be the same bytes.

    python -m bench.compare_flags [--original /work/orig-cpu] [--data_path data/processed/sample] [--only clm,pc]
        [--threads 16] [--nproc 2] [--random 20 --seed 1]

--data_path is a folder of binarized files (run-sample.sh writes data/processed/sample); they are converted
to the original's .pth layout in a temporary folder, which both sides read. The original runs from
--original (patched for PyTorch 2 and the CPU, as bench.compare_original says) through bench/run_original.py.
--threads runs the compared commands (not the original's pretraining) with that many threads, whatever
the cores: MKL partitions a matmul's rows by the thread count, so a 2-core machine checks the roundings
of a larger one's (MKL_DYNAMIC=FALSE keeps MKL to the count; a passive wait keeps oversubscribed threads
from spinning).
--nproc starts each compared command as N processes (`torchrun --standalone`, gloo on the CPU; the original
through its torch.distributed.launch path, as bench/run_original.py says), one thread each unless --threads
says otherwise: the files, logs and checkpoints must be the same as above, and where both sides evaluate
the same checkpoint, the scores too (the original evaluates everything on every rank, xlm splits the
batches and sentences among the ranks). translate.py runs as one process.
--random N runs N flag sets drawn at random from the objectives, languages and options of the cases
(`random_flags`; --seed picks them), combinations that no case names, in place of the cases.
"""
import argparse
import glob
import hashlib
import json
import math
import os
import random
import re
import shlex
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

from bench.data_pipeline import cpu_model
from xlm.data.binarized import load_binarized, save_original
from xlm.model.checkpoint import read_checkpoint, strip_module_prefix
from xlm.model.linear import onednn_chosen

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORIGINAL = [sys.executable, os.path.join(REPO, "bench", "run_original.py")]  # run from the original's folder
TINY = ("--emb_dim 32 --n_layers 1 --n_heads 4 --batch_size 8 --bptt 16 --max_len 40 --epoch_size 160 "
        "--max_epoch 1 --tokens_per_batch -1")
MEMORY = "--use_memory true --mem_n_keys 16 --mem_k_dim 16 --mem_heads 2 --mem_knn 4"
# the paper's baseline: a flat memory, per-head random keys, or every +-1 vector of 6 dimensions as a key
FLAT = "--use_memory true --mem_implementation flat --mem_n_keys 48 --mem_k_dim 16 --mem_heads 2 --mem_knn 4"
FLAT_BINARY = ("--use_memory true --mem_implementation flat --mem_keys_type binary --mem_n_keys 64 --mem_k_dim 6 "
               "--mem_use_different_keys false --mem_heads 2 --mem_knn 4")
NOISE = "--word_shuffle 3 --word_dropout 0.1 --word_blank 0.1"
# the model's options off their defaults, in one model
VARIANTS = ("--asm true --asm_cutoffs 2000,4000 --share_inout_emb false --sinusoidal_embeddings true "
            "--use_lang_emb false --gelu_activation true --n_layers 2")
CASES = {
    "clm": "--lgs en --clm_steps en",
    "mlm": "--lgs en --mlm_steps en",
    "mlm_tlm": "--lgs en-fr --mlm_steps en,fr,en-fr",
    "clm_and_mlm": "--lgs en-fr --clm_steps en,fr --mlm_steps en,fr",
    "clm_parallel": "--lgs en-fr --clm_steps en-fr",
    "pc": "--lgs en-fr --pc_steps en-fr",
    "ae_bt": f"--lgs en-fr --encoder_only false --ae_steps en,fr --bt_steps en-fr-en,fr-en-fr {NOISE} "
             "--lambda_ae 0:1,100:0.1",
    "ae_blank_only": "--lgs en-fr --encoder_only false --ae_steps en --word_shuffle 0 --word_dropout 0 "
                     "--word_blank 0.2 --lambda_ae 1",
    "bt_sinusoidal": "--lgs en-fr --encoder_only false --bt_steps en-fr-en --sinusoidal_embeddings true "
                     "--lambda_bt 0:0,5:1",
    "mt_bleu": "--lgs en-fr --encoder_only false --mt_steps en-fr,fr-en --eval_bleu true",
    "mt_beam": "--lgs en-fr --encoder_only false --mt_steps en-fr --eval_bleu true --beam_size 3 "
               "--length_penalty 0.6 --early_stopping true",
    "mt_tokens_per_batch": "--lgs en-fr --encoder_only false --mt_steps en-fr --tokens_per_batch 400",
    "mt_unsorted": "--lgs en-fr --encoder_only false --mt_steps en-fr --group_by_size false --max_batch_size 4",
    "mlm_options": "--lgs en-fr --mlm_steps en,fr --word_pred 0.2 --sample_alpha 0.5 "
                   "--word_mask_keep_rand 0.5,0.25,0.25 --lg_sampling_factor 0.7 --sinusoidal_embeddings true "
                   "--share_inout_emb false --use_lang_emb false",
    "mlm_wider": "--lgs en-fr --mlm_steps en-fr --attention_dropout 0.1 --dropout 0.1 --gelu_activation true "
                 "--n_heads 8 --emb_dim 64",
    "mlm_memory": f"--lgs en --mlm_steps en {MEMORY} --mem_enc_positions 0",
    "mlm_memory_after": f"--lgs en --mlm_steps en {MEMORY} --mem_enc_positions 0+ "
                        "--mem_values_optimizer adam,lr=0.01",
    "mlm_memory_shuffled": f"--lgs en --mlm_steps en {MEMORY} --mem_enc_positions 0 --mem_shuffle_indices true",
    "mlm_memory_flat": f"--lgs en --mlm_steps en {FLAT} --mem_enc_positions 0 --mem_normalize_query true",
    "mt_memory": f"--lgs en-fr --encoder_only false --mt_steps en-fr {MEMORY} --mem_enc_positions 0 "
                 "--mem_dec_positions 0",
    "clm_asm": "--lgs en --clm_steps en --asm true --asm_cutoffs 2000,4000 --share_inout_emb false",
    "asm_div_value": "--lgs en --clm_steps en --asm true --asm_cutoffs 1000,3000 --asm_div_value 2 "
                     "--share_inout_emb false",
    "asm_with_shared_embeddings": "--lgs en --clm_steps en --asm true --asm_cutoffs 2000,4000",
    "mlm_context": "--lgs en-fr --mlm_steps en --context_size 1",
    "mlm_stopping": "--lgs en --mlm_steps en --validation_metrics _valid_mlm_ppl "
                    "--stopping_criterion _valid_mlm_ppl,2",
    "eval_only": "--lgs en --mlm_steps en --eval_only true",
    "metrics_not_computed": "--lgs en-fr --mlm_steps en-fr --validation_metrics _valid_mlm_ppl,valid_en-fr_mt_bleu",
    "lambda_schedules": "--lgs en-fr --clm_steps en --mlm_steps fr --lambda_clm 0:0,10:1 --lambda_mlm 0.5",
    "lambda_pc": "--lgs en-fr --pc_steps en-fr --lambda_pc 0:0.5,10:1",
    "save_periodic": "--lgs en --mlm_steps en --save_periodic 1 --max_epoch 3 --validation_metrics _valid_mlm_ppl",
    "debug_train": "--lgs en-fr --mlm_steps en,en-fr --debug_train true",
    "tlm_tokens_per_batch": "--lgs en-fr --mlm_steps en-fr --tokens_per_batch 300",
    "mt_max_batch_size": "--lgs en-fr --encoder_only false --mt_steps en-fr --tokens_per_batch 300 "
                         "--max_batch_size 8 --lambda_mt 0:1,10:0.5",
    "max_len_0": "--lgs en-fr --mlm_steps en-fr --encoder_only false --ae_steps en --mt_steps fr-en --max_len 0",
    "vocab_limits": "--lgs en --mlm_steps en --min_count 5 --max_vocab 3000 --split_data false",
    "amp_without_fp16": "--lgs en --mlm_steps en --amp 1",
    "sgd_clip": "--lgs en --mlm_steps en --optimizer sgd,lr=0.1 --clip_grad_norm 1",
    "adam_weight_decay": "--lgs en --clm_steps en --optimizer adam,lr=0.001,weight_decay=0.01",
    "adam_cosine": "--lgs en --clm_steps en --optimizer adam_cosine,warmup_updates=5,lr=0.001,init_period=20",
    "unknown_optimizer_option": "--lgs en --clm_steps en --optimizer adam_cosine,lr=0.001,max_update=50",
    "rmsprop": "--lgs en --clm_steps en --optimizer rmsprop,lr=0.001",
    # three languages: language ids, the pairs' file names (de-en, en-fr) and the sampling of languages
    "three_languages": "--lgs de-en-fr --mlm_steps de,en,fr,de-en,en-fr --lg_sampling_factor 0.5",
    "three_languages_mt_bt": "--lgs de-en-fr --encoder_only false --mt_steps de-en,en-de --ae_steps fr "
                             f"--bt_steps fr-en-fr {NOISE} --eval_bleu true",
    "adagrad": "--lgs en --clm_steps en --optimizer adagrad,lr=0.01",
}
# the original's own checkpoints, each trained once by the original before the cases that name it, long
# enough that their predictions are not all the same word
TRAINED = "--epoch_size 16000 --optimizer adam,lr=0.003"
PRETRAINED = {
    "mlm": (f"--lgs en-fr --mlm_steps en,fr,en-fr --validation_metrics _valid_mlm_ppl {TRAINED}",
            "best-valid_mlm_ppl.pth"),
    "mt": (f"--lgs en-fr --encoder_only false --mt_steps en-fr,fr-en --ae_steps en "
           f"--validation_metrics valid_en-fr_mt_ppl {TRAINED}", "best-valid_en-fr_mt_ppl.pth"),
    "memory": (f"--lgs en-fr --mlm_steps en,fr {MEMORY} --mem_enc_positions 0+ --validation_metrics _valid_mlm_ppl "
               f"{TRAINED}", "best-valid_mlm_ppl.pth"),
    "variants": (f"--lgs en-fr --clm_steps en,fr {VARIANTS} --validation_metrics _valid_clm_ppl {TRAINED}",
                 "best-valid_clm_ppl.pth"),
    "memory_shuffled": (f"--lgs en-fr --mlm_steps en,fr {MEMORY} --mem_enc_positions 0 --mem_shuffle_indices true "
                        f"--validation_metrics _valid_mlm_ppl {TRAINED}", "best-valid_mlm_ppl.pth"),
    "memory_flat": (f"--lgs en-fr --mlm_steps en,fr {FLAT_BINARY} --mem_enc_positions 0+ "
                    f"--validation_metrics _valid_mlm_ppl {TRAINED}", "best-valid_mlm_ppl.pth"),
}
# resumed from a checkpoint of epoch 0: the original's --max_epoch counts the epochs of each process (it
# trains max_epoch more), xlm's the epochs from 0 (README), so the original ends one epoch further
RESUMED = {"reload_checkpoint", "reload_checkpoint_mt"}
CASES.update({
    "reload_model": "--lgs en-fr --mlm_steps en,fr,en-fr --reload_model {mlm}",
    "reload_model_encoder_decoder": f"--lgs en-fr --encoder_only false --ae_steps en,fr --bt_steps en-fr-en {NOISE} "
                                    "--reload_model {mlm},{mlm}",
    "reload_model_decoder_only": "--lgs en-fr --encoder_only false --mt_steps en-fr --reload_model ,{mt}",
    "reload_checkpoint": "--lgs en-fr --mlm_steps en,fr,en-fr --validation_metrics _valid_mlm_ppl --max_epoch 2 "
                         "--reload_checkpoint {mlm_checkpoint}",
    "reload_checkpoint_mt": "--lgs en-fr --encoder_only false --mt_steps en-fr,fr-en --ae_steps en "
                            "--validation_metrics valid_en-fr_mt_ppl --max_epoch 2 --reload_checkpoint {mt_checkpoint}",
    "reload_emb": "--lgs en --mlm_steps en --reload_emb {vec}",
})
# both sides evaluate the same checkpoint of the original: equal scores and hypotheses
SAME_SCORES = {
    "scores_mlm": "--lgs en-fr --mlm_steps en,fr,en-fr --eval_only true --reload_model {mlm}",
    "scores_clm": "--lgs en-fr --clm_steps en,fr,en-fr --eval_only true --reload_model {mlm}",
    # --context_size spares the first tokens of a training loss alone
    "scores_clm_context": "--lgs en-fr --clm_steps en,fr,en-fr --context_size 4 --eval_only true --reload_model {mlm}",
    # a context longer than the stream rows (--bptt 16), which training refuses: evaluation predicts every token
    "scores_clm_long_context": "--lgs en-fr --clm_steps en,fr --context_size 40 --eval_only true --reload_model {mlm}",
    "scores_memory": f"--lgs en-fr --mlm_steps en,fr {MEMORY} --mem_enc_positions 0+ --eval_only true "
                     "--reload_model {memory}",
    "scores_variants": f"--lgs en-fr --clm_steps en,fr {VARIANTS} --eval_only true --reload_model {{variants}}",
    "scores_memory_shuffled": f"--lgs en-fr --mlm_steps en,fr {MEMORY} --mem_enc_positions 0 --mem_shuffle_indices "
                              "true --eval_only true --reload_model {memory_shuffled}",
    "scores_memory_flat": f"--lgs en-fr --mlm_steps en,fr {FLAT_BINARY} --mem_enc_positions 0+ --eval_only true "
                          "--reload_model {memory_flat}",
    "scores_mt_greedy": "--lgs en-fr --encoder_only false --mt_steps en-fr,fr-en --eval_bleu true --eval_only true "
                        "--reload_model {mt},{mt}",
    "scores_mt_beam": "--lgs en-fr --encoder_only false --mt_steps en-fr,fr-en --eval_bleu true --eval_only true "
                      "--beam_size 3 --length_penalty 0.6 --early_stopping true --reload_model {mt},{mt}",
}
CASES.update(SAME_SCORES)
# sets the original refuses and xlm runs: flags, why, and the original's last line
XLM_ALSO_RUNS = {
    "mlm_float_sum": ("--lgs en --mlm_steps en --word_mask_keep_rand 0.7,0.2,0.1",
                      "the original asserts sum == 1 exactly, and 0.7 + 0.2 + 0.1 is 0.9999999999999999 in floats",
                      "AssertionError"),
    "accumulate_without_amp": ("--lgs en --mlm_steps en --accumulate_gradients 2",
                               "the original accumulates gradients only under apex (--amp >= 0)", "AssertionError"),
    "mem_sparse": (f"--lgs en --mlm_steps en {MEMORY} --mem_enc_positions 0 --mem_sparse true",
                   "the original rewrites adam to sparseadam for the memory values, then has no sparseadam",
                   "Unknown optimization method"),
}
# with several processes, the original fails where xlm runs: {its error: why}
FAILS_WITH_PROCESSES = {
    "Expected to have finished reduction in the prior iteration":
        "without apex, its DistributedDataParallel stops at a step that leaves a parameter without a gradient "
        "(PC's output layer, the encoder's prediction layer in translation steps)",
    "Error(s) in loading state_dict for DistributedDataParallel":
        "it resumes a checkpoint only with as many processes as wrote it (the keys' `module.` prefix)",
}
EXCEPTION = re.compile(r"^(?:\[rank\d+\]: )?([\w.]*(?:Error|Exception)\b.*)$", re.MULTILINE)


# what random flag sets draw from (--random): each flag is given with probability 0.4, else left to its default
RANDOM_OPTIONS = {
    "--gelu_activation": ["true", "false"], "--sinusoidal_embeddings": ["true", "false"],
    "--use_lang_emb": ["true", "false"], "--share_inout_emb": ["true", "false"], "--dropout": ["0", "0.1"],
    "--attention_dropout": ["0", "0.1"], "--group_by_size": ["true", "false"], "--batch_size": ["4", "8", "16"],
    "--bptt": ["8", "16", "32"], "--max_len": ["20", "40", "100"], "--tokens_per_batch": ["-1", "200", "500"],
    "--max_batch_size": ["0", "6"], "--clip_grad_norm": ["0", "1", "5"], "--max_epoch": ["1", "2"],
    "--epoch_size": ["100", "160"], "--min_count": ["0", "3"], "--max_vocab": ["-1", "2000"],
    "--optimizer": ["adam_inverse_sqrt,beta1=0.9,beta2=0.98,lr=0.001,warmup_updates=10", "adam,lr=0.001",
                    "sgd,lr=0.1", "adam_cosine,warmup_updates=5,lr=0.001,init_period=20",
                    "adam,lr=0.001,weight_decay=0.01", "adadelta"],
}


def random_flags(rng):
    """One flag set: languages, objectives (an encoder, or an encoder-decoder with AE, MT and BT steps,
    maybe CLM and MLM ones), their options, and model, batching and optimizer options (RANDOM_OPTIONS)."""
    langs = rng.choice([["en"], ["en", "fr"], ["en", "fr"], ["de", "en", "fr"]])
    pairs = [p for p in ("de-en", "en-fr") if set(p.split("-")) <= set(langs)]

    def some(items):
        return ",".join(rng.sample(items, rng.randint(1, len(items))))

    flags = {"--lgs": "-".join(langs)}
    if pairs and rng.random() < 0.45:
        flags["--encoder_only"] = "false"
        a, b = rng.choice(pairs).split("-")
        steps = {"--ae_steps": some(langs), "--mt_steps": some([f"{a}-{b}", f"{b}-{a}"]),
                 "--bt_steps": rng.choice([f"{a}-{b}-{a}", f"{b}-{a}-{b}"]), "--mlm_steps": some(langs),
                 "--clm_steps": some(langs)}
        chances = {"--ae_steps": 0.5, "--mt_steps": 0.5, "--bt_steps": 0.5, "--mlm_steps": 0.2, "--clm_steps": 0.15}
        drawn = {k: v for k, v in steps.items() if rng.random() < chances[k]}
        flags.update(drawn or {"--bt_steps": steps["--bt_steps"]})
        if "--ae_steps" in flags or rng.random() < 0.3:
            flags.update({"--word_shuffle": rng.choice(["0", "3"]), "--word_dropout": rng.choice(["0", "0.1"]),
                          "--word_blank": rng.choice(["0", "0.1"])})
        if rng.random() < 0.5:
            flags["--eval_bleu"] = "true"
            if rng.random() < 0.5:
                flags.update({"--beam_size": rng.choice(["2", "3"]), "--length_penalty": rng.choice(["0.6", "1.3"]),
                              "--early_stopping": rng.choice(["true", "false"])})
    else:
        for kind in set(rng.sample(["clm", "mlm", "mlm", "pc"], rng.randint(1, 2))):
            if kind == "pc":
                if pairs:
                    flags["--pc_steps"] = rng.choice(pairs)
            else:
                flags[f"--{kind}_steps"] = some(langs + pairs)
        if len(flags) == 1:  # a PC step drawn without a pair to take it
            flags["--mlm_steps"] = langs[0]
        if "--mlm_steps" in flags:
            for flag, values in (("--word_pred", ["0.1", "0.25"]), ("--sample_alpha", ["0.3", "0.5"]),
                                 ("--word_mask_keep_rand", ["0.6,0.2,0.2", "1,0,0", "0.5,0.5,0"])):
                if rng.random() < 0.3:
                    flags[flag] = rng.choice(values)
        if "--clm_steps" in flags and rng.random() < 0.3:
            flags["--context_size"] = rng.choice(["1", "4"])
        if len(langs) > 1 and rng.random() < 0.3:
            flags["--lg_sampling_factor"] = rng.choice(["0.5", "0.7"])
    heads = rng.choice([2, 4])
    flags.update({"--emb_dim": str(heads * rng.choice([8, 12, 16])), "--n_heads": str(heads),
                  "--n_layers": rng.choice(["1", "2"])})
    flags.update({k: rng.choice(v) for k, v in RANDOM_OPTIONS.items() if rng.random() < 0.4})
    return " ".join(f"{k} {v}" for k, v in flags.items())


def random_memory_flags(rng, flags):
    """Product-key or flat memories (with probability 0.35) for a flag set of `random_flags`, their place
    in the layers of its encoder or decoder, and the options of their keys, queries and scores, each given
    with probability 0.25 (combinations both sides accept; refused ones have cases of their own). Not
    pq_default: the original's calls faiss' GPU search even on a CPU (xlm computes it as pq_fast)."""
    if rng.random() >= 0.35:
        return ""
    n_layers = int(re.search(r"--n_layers (\d)", flags)[1])

    def positions():
        layers = rng.sample(range(n_layers), rng.randint(1, n_layers))
        return ",".join(f"{k}{rng.choice(['', '+'])}" for k in sorted(layers))

    heads = rng.choice([1, 2, 4])
    memory = {"--use_memory": "true", "--mem_heads": str(heads)}
    sides = ["enc", "dec"] if "--encoder_only false" in flags else ["enc"]
    for side in rng.sample(sides, rng.randint(1, len(sides))):
        memory[f"--mem_{side}_positions"] = positions()
    binary = rng.random() < 0.15
    memory["--mem_implementation"] = "flat" if binary else rng.choice(["pq_fast", "pq_fast", "flat"])
    flat = memory["--mem_implementation"] == "flat"
    if binary:
        k_dim = rng.choice([5, 6])
        memory.update({"--mem_keys_type": "binary", "--mem_k_dim": str(k_dim), "--mem_n_keys": str(1 << k_dim),
                       "--mem_use_different_keys": "false"})
    else:
        memory.update({"--mem_k_dim": rng.choice(["8", "16"]),
                       "--mem_n_keys": rng.choice(["32", "64", "100"] if flat else ["8", "16", "32"])})
        if rng.random() < 0.25:
            memory["--mem_keys_type"] = "gaussian"
        if rng.random() < 0.25:
            memory["--mem_keys_normalized_init"] = "true"
        if heads == 1 and flat or rng.random() < 0.25:
            memory["--mem_use_different_keys"] = "false"
    memory["--mem_knn"] = rng.choice(["2", "4", "8"])
    different_keys = memory.get("--mem_use_different_keys") != "false"
    n_indices = int(memory["--mem_n_keys"]) ** (1 if flat else 2)
    options = {
        "--mem_shuffle_indices": ["true"], "--mem_normalize_query": ["true"], "--mem_query_batchnorm": ["true"],
        "--mem_score_subtract": ["min", "mean", "median"], "--mem_score_normalize": ["true"],
        "--mem_score_softmax": ["false"], "--mem_temperature": ["0.5", "2"], "--mem_value_zero_init": ["true"],
        "--mem_keys_learn": ["false"], "--mem_query_detach_input": ["true"], "--mem_query_bias": ["false"],
        "--mem_query_net_learn": ["false"], "--mem_input_dropout": ["0.1"], "--mem_query_dropout": ["0.1"],
        "--mem_value_dropout": ["0.1"], "--mem_values_optimizer": ["''", "adam,lr=0.0005"],
        "--mem_modulo_size": [str(n_indices // 2 + 1)],
        "--mem_query_layer_sizes": ["0,32,0"] + (["''"] if heads == 1 or different_keys else []),
    }
    memory.update({k: rng.choice(v) for k, v in options.items() if rng.random() < 0.25})
    return " " + " ".join(f"{k} {v}" for k, v in memory.items())


def random_cases(seed, n, draw=random_flags):
    """n flag sets of `draw(rng)`, named random<seed>_<i>: combinations no case names."""
    rng = random.Random(seed)
    return {f"random{seed}_{i}": draw(rng) for i in range(n)}


def with_random_memories(cases, seed):
    """`random_memory_flags` added to each of the cases, from a generator of its own: a seed draws the same
    other flags as before memories were drawn."""
    rng = random.Random(f"memory{seed}")
    return {name: flags + random_memory_flags(rng, flags) for name, flags in cases.items()}


# the original fails at random where xlm runs, with one process or more: {its error: why}
FAILS_AT_RANDOM = {
    "cannot sample n_sample <= 0 samples":
        "an MLM batch whose draw picks no token to predict stops it (torch.multinomial of 0 samples); xlm predicts "
        "one token of the batch, drawn at random (likely with small batches and --word_pred: 4 x 16 tokens at 0.1)",
}


BOTH_DIVERGED = "both diverge: the original goes on with NaN scores, xlm stops with one line"


def both_diverged(original, ours):
    """Both runs diverged: the original goes on with NaN scores (exit 0), xlm stops with one line once 20
    updates in a row were skipped for a non-finite loss (exit 1)."""
    nan = any(isinstance(v, float) and math.isnan(v) for v in (original["scores"] or {}).values())
    return original["rc"] == 0 and nan and ours["rc"] != 0 and "updates in a row skipped" in ours["last_line"]


def known_failure(original, nproc=None):
    """Why the original failed where it is known to fail (with several processes, or at random), or None."""
    known = {**FAILS_AT_RANDOM, **(FAILS_WITH_PROCESSES if nproc else {})}
    return next((why for error, why in known.items() if error in (original["error"] or "")), None)


def last_log(output):
    logs = [line.split("__log__:", 1)[1] for line in output.splitlines() if "__log__:" in line]
    return json.loads(logs[-1]) if logs else None


def threads_env(threads):
    """The environment of a compared command: this one, or with `threads` threads (see --threads)."""
    if threads is None:
        return None
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "MKL_DYNAMIC": "FALSE",
            "OMP_WAIT_POLICY": "PASSIVE"}


def launcher(nproc):
    """How a compared command starts: python, or torchrun with nproc processes (see --nproc)."""
    if nproc is None:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]


def run(side, cwd, command, flags, dump, data, env=None):
    start = time.perf_counter()
    p = subprocess.run(command + ["--exp_name", side, "--dump_path", dump, "--data_path", data] + shlex.split(flags),
                       cwd=cwd, capture_output=True, text=True, env=env)
    output = p.stdout + p.stderr
    log = last_log(output)
    # the first exception's line (a failed rank's, before torchrun's summary)
    errors = [m[1] for m in EXCEPTION.finditer(output)]
    return {"rc": p.returncode, "error": errors[0][:300] if errors else None,
            "metrics": sorted(log) if log else None, "scores": log,
            "n_logs": output.count("__log__:"),
            "seconds": round(time.perf_counter() - start, 1), "files": written_files(os.path.join(dump, side)),
            "hypotheses": hypotheses(os.path.join(dump, side)), "weights": weight_shapes(os.path.join(dump, side)),
            "last_line": (output.strip().splitlines() or [""])[-1][-300:]}


def same(name, original, ours, nproc=None, exact=None):
    """Whether xlm's run is what the original's says it should be; `exact`: whether xlm scored in the
    original's roundings (by default: where oneDNN is not chosen, `scoring_roundings`), where its accuracies
    must be the original's, not only close."""
    if name in XLM_ALSO_RUNS:
        return XLM_ALSO_RUNS[name][2] in original["last_line"] + (original["error"] or "") and ours["rc"] == 0
    if original["rc"] != 0 and known_failure(original, nproc):
        return ours["rc"] == 0
    if both_diverged(original, ours):
        return True
    if original["rc"] != ours["rc"] or original["metrics"] != ours["metrics"]:
        return False
    if original["rc"] != 0:  # a refused command: the original has written params.pkl and train.log, xlm nothing
        return True
    further = 1 if name in RESUMED else 0
    # with several processes, the original's --eval_only logs its scores on every rank
    logs_per_run = (nproc or 1) if "--eval_only true" in CASES.get(name, "") else 1
    if (original["scores"]["epoch"] != ours["scores"]["epoch"] + further
            or original["n_logs"] != (ours["n_logs"] + further) * logs_per_run
            or not set(original["files"]) <= set(ours["files"]) or original["weights"] != ours["weights"]):
        return False
    if name in SAME_SCORES:
        exact = not onednn_chosen() if exact is None else exact
        return (original["hypotheses"] == ours["hypotheses"]
                and all(math.isclose(v, ours["scores"][k], rel_tol=1e-5, abs_tol=1e-6)
                        and (v == ours["scores"][k] or not exact or not k.endswith("_acc"))
                        for k, v in original["scores"].items()))
    return True


def hypotheses(experiments):
    """sha256 of each BLEU hypothesis and reference file of the run."""
    return {os.path.basename(path): hashlib.sha256(open(path, "rb").read()).hexdigest()
            for path in sorted(glob.glob(os.path.join(experiments, "*", "hypotheses", "*")))}


def weight_shapes(experiments):
    """{model: {state-dict key: shape}} of the run's checkpoint.pth, read as xlm reads the original's: the
    model a flag set builds, which every loader of the file must build alike."""
    paths = glob.glob(os.path.join(experiments, "*", "checkpoint.pth"))
    if not paths:
        return None
    checkpoint = read_checkpoint(paths[0])
    return {name: {key: list(value.shape) for key, value in strip_module_prefix(checkpoint[name]).items()}
            for name in ("model", "encoder", "decoder") if name in checkpoint}


def differing_lines(dump):
    """{hypothesis file: lines that differ} between the two sides' runs in dump, to look into a difference
    (a near tie of two beam scores rounded apart is one line; --keep, then decode it in float64)."""
    counts = {}
    for path in glob.glob(os.path.join(dump, "original", "*", "hypotheses", "hyp*")):
        ours = glob.glob(os.path.join(dump, "xlm", "*", "hypotheses", os.path.basename(path)))
        a = open(path, encoding="utf-8").read().splitlines()
        b = open(ours[0], encoding="utf-8").read().splitlines() if ours else []
        n = sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))
        if n:
            counts[os.path.basename(path)] = n
    return counts


def written_files(experiments):
    """The files of the run's folder (the original names it by a random exp_id), the id left out."""
    return sorted(os.path.relpath(os.path.join(folder, name), run_folder)
                  for run_folder in glob.glob(os.path.join(experiments, "*"))
                  for folder, _, names in os.walk(run_folder) for name in names)


def pretrain(original, names, cases, dump, data):
    """The original's checkpoints the cases name, each trained once by the original: {placeholder: path}."""
    paths = {}
    for model, (flags, best) in PRETRAINED.items():
        if not any("{" + model in cases[name] for name in names):
            continue
        p = subprocess.run(ORIGINAL + f"{TINY} {flags} --exp_name {model} --exp_id p --dump_path {dump} "
                           f"--data_path {data}".split(), cwd=original, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"the original could not train the {model} checkpoint: {(p.stdout + p.stderr)[-2000:]}")
        paths[model] = os.path.join(dump, model, "p", best)
        paths[model + "_checkpoint"] = os.path.join(dump, model, "p", "checkpoint.pth")
    return paths


def compare_translate(original, checkpoint, files, tmp, env=None):
    """Both translate.py on the valid English sentences of the en-fr pairs: {batch size: same output}."""
    source = os.path.join(tmp, "translate_input.en")
    corpus = load_binarized(next(f for f in files if f.endswith("valid.en-fr.en.pth")))
    with open(source, "w", encoding="utf-8") as f:
        f.writelines(" ".join(corpus.dico[i] for i in corpus[k]) + "\n" for k in range(len(corpus)))
    results = {}
    for batch_size in (32, 7):
        outputs, seconds = {}, {}
        for side, cwd, command in (("original", original, ORIGINAL + ["translate.py"]),
                                   ("xlm", REPO, [sys.executable, "translate.py"])):
            outputs[side] = os.path.join(tmp, f"translated.{batch_size}.{side}.fr")
            start = time.perf_counter()
            with open(source, "rb") as stdin:
                p = subprocess.run(command + ["--model_path", checkpoint, "--src_lang", "en", "--tgt_lang", "fr",
                                              "--batch_size", str(batch_size), "--output_path", outputs[side],
                                              "--dump_path", os.path.join(tmp, "translate_logs"), "--exp_name", side],
                                   cwd=cwd, stdin=stdin, capture_output=True, text=True, env=env)
            seconds[side] = round(time.perf_counter() - start, 1)
            if p.returncode != 0:
                sys.exit(f"{side}'s translate.py failed: {(p.stdout + p.stderr)[-2000:]}")
        texts = {side: open(path, "rb").read() for side, path in outputs.items()}
        results[batch_size] = {"sentences": len(corpus), "same_output": texts["original"] == texts["xlm"],
                               "seconds": seconds}
        print(f"translate.py --batch_size {batch_size}: "
              f"{'same output' if results[batch_size]['same_output'] else 'DIFFERENT output'} "
              f"({seconds['original']} / {seconds['xlm']} s)", file=sys.stderr, flush=True)
    return results


def write_vectors(files, path):
    """A fastText .vec of the English vocabulary's first 500 words, random vectors of --emb_dim values."""
    dico = load_binarized(next(f for f in files if f.endswith("train.en.pth"))).dico
    dim = int(TINY.split("--emb_dim ")[1].split()[0])
    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"500 {dim}\n")
        for i in range(500):
            f.write(dico[i] + " " + " ".join(f"{rng.gauss(0, 0.1):.4f}" for _ in range(dim)) + "\n")
    return path


def chosen(only, cases, extra=()):
    """The case names of --only (every case by default); exits naming any unknown one."""
    names = only.split(",") if only else list(cases)
    unknown = [n for n in names if n not in cases and n not in extra]
    if unknown:
        sys.exit(f"--only: no case {', '.join(unknown)}; the cases are {', '.join([*cases, *extra])}")
    return names


@contextmanager
def work_folder(keep):
    """The folder --keep names (made, and kept), else a temporary one."""
    if keep:
        os.makedirs(keep)
        yield keep
    else:
        with tempfile.TemporaryDirectory() as tmp:
            yield tmp


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--original", default="/work/orig-cpu", help="the original XLM, patched for the CPU")
    parser.add_argument("--data_path", default=os.path.join(REPO, "data", "processed", "sample"))
    parser.add_argument("--only", help="comma-separated case names")
    parser.add_argument("--keep", help="work in this folder (data, checkpoints, runs) and keep it, to look into a "
                                       "difference; by default a temporary folder")
    parser.add_argument("--threads", type=int, help="threads of the compared commands (default: torch's, the cores)")
    parser.add_argument("--nproc", type=int, help="processes of each compared train.py command (default: one)")
    parser.add_argument("--random", type=int, metavar="N", help="N flag sets drawn at random (--seed) in place of "
                                                                "the cases above (with --only: besides those)")
    parser.add_argument("--seed", type=int, default=0, help="of --random")
    args = parser.parse_args()
    env = threads_env(args.threads if args.threads or not args.nproc else 1)
    if not os.path.isfile(os.path.join(args.original, "train.py")):
        sys.exit(f"--original {args.original}: no train.py there")
    files = glob.glob(os.path.join(args.data_path, "*.pth"))
    if not files:
        sys.exit(f"--data_path {args.data_path}: no .pth files (run `PRETRAIN=0 bash run-sample.sh` first)")
    cases = {**CASES, **{name: flags for name, (flags, _, _) in XLM_ALSO_RUNS.items()}}
    names = chosen(args.only, cases, extra=["translate"]) if args.only or not args.random else []
    if args.random:
        drawn = with_random_memories(random_cases(args.seed, args.random), args.seed)
        cases.update(drawn)
        names += list(drawn)
    with work_folder(args.keep) as tmp:
        data = os.path.join(tmp, "data")
        os.makedirs(data)
        for f in files:
            save_original(load_binarized(f), os.path.join(data, os.path.basename(f)))
        result = {"benchmark": "compare_flags", "command": "python -m bench.compare_flags " + " ".join(sys.argv[1:]),
                  "original": os.path.abspath(args.original), "data": os.path.abspath(args.data_path),
                  "device_name": cpu_model(), "threads": args.threads, "nproc": args.nproc, "common_flags": TINY,
                  "cases": {}}
        translating = not args.only and not args.random or "translate" in names
        names = [name for name in names if name != "translate"]
        checkpoints = pretrain(args.original, names + ["translate"] * translating,
                               {**cases, "translate": "{mt}"}, os.path.join(tmp, "pretrained"), data)
        checkpoints["vec"] = write_vectors(files, os.path.join(tmp, "vectors.vec"))
        for name in names:
            flags = f"{TINY} {cases[name]}".format(**checkpoints)
            dump = os.path.join(tmp, "dump", name)
            original = run("original", args.original, launcher(args.nproc) + ORIGINAL[1:], flags, dump, data, env)
            ours = run("xlm", REPO, launcher(args.nproc) + ["train.py"], flags, dump, data, env)
            case = result["cases"][name] = {"flags": cases[name], "same": same(name, original, ours, args.nproc),
                                            "original": original, "xlm": ours}
            if not case["same"] and name in SAME_SCORES and onednn_chosen():
                # oneDNN's free roundings can turn a near tie of the two best scores of a prediction the other
                # way: then the accuracies must be the original's in MKL's roundings
                mkl = run("xlm", REPO, launcher(args.nproc) + ["train.py"], flags, dump + "_mkl", data,
                          {**(env or os.environ), "XLM_ONEDNN": "0"})
                if same(name, original, mkl, args.nproc, exact=True):
                    case.update(same=True, xlm_mkl=mkl, expected="accuracies apart by near ties of oneDNN's free "
                                "roundings; the original's in MKL's (XLM_ONEDNN=0)")
            if original["hypotheses"] != ours["hypotheses"]:
                case["hypothesis_lines_differing"] = differing_lines(dump)
            if name in XLM_ALSO_RUNS:
                case["expected"] = "the original fails, xlm runs: " + XLM_ALSO_RUNS[name][1]
            elif both_diverged(original, ours):
                case["expected"] = BOTH_DIVERGED
            elif known_failure(original, args.nproc) and ours["rc"] == 0:
                case["expected"] = "the original fails, xlm runs: " + known_failure(original, args.nproc)
            print(f"{name}: {'as expected' if case['same'] else 'DIFFERENT'} (exit {original['rc']} / {ours['rc']}, "
                  f"{original['seconds']} / {ours['seconds']} s)", file=sys.stderr, flush=True)
        if translating:
            result["translate"] = compare_translate(args.original, checkpoints["mt"], files, tmp, env)
    result["all_as_expected"] = (all(c["same"] for c in result["cases"].values())
                                 and all(t["same_output"] for t in result.get("translate", {}).values()))
    print(json.dumps(result, indent=1))
    sys.exit(0 if result["all_as_expected"] else 1)


if __name__ == "__main__":
    main()
