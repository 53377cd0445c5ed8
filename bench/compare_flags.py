"""The original XLM's train.py and xlm's, side by side on the same command lines: for each flag set, both
train one tiny epoch on the same data, and the exit codes and the metric names of the last `__log__` line
must be the same, and every file the original writes in its run's folder must be written by xlm too (a
user's command written for the original runs here, logs what it logged and leaves the files it left;
where both refuse the command, xlm before writing anything). Also
the seconds of each whole command. Prints one JSON object; exit status 1 if any case differs.

    python -m bench.compare_flags [--original /work/orig-cpu] [--data_path data/processed/sample] [--only clm,pc]

--data_path is a folder of binarized files (run-sample.sh writes data/processed/sample); they are converted
to the original's .pth layout in a temporary folder, which both sides read. The original runs from
--original (patched for PyTorch 2 and the CPU, as bench.compare_original says) through bench/run_original.py.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

from bench.data_pipeline import cpu_model
from xlm.data.binarized import load_binarized, save_original

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ("--emb_dim 32 --n_layers 1 --n_heads 4 --batch_size 8 --bptt 16 --max_len 40 --epoch_size 160 "
        "--max_epoch 1 --tokens_per_batch -1")
MEMORY = "--use_memory true --mem_n_keys 16 --mem_k_dim 16 --mem_heads 2 --mem_knn 4"
NOISE = "--word_shuffle 3 --word_dropout 0.1 --word_blank 0.1"
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
    "mt_memory": f"--lgs en-fr --encoder_only false --mt_steps en-fr {MEMORY} --mem_enc_positions 0 "
                 "--mem_dec_positions 0",
    "clm_asm": "--lgs en --clm_steps en --asm true --asm_cutoffs 2000,4000 --share_inout_emb false",
    "asm_with_shared_embeddings": "--lgs en --clm_steps en --asm true --asm_cutoffs 2000,4000",
    "mlm_context": "--lgs en-fr --mlm_steps en --context_size 1",
    "mlm_stopping": "--lgs en --mlm_steps en --validation_metrics _valid_mlm_ppl "
                    "--stopping_criterion _valid_mlm_ppl,2",
    "eval_only": "--lgs en --mlm_steps en --eval_only true",
    "lambda_schedules": "--lgs en-fr --clm_steps en --mlm_steps fr --lambda_clm 0:0,10:1 --lambda_mlm 0.5",
    "save_periodic": "--lgs en --mlm_steps en --save_periodic 1 --max_epoch 3 --validation_metrics _valid_mlm_ppl",
    "debug_train": "--lgs en-fr --mlm_steps en,en-fr --debug_train true",
    "tlm_tokens_per_batch": "--lgs en-fr --mlm_steps en-fr --tokens_per_batch 300",
    "mt_max_batch_size": "--lgs en-fr --encoder_only false --mt_steps en-fr --tokens_per_batch 300 "
                         "--max_batch_size 8 --lambda_mt 0:1,10:0.5",
    "vocab_limits": "--lgs en --mlm_steps en --min_count 5 --max_vocab 3000 --split_data false",
    "sgd_clip": "--lgs en --mlm_steps en --optimizer sgd,lr=0.1 --clip_grad_norm 1",
    "adam_weight_decay": "--lgs en --clm_steps en --optimizer adam,lr=0.001,weight_decay=0.01",
    "adam_cosine": "--lgs en --clm_steps en --optimizer adam_cosine,warmup_updates=5,lr=0.001,init_period=20",
    "unknown_optimizer_option": "--lgs en --clm_steps en --optimizer adam_cosine,lr=0.001,max_update=50",
    "rmsprop": "--lgs en --clm_steps en --optimizer rmsprop,lr=0.001",
    "adagrad": "--lgs en --clm_steps en --optimizer adagrad,lr=0.01",
}
# sets the original refuses (with an AssertionError) and xlm runs, and why
XLM_ALSO_RUNS = {
    "mlm_float_sum": ("--lgs en --mlm_steps en --word_mask_keep_rand 0.7,0.2,0.1",
                      "the original asserts sum == 1 exactly, and 0.7 + 0.2 + 0.1 is 0.9999999999999999 in floats"),
    "accumulate_without_amp": ("--lgs en --mlm_steps en --accumulate_gradients 2",
                               "the original accumulates gradients only under apex (--amp >= 0)"),
}


def metric_names(output):
    logs = [line.split("__log__:", 1)[1] for line in output.splitlines() if "__log__:" in line]
    return sorted(json.loads(logs[-1])) if logs else None


def run(side, cwd, command, flags, dump, data):
    start = time.perf_counter()
    p = subprocess.run(command + ["--exp_name", side, "--dump_path", dump, "--data_path", data] + flags.split(),
                       cwd=cwd, capture_output=True, text=True)
    output = p.stdout + p.stderr
    return {"rc": p.returncode, "metrics": metric_names(output), "seconds": round(time.perf_counter() - start, 1),
            "files": written_files(os.path.join(dump, side)), "last_line": (output.strip().splitlines() or [""])[-1][-300:]}


def written_files(experiments):
    """The files of the run's folder (the original names it by a random exp_id), the id left out."""
    return sorted(os.path.relpath(os.path.join(folder, name), run_folder)
                  for run_folder in glob.glob(os.path.join(experiments, "*"))
                  for folder, _, names in os.walk(run_folder) for name in names)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--original", default="/work/orig-cpu", help="the original XLM, patched for the CPU")
    parser.add_argument("--data_path", default=os.path.join(REPO, "data", "processed", "sample"))
    parser.add_argument("--only", help="comma-separated case names")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.original, "train.py")):
        sys.exit(f"--original {args.original}: no train.py there")
    files = glob.glob(os.path.join(args.data_path, "*.pth"))
    if not files:
        sys.exit(f"--data_path {args.data_path}: no .pth files (run `PRETRAIN=0 bash run-sample.sh` first)")
    cases = {**CASES, **{name: flags for name, (flags, _) in XLM_ALSO_RUNS.items()}}
    names = args.only.split(",") if args.only else list(cases)
    unknown = [n for n in names if n not in cases]
    if unknown:
        sys.exit(f"--only: no case {', '.join(unknown)}; the cases are {', '.join(cases)}")
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        os.makedirs(data)
        for f in files:
            save_original(load_binarized(f), os.path.join(data, os.path.basename(f)))
        result = {"benchmark": "compare_flags", "command": "python -m bench.compare_flags " + " ".join(sys.argv[1:]),
                  "original": os.path.abspath(args.original), "data": os.path.abspath(args.data_path),
                  "device_name": cpu_model(), "common_flags": TINY, "cases": {}}
        for name in names:
            flags = f"{TINY} {cases[name]}"
            dump = os.path.join(tmp, "dump", name)
            launcher = [sys.executable, os.path.join(REPO, "bench", "run_original.py")]
            original = run("original", args.original, launcher, flags, dump, data)
            ours = run("xlm", REPO, [sys.executable, "train.py"], flags, dump, data)
            # a refused command: the original has written params.pkl and train.log, xlm nothing
            same = (original["rc"] == ours["rc"] and original["metrics"] == ours["metrics"]
                    and (original["rc"] != 0 or set(original["files"]) <= set(ours["files"])))
            case = result["cases"][name] = {"flags": cases[name], "same": same, "original": original, "xlm": ours}
            if name in XLM_ALSO_RUNS:
                case["expected"] = "the original fails, xlm runs: " + XLM_ALSO_RUNS[name][1]
                case["same"] = same = "AssertionError" in original["last_line"] and ours["rc"] == 0
            print(f"{name}: {'as expected' if same else 'DIFFERENT'} (exit {original['rc']} / {ours['rc']}, "
                  f"{original['seconds']} / {ours['seconds']} s)", file=sys.stderr, flush=True)
    result["all_as_expected"] = all(c["same"] for c in result["cases"].values())
    print(json.dumps(result, indent=1))
    sys.exit(0 if result["all_as_expected"] else 1)


if __name__ == "__main__":
    main()
