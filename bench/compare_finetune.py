"""The original XLM's glue-xnli.py and xlm's, side by side on the same command lines and files: for each
flag set both fine-tune the same pretrained model (an MLM the original trains first on toy languages named
en, es and fr; for the *_memory* sets, one with product-key memories) on toy XNLI and GLUE tasks, and the
exit codes, the number of `__log__` lines, the metric names of the last one must be the same, and every
file the original writes in its run's folder must be written by xlm too. Also the seconds of each whole
command. Prints one JSON object; exit status 1 if any set differs.

    python -m bench.compare_finetune [--original /work/orig-cpu] [--only xnli,glue_pairs] [--keep DIR]
        [--random 20 --seed 1]

The tasks come from tools/toy_languages.py's classification examples (premise, hypothesis, label): XNLI
as prepare-xnli.sh lays it out (training data in en only; the original reads valid and test files of all
15 XNLI languages, so the 12 the model lacks get copies of es's), and every GLUE task as prepare-glue.sh
lays it out, labels derived from the XNLI label (test labels for MRPC only, as GLUE has them). Both sides
read the same files, in the original's binarized format. --random N runs N flag sets drawn at random
(`random_flags`, --seed; a quarter of them fine-tune the model with memories) in place of the cases.
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys

from bench.compare_flags import BOTH_DIVERGED, ORIGINAL, REPO, both_diverged, chosen, random_cases, run, work_folder
from bench.data_pipeline import cpu_model
from xlm.data.binarized import binarize, load_binarized, save_original
from xlm.data.dictionary import Dictionary

LANGS = ("en", "es", "fr")
XNLI_LANGS = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")
# label of each GLUE task from the XNLI label, and whether the task has one sentence
BINARY = {"entailment": "1", "neutral": "0", "contradiction": "0"}
GLUE = {
    "MNLI-m": (False, lambda y: y), "MNLI-mm": (False, lambda y: y), "AX_MNLI-m": (False, lambda y: y),
    "QNLI": (False, lambda y: "entailment" if y == "entailment" else "not_entailment"),
    "RTE": (False, lambda y: "entailment" if y == "entailment" else "not_entailment"),
    "QQP": (False, BINARY.get), "MRPC": (False, BINARY.get), "WNLI": (False, BINARY.get),
    "STS-B": (False, {"entailment": "5.0", "neutral": "2.5", "contradiction": "0.4"}.get),
    "SST-2": (True, lambda y: "0" if y == "contradiction" else "1"), "CoLA": (True, BINARY.get),
}
COMMON = "--batch_size 8 --n_epochs 2 --optimizer_e adam,lr=0.0005 --optimizer_p adam,lr=0.0005"
CASES = {
    "xnli": "--transfer_tasks XNLI",
    "xnli_embeddings_only": "--transfer_tasks XNLI --finetune_layers 0:0",
    "xnli_top_layer": "--transfer_tasks XNLI --finetune_layers 2:_1",
    "xnli_dropout_epoch_size": "--transfer_tasks XNLI --dropout 0.1 --epoch_size 80",
    "xnli_group_by_size": "--transfer_tasks XNLI --group_by_size true --max_batch_size 4",
    "xnli_tokens_per_batch": "--transfer_tasks XNLI --tokens_per_batch 200",
    "xnli_max_len": "--transfer_tasks XNLI --max_len 20",
    "xnli_debug_train": "--transfer_tasks XNLI --debug_train true",
    "glue_one_sentence": "--transfer_tasks SST-2,CoLA",
    "glue_pairs": "--transfer_tasks MRPC,STS-B,QQP",
    "glue_nli": "--transfer_tasks MNLI-m,MNLI-mm,QNLI,RTE,WNLI,AX_MNLI-m",
    "glue_and_xnli_weighted": "--transfer_tasks SST-2,XNLI,MRPC --weighted_training true",
    "sgd": "--transfer_tasks SST-2 --optimizer_e sgd,lr=0.01 --optimizer_p sgd,lr=0.1",
    "vocab_limits": "--transfer_tasks XNLI --max_vocab 40 --min_count 2",
    "unknown_task": "--transfer_tasks XNLI,MNLI",
    "glue_tokens_per_batch": "--transfer_tasks MRPC,STS-B --tokens_per_batch 300",
    "glue_group_by_size": "--transfer_tasks SST-2,QNLI --group_by_size true",
    "xnli_memory": "--transfer_tasks XNLI --model_path {memory}",
    "glue_memory": "--transfer_tasks SST-2,STS-B --finetune_layers 1:_1 --model_path {memory}",
    "xnli_memory_in_a_layer": "--transfer_tasks XNLI --model_path {memory_in}",
    "xnli_memory_batchnorm": "--transfer_tasks XNLI --model_path {memory_bn}",
}
# sets the original fails and xlm runs: the original's last line, and why
XLM_ALSO_RUNS = {
    "xnli_debug_train": ("AssertionError", "the original's --debug_train reads the valid sentences with the train "
                                           "labels; xlm reads the valid labels with them"),
    "glue_tokens_per_batch": ("AssertionError", "the original's GLUE evaluation asserts that its batches come in "
                                                "sentence order, which --tokens_per_batch and --group_by_size true "
                                                "(batches grouped by length) break; xlm puts the predictions back in "
                                                "order"),
    "xnli_memory_in_a_layer": ("AttributeError", "the original's embedder adds each fine-tuned layer's feed-forward "
                                                 "network to the optimizer, and a memory in its place is None there; "
                                                 "xlm fine-tunes the memory instead"),
    "glue_group_by_size": ("AssertionError", "the original's GLUE evaluation refuses batches grouped by length "
                                             "without shuffling (one sentence) or asserts they come in sentence "
                                             "order (pairs); xlm puts the predictions back in order"),
}
TASKS = ["XNLI", *GLUE]
RANDOM_OPTIONS = {
    "--finetune_layers": ["0:_1", "0:0", "1:_1", "2:_1", "0:1"], "--dropout": ["0", "0.1", "0.3"],
    "--epoch_size": ["-1", "40", "80"], "--max_batch_size": ["0", "4"], "--max_len": ["10", "20", "256"],
    "--weighted_training": ["true", "false"], "--batch_size": ["4", "8", "16"], "--n_epochs": ["1", "2"],
    "--optimizer_e": ["adam,lr=0.0005", "sgd,lr=0.01", "adam_inverse_sqrt,lr=0.001,warmup_updates=5"],
    "--optimizer_p": ["adam,lr=0.0005", "sgd,lr=0.1", "adam,lr=0.001,weight_decay=0.01"],
}


def random_flags(rng):
    """One to three tasks, and RANDOM_OPTIONS each with probability 0.35; batches grouped by length
    (--group_by_size, --tokens_per_batch) with XNLI alone, since the original's GLUE evaluation fails on
    them (the glue_* cases above)."""
    tasks = rng.sample(TASKS, rng.randint(1, 3))
    flags = {"--transfer_tasks": ",".join(tasks)}
    flags.update({k: rng.choice(v) for k, v in RANDOM_OPTIONS.items() if rng.random() < 0.35})
    if tasks == ["XNLI"] and rng.random() < 0.5:
        flag, value = rng.choice([("--group_by_size", "true"), ("--tokens_per_batch", "150"),
                                  ("--tokens_per_batch", "300")])
        flags[flag] = value
    return " ".join(f"{k} {v}" for k, v in flags.items())


PRETRAIN = ("--lgs en-es-fr --mlm_steps en,es,fr --emb_dim 32 --n_layers 2 --n_heads 4 --batch_size 8 --bptt 32 "
            "--epoch_size 1600 --max_epoch 1 --optimizer adam,lr=0.003")
# the pretrained models a case may name: memories after layer 1 (with a batchnorm in their query network), or
# also in place of layer 0's feed-forward network; the other cases fine-tune {mlm}
MEMORY = "--use_memory true --mem_n_keys 16 --mem_k_dim 16 --mem_heads 2 --mem_knn 4 --mem_enc_positions"
PRETRAINED = {"mlm": PRETRAIN, "memory": f"{PRETRAIN} {MEMORY} 1+", "memory_in": f"{PRETRAIN} {MEMORY} 0,1+",
              "memory_bn": f"{PRETRAIN} {MEMORY} 1+ --mem_query_batchnorm true"}


def write_tasks(raw, data):
    """The XNLI and GLUE files of the toy classification examples in raw/cls, binarized against one
    vocabulary of their words, in the original's format."""
    texts = {}
    for lg in LANGS:
        for split in ("train", "valid", "test") if lg == "en" else ("valid", "test"):
            rows = [line.split("\t") for line in open(os.path.join(raw, "cls", f"{lg}.{split}"), encoding="utf-8")]
            xnli = os.path.join("eval", "XNLI", f"{split}.%s.{lg}")
            texts.update({xnli % "s1": [r[0] for r in rows], xnli % "s2": [r[1] for r in rows],
                          xnli % "label": [r[2].strip() for r in rows]})
            if lg != "en":
                continue
            for task, (single, label) in GLUE.items():
                glue = os.path.join("eval", task, f"{split}.%s")
                texts[glue % "s1"] = [r[0] for r in rows]
                if not single:
                    texts[glue % "s2"] = [r[1] for r in rows]
                if split != "test" or task == "MRPC":
                    texts[glue % "label"] = [label(r[2].strip()) for r in rows]
    counts = {}
    for name, lines in texts.items():
        if "label" not in name:
            for word in " ".join(lines).split():
                counts[word] = counts.get(word, 0) + 1
    os.makedirs(data, exist_ok=True)
    vocab = os.path.join(data, "vocab")
    with open(vocab, "w", encoding="utf-8") as f:
        f.writelines(f"{w} {c}\n" for w, c in sorted(counts.items(), key=lambda x: (-x[1], x[0])))
    dico = Dictionary.read_vocab(vocab)
    for name, lines in texts.items():
        path = os.path.join(data, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in lines)
        if "label" not in name:
            binarize(path, dico, path + ".pth")
            save_original(load_binarized(path + ".pth"), path + ".pth")
    for lg in XNLI_LANGS:  # the languages the model lacks, which the original reads all the same
        for split in ("valid", "test"):
            for kind, ext in (("s1", ".pth"), ("s2", ".pth"), ("label", "")):
                name = os.path.join(data, "eval", "XNLI", f"{split}.{kind}.%s{ext}")
                if not os.path.exists(name % lg):
                    shutil.copy(name % "es", name % lg)
    return dico


