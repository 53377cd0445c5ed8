#!/usr/bin/env python
"""Peak memory of one full shuffled pass of a StreamDataset, for a corpus and one 10x larger.

    python bench/stream_rss.py [--small-tokens 2000000] [--scale 10] [--batch-size 32] [--bptt 256]

Corpora are built the public way: the BPE'd sample training text (data/processed/sample/train.en
and train.fr, from `bash run-sample.sh`) is repeated to the wanted number of tokens, binarized with
`xlm.data.binarized.binarize` against the sample vocabulary, and also saved in the original XLM's
.pth layout with `save_original`. Each (corpus, format) is then measured in a fresh Python process:

  rss_after_import_mib   resident memory once torch and xlm.data are imported
  rss_after_open_mib     ... once the corpus is opened and the dataset and iterator are built
  peak_rss_open_mib      ru_maxrss after opening: the peak of importing and opening
  peak_rss_iteration_mib the peak while iterating only (VmHWM, reset after opening)
  peak_rss_mib           the whole process's peak, the larger of the two
  positions_mib          the corpus' (n_sentences, 2) int64 positions, which both formats hold in memory

Tokens count the ids on disk, EOS included. The single JSON result goes to stdout, progress to stderr.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "data", "processed", "sample")
FORMATS = ("xlm", "original")


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def mib(kib):
    return round(kib / 1024, 1)


def proc_status_kib(field):
    """VmRSS (current resident set) or VmHWM (its peak) of this process, in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss():
    """Reset VmHWM to the current RSS (Linux >= 4.0), so it then measures one phase only."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------- child: build

def build(args):
    """Write ~args.tokens tokens of repeated BPE'd sample text, binarize it (ours), save the original too."""
    sys.path.insert(0, ROOT)
    from xlm.data.binarized import binarize, save_original
    from xlm.data.dictionary import Dictionary

    lines = []
    for lg in ("en", "fr"):
        path = os.path.join(args.sample, f"train.{lg}")
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: run `bash run-sample.sh` first")
        with open(path, encoding="utf-8") as f:
            lines += f.read().splitlines()
    text = args.out + ".txt"
    n_tokens = 0  # words + one EOS per sentence, as stored
    with open(text, "w", encoding="utf-8") as f:
        while n_tokens < args.tokens:
            for line in lines:
                f.write(line + "\n")
                n_tokens += len(line.split()) + 1
                if n_tokens >= args.tokens:
                    break
    start = time.perf_counter()
    corpus = binarize(text, Dictionary.read_vocab(os.path.join(args.sample, "vocab")), args.out + ".xlm.pth")
    binarize_seconds = time.perf_counter() - start
    save_original(corpus, args.out + ".original.pth")
    os.remove(text)
    print(json.dumps({"tokens": len(corpus.sentences), "sentences": len(corpus),
                      "binarize_seconds": round(binarize_seconds, 2),
                      "file_mib": {fmt: round(os.path.getsize(f"{args.out}.{fmt}.pth") / 2**20, 1)
                                   for fmt in FORMATS}}))


# ----------------------------------------------------------------------------- child: measure

def measure(args):
    """One full shuffled pass over the corpus; only this process's memory is reported."""
    sys.path.insert(0, ROOT)
    import torch  # noqa: F401  (imported before the first reading, so it counts as import cost)
    from xlm.data import BatchIterator, StreamDataset, load_binarized

    rss_import = proc_status_kib("VmRSS")
    start = time.perf_counter()
    corpus = load_binarized(args.path)
    dataset = StreamDataset(corpus, args.batch_size, args.bptt)
    iterator = BatchIterator(dataset, seed=0, shuffle=True, repeat=False)
    open_seconds = time.perf_counter() - start
    rss_open = proc_status_kib("VmRSS")
    # Resetting VmHWM also resets what ru_maxrss reports from then on (both read the same kernel
    # high-water mark), so the lifetime peak is the larger of the readings before and after.
    peak_open = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm_reset = reset_peak_rss()

    start = time.perf_counter()
    n_batches = n_batch_tokens = checksum = 0
    for batch in iterator:
        n_batches += 1
        n_batch_tokens += batch.x.numel()
        checksum += int(batch.x.sum())  # touch every id, as a model would
    pass_seconds = time.perf_counter() - start
    assert n_batches == dataset.n_batches, (n_batches, dataset.n_batches)

    peak_iteration = proc_status_kib("VmHWM") if hwm_reset else None
    peak_end = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    in_memory = corpus.sentences.nbytes if hasattr(corpus.sentences, "nbytes") else 0
    print(json.dumps({
        "sentences_storage": type(corpus.sentences).__name__,  # FileArray: read on demand; ndarray: in memory
        "tokens": len(corpus.sentences), "sentences": len(corpus),
        "batches": n_batches, "batch_tokens": n_batch_tokens, "checksum": checksum,
        "open_seconds": round(open_seconds, 3), "pass_seconds": round(pass_seconds, 3),
        "rss_after_import_mib": mib(rss_import),
        "rss_after_open_mib": mib(rss_open),
        "peak_rss_open_mib": mib(peak_open),
        "peak_rss_iteration_mib": mib(peak_iteration) if hwm_reset else None,
        "rss_end_mib": mib(proc_status_kib("VmRSS")),
        "peak_rss_mib": mib(max(peak_open, peak_end)),
        "positions_mib": round(corpus.positions.nbytes / 2**20, 1),
        "in_memory_tokens_mib": round(in_memory / 2**20, 1),
    }))