def pretrain(original, raw, dico, tmp, names):
    """MLMs of en, es and fr trained by the original on the toy monolingual data, those of PRETRAINED that
    the cases `names` fine-tune: {name: its checkpoint.pth}."""
    mono = os.path.join(tmp, "mono")
    os.makedirs(mono)
    for lg in LANGS:
        for split in ("train", "valid", "test"):
            path = os.path.join(mono, f"{split}.{lg}.pth")
            binarize(os.path.join(raw, "mono", f"{split}.{lg}"), dico, path)
            save_original(load_binarized(path), path)
    paths = {}
    for model, flags in PRETRAINED.items():
        if model != "mlm" and not any("{" + model + "}" in CASES[name] for name in names):
            continue
        p = subprocess.run(ORIGINAL + f"{flags} --exp_name {model} --exp_id p --dump_path {tmp}/pretrained "
                           f"--data_path {mono}".split(), cwd=original, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"the original could not train the {model} MLM: {(p.stdout + p.stderr)[-2000:]}")
        paths[model] = os.path.join(tmp, "pretrained", model, "p", "checkpoint.pth")
    return paths


def same(name, original, ours):
    """Same exit code and `__log__` lines; xlm may add metrics (XNLI's means over the languages) and files
    (checkpoints; the predictions in a folder per task, where the original's second task overwrote the
    first's)."""
    if name in XLM_ALSO_RUNS:
        return XLM_ALSO_RUNS[name][0] in original["last_line"] and ours["rc"] == 0
    if both_diverged(original, ours):
        return True
    if original["rc"] != ours["rc"] or original["n_logs"] != ours["n_logs"]:
        return False
    if original["rc"] != 0:
        return True
    predictions = {os.path.basename(f) for f in ours["files"] if ".pred." in f}
    return (set(original["metrics"]) <= set(ours["metrics"])
            and all(f in ours["files"] or f in predictions for f in original["files"]))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--original", default="/work/orig-cpu", help="the original XLM, patched for the CPU")
    parser.add_argument("--only", help="comma-separated case names")
    parser.add_argument("--keep", help="work in this folder and keep it; by default a temporary folder")
    parser.add_argument("--random", type=int, metavar="N", help="N flag sets drawn at random (--seed) in place of "
                                                                "the cases above (with --only: besides those)")
    parser.add_argument("--seed", type=int, default=0, help="of --random")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.original, "glue-xnli.py")):
        sys.exit(f"--original {args.original}: no glue-xnli.py there")
    names = chosen(args.only, CASES) if args.only or not args.random else []
    if args.random:
        drawn = random_cases(args.seed, args.random, random_flags)
        # a quarter fine-tune the model with memories after a layer, drawn apart: a seed's other flags stay
        memory_rng = random.Random(f"memory{args.seed}")
        drawn = {name: flags + (" --model_path {memory}" if memory_rng.random() < 0.25 else "")
                 for name, flags in drawn.items()}
        CASES.update(drawn)
        names += list(drawn)
    with work_folder(args.keep) as tmp:
        raw, data = os.path.join(tmp, "raw"), os.path.join(tmp, "data")
        subprocess.run([sys.executable, os.path.join(REPO, "tools", "toy_languages.py"), "--out", raw,
                        "--langs", ",".join(LANGS), "--n_mono", "2000", "--n_para", "0", "--n_valid", "100",
                        "--n_test", "100", "--n_cls_train", "240", "--n_cls_eval", "45", "--vocab_size", "60"],
                       check=True, capture_output=True)
        dico = write_tasks(raw, data)
        models = pretrain(args.original, raw, dico, tmp, names)
        result = {"benchmark": "compare_finetune",
                  "command": "python -m bench.compare_finetune " + " ".join(sys.argv[1:]),
                  "original": os.path.abspath(args.original), "device_name": cpu_model(),
                  "pretrained": {m: PRETRAINED[m] for m in models}, "common_flags": COMMON, "cases": {}}
        for name in names:
            flags = f"{COMMON} {CASES[name]}".format(**models)
            flags += "" if "--model_path" in flags else f" --model_path {models['mlm']}"
            dump = os.path.join(tmp, "dump", name)
            original = run("original", args.original, ORIGINAL + ["glue-xnli.py"], flags, dump, data)
            ours = run("xlm", REPO, [sys.executable, "glue-xnli.py"], flags, dump, data)
            case = result["cases"][name] = {"flags": CASES[name], "same": same(name, original, ours),
                                            "original": original, "xlm": ours}
            if name in XLM_ALSO_RUNS:
                case["expected"] = "the original fails, xlm runs: " + XLM_ALSO_RUNS[name][1]
            elif both_diverged(original, ours):
                case["expected"] = BOTH_DIVERGED
            print(f"{name}: {'as expected' if case['same'] else 'DIFFERENT'} (exit {original['rc']} / {ours['rc']}, "
                  f"{original['seconds']} / {ours['seconds']} s)", file=sys.stderr, flush=True)
    result["all_as_expected"] = all(c["same"] for c in result["cases"].values())
    print(json.dumps(result, indent=1))
    sys.exit(0 if result["all_as_expected"] else 1)


if __name__ == "__main__":
    main()