# ----------------------------------------------------------------------------- parent

def run_child(*argv):
    """Run this script as a fresh interpreter and return the JSON it prints.

    The parent stays small on purpose: a child started with vfork/posix_spawn (what subprocess
    uses on Linux) inherits the parent's ru_maxrss through exec, so a large parent would inflate
    every child's peak. Building the corpora therefore runs in a child process too."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *argv], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out)


def machine_info():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from data_pipeline import machine_info as info  # imports xlm.data.bpe: fine in the parent only

    return info()


def ratio(a, b):
    return round(a / b, 2) if b else None


def run(args):
    total_start = time.perf_counter()
    workdir = args.workdir or tempfile.mkdtemp(prefix="xlm-bench-rss-")
    os.makedirs(workdir, exist_ok=True)
    sizes = {"small": args.small_tokens, "large": args.small_tokens * args.scale}
    corpora, measurements = {}, {}
    try:
        for name, tokens in sizes.items():
            log(f"build {name} corpus (~{tokens} tokens)")
            prefix = os.path.join(workdir, name)
            corpora[name] = run_child("_build", "--tokens", str(tokens), "--out", prefix, "--sample", args.sample)
            for fmt in FORMATS:
                log(f"measure {name} corpus, {fmt} format")
                measurements[f"{name}/{fmt}"] = m = run_child(
                    "_measure", f"{prefix}.{fmt}.pth", "--batch-size", str(args.batch_size), "--bptt", str(args.bptt))
                log(f"  {m['batches']} batches, peak {m['peak_rss_mib']} MiB "
                    f"(after import {m['rss_after_import_mib']})")
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    # Costs are differences from the import baseline, i.e. what the data itself costs: opening
    # (what stays resident once the corpus is open) and iterating (the peak above that).
    comparison = {}
    for fmt in FORMATS:
        pair = {name: measurements[f"{name}/{fmt}"] for name in sizes}
        costs = {
            "peak_rss_mib": {n: m["peak_rss_mib"] for n, m in pair.items()},
            "peak_above_import_mib": {n: round(m["peak_rss_mib"] - m["rss_after_import_mib"], 1)
                                      for n, m in pair.items()},
            "open_cost_mib": {n: round(m["rss_after_open_mib"] - m["rss_after_import_mib"], 1)
                              for n, m in pair.items()},
            "iteration_cost_mib": {n: round(m["peak_rss_iteration_mib"] - m["rss_after_open_mib"], 1)
                                   if m["peak_rss_iteration_mib"] is not None else None for n, m in pair.items()},
        }
        comparison[fmt] = {"tokens_ratio": ratio(pair["large"]["tokens"], pair["small"]["tokens"])}
        for key, values in costs.items():
            comparison[fmt][key] = values
            if None not in values.values():
                comparison[fmt][key.replace("_mib", "_ratio")] = ratio(values["large"], values["small"])

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from data_pipeline import command_line

    print(json.dumps({
        "benchmark": "stream_rss",
        "command": command_line(),
        "machine": machine_info(),
        "config": {"small_tokens": args.small_tokens, "scale": args.scale, "batch_size": args.batch_size,
                   "bptt": args.bptt, "shuffle": True, "passes": 1, "sample": os.path.relpath(args.sample, ROOT)},
        "corpora": corpora,
        "measurements": measurements,
        "comparison": comparison,
        "total_seconds": round(time.perf_counter() - total_start, 1),
    }, indent=2))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small-tokens", type=int, default=2_000_000, help="tokens of the small corpus")
    parser.add_argument("--scale", type=int, default=10, help="the large corpus is this many times larger")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bptt", type=int, default=256)
    parser.add_argument("--sample", default=SAMPLE, help="output of run-sample.sh (train.en, train.fr, vocab)")
    parser.add_argument("--workdir", help="scratch directory (default: a temporary one, removed at the end)")
    # internal: the per-measurement child processes
    sub = sys.argv[1] if len(sys.argv) > 1 else None
    if sub == "_build":
        parser.add_argument("--tokens", type=int, required=True)
        parser.add_argument("--out", required=True)
        return build(parser.parse_args(sys.argv[2:]))
    if sub == "_measure":
        parser.add_argument("path")
        return measure(parser.parse_args(sys.argv[2:]))
    return run(parser.parse_args())


if __name__ == "__main__":
    main()
