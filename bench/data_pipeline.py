#!/usr/bin/env python
"""Throughput of the text side of the data pipeline: apply BPE, binarize, learn BPE.

    python bench/data_pipeline.py [--lines 500000] [--learn-lines 200000] [--novel-fraction 0.1] [--repeats 3]

Inputs are built from the tokenized sample training text (data/processed/sample/tok/train.en and
train.fr, made by `bash run-sample.sh`) repeated to --lines lines, in two variants:

  repeated  the sample lines over and over. Every word after the first copy is a hit in the BPE
            applier's per-word segmentation cache, so this is a best case, not a realistic one.
  mixed     the same lines with --novel-fraction of the tokens replaced by random words (letters
            drawn from the sample's own letter frequencies), so the cache keeps seeing new words,
            the way the long tail of a real corpus keeps growing its vocabulary.

BPE apply and learning run on both implementations of tools/fastbpe: the compiled fastBPE
(tools/install_fastbpe.sh; skipped when not built) and the Python one (xlm/data/bpe.py), checking that
they write the same bytes. Binarize runs at threads=1 and threads=all cores. Apply and binarize run
--repeats times each, reporting the fastest run (wall seconds) and its CPU seconds (this process +
children): CPU time shows the work done even when other jobs share the machine. Learning runs once.
A pure-Python spin on every core, before and after, records how much parallelism the machine
actually gave (`parallel_check`). The single JSON result goes to stdout, progress to stderr.
"""
import argparse
import filecmp
import json
import os
import platform
import random
import resource
import shlex
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing, too

from xlm.data import bpe, fastbpe  # noqa: E402
from xlm.data.binarized import binarize  # noqa: E402
from xlm.data.dictionary import Dictionary  # noqa: E402

SAMPLE = os.path.join(ROOT, "data", "processed", "sample")


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- machine

def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def memory_gib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    return None


def version_of(module_name):
    try:
        return __import__(module_name).__version__
    except (ImportError, AttributeError):
        return None


def machine_info():
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gib": memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": version_of("torch"),
        "numpy": version_of("numpy"),
        "fastbpe_binary": bool(fastbpe.binary()),
    }


def _spin(n):
    total = 0
    for i in range(n):
        total += i * i
    return total


def parallel_check(n=10_000_000):
    """How many cores' worth of pure-Python work the machine gives right now: the same loop once
    alone, then once per core concurrently. Ideal = the number of cores; less means other load (or
    vCPUs that share a physical core), which caps any threads=all speedup measured here."""
    from multiprocessing import Pool

    cores = os.cpu_count() or 1
    start = time.perf_counter()
    _spin(n)
    alone = time.perf_counter() - start
    with Pool(cores) as pool:
        start = time.perf_counter()
        pool.map(_spin, [n] * cores)
        together = time.perf_counter() - start
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return {"cores": cores, "effective_parallelism": round(cores * alone / together, 2),
            "loadavg_1_5_15": [float(x) for x in load]}


def command_line():
    """The command as typed from the repository root, so results can be reproduced."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)
    return shlex.join(["python", script] + sys.argv[1:])


# ----------------------------------------------------------------------------- inputs

def read_lines(paths):
    lines = []
    for path in paths:
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: run `bash run-sample.sh` first")
        with open(path, encoding="utf-8") as f:
            lines += f.read().splitlines()
    return lines


def cycled(lines, n):
    """The first n lines of lines + lines + ..."""
    for i in range(n):
        yield lines[i % len(lines)]


def letter_pool(lines):
    """All letters of the sample text: drawing from it reproduces the sample's letter frequencies
    (accented letters included), so novel words segment into plausible BPE units."""
    return [c for line in lines for c in line if c.isalpha()]


def random_word(rng, letters):
    return "".join(rng.choices(letters, k=rng.randint(4, 12)))


def write_repeated(lines, n, path):
    with open(path, "w", encoding="utf-8") as f:
        for line in cycled(lines, n):
            f.write(line + "\n")


def write_mixed(lines, n, path, novel_fraction, seed):
    """Like write_repeated, with each token replaced by a random word with probability novel_fraction."""
    rng = random.Random(seed)
    letters = letter_pool(lines)
    with open(path, "w", encoding="utf-8") as f:
        for line in cycled(lines, n):
            words = [random_word(rng, letters) if rng.random() < novel_fraction else w for w in line.split()]
            f.write(" ".join(words) + "\n")


def text_stats(path):
    """Lines, whitespace tokens and distinct tokens of a text file."""
    n_lines = n_tokens = 0
    distinct = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            words = line.split()
            n_lines += 1
            n_tokens += len(words)
            distinct.update(words)
    return {"lines": n_lines, "tokens": n_tokens, "distinct_tokens": len(distinct)}


def head(path, n, out_path):
    with open(path, encoding="utf-8") as f, open(out_path, "w", encoding="utf-8") as out:
        for i, line in enumerate(f):
            if i == n:
                break
            out.write(line)


# ----------------------------------------------------------------------------- measurements

def cpu_seconds():
    """User + system CPU time of this process and its reaped children (the Pool workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(fn, *args, **kwargs):
    """(result, wall seconds, CPU seconds): CPU time shows the work done whatever else runs on the
    machine, and CPU > wall shows the cores actually used."""
    start_cpu, start = cpu_seconds(), time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start, cpu_seconds() - start_cpu


def best_of(repeats, fn, *args, **kwargs):
    """Run `repeats` times; (last result, best wall seconds, CPU seconds of that run, all walls).
    The fastest run is the one least disturbed by whatever else the machine was doing."""
    runs = [timed(fn, *args, **kwargs) for _ in range(repeats)]
    _, seconds, cpu = min(runs, key=lambda run: run[1])
    return runs[-1][0], seconds, cpu, [round(run[1], 3) for run in runs]


def thread_counts():
    return sorted({1, os.cpu_count() or 1})


def rates(seconds, cpu, lines, tokens_in, tokens_out=None):
    out = {"seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3), "lines_per_s": round(lines / seconds),
           "tokens_per_s": round(tokens_in / seconds)}
    if tokens_out is not None:
        out["subword_tokens_per_s"] = round(tokens_out / seconds)
    return out


def implementations():
    """tools/fastbpe's two implementations: (name, applybpe(out, in, codes), learnbpe(n, paths, out))."""
    python = ("python", lambda out, inp, codes: bpe.apply_bpe_file(inp, out, codes),
              lambda n, paths, out: out.write(python_codes(n, paths)))
    compiled = ("fastbpe", fastbpe.applybpe, fastbpe.learnbpe)
    return [compiled, python] if fastbpe.binary() else [python]


def python_codes(n_codes, paths):
    return "".join(f"{a} {b} {c}\n" for a, b, c in bpe.learn_bpe(paths, n_codes)).encode("utf-8")


def bench_apply(name, text_path, stats, codes, workdir, repeats):
    """BPE-apply one input with each implementation; check that they write the same file."""
    results, outputs = [], []
    for impl, apply, _ in implementations():
        out = os.path.join(workdir, f"{name}.bpe.{impl}")
        log(f"apply BPE: {name}, {impl}")
        _, seconds, cpu, walls = best_of(repeats, apply, out, text_path, codes)
        out_stats = text_stats(out)
        results.append({"input": name, "implementation": impl, "lines": stats["lines"], "tokens": stats["tokens"],
                        "distinct_tokens": stats["distinct_tokens"], "subword_tokens": out_stats["tokens"],
                        **rates(seconds, cpu, stats["lines"], stats["tokens"], out_stats["tokens"]),
                        "all_seconds": walls})
        outputs.append(out)
        log(f"  {seconds:.1f}s, {results[-1]['lines_per_s']} lines/s")
    identical = all(filecmp.cmp(outputs[0], o, shallow=False) for o in outputs[1:])
    for r in results:
        r["outputs_identical_across_implementations"] = identical
    return results, outputs[0]


def bench_binarize(name, bpe_path, dico, workdir, repeats):
    results = []
    for threads in thread_counts():
        out = os.path.join(workdir, f"{name}.t{threads}.pth")
        log(f"binarize: {name}, threads={threads}")
        corpus, seconds, cpu, walls = best_of(repeats, binarize, bpe_path, dico, out, threads=threads)
        results.append({"input": name, "threads": threads, "lines": len(corpus), "tokens": int(corpus.n_words),
                        "unk_percent": round(100 * corpus.n_unk / max(corpus.n_words, 1), 3),
                        **rates(seconds, cpu, len(corpus), corpus.n_words), "all_seconds": walls})
        log(f"  {seconds:.1f}s, {results[-1]['tokens_per_s']} tokens/s")
        del corpus
        os.remove(out)
    return results


def bench_learn(name, text_path, n_lines, n_codes, workdir):
    """Learn codes on the first n_lines with each implementation; check that they are the same."""
    sub = os.path.join(workdir, f"{name}.head{n_lines}")
    head(text_path, n_lines, sub)
    stats = text_stats(sub)
    results, outputs = [], []
    for impl, _, learn in implementations():
        log(f"learn {n_codes} BPE codes: {name}, {stats['lines']} lines, {impl}")
        with open(os.path.join(workdir, f"codes.{impl}"), "wb") as out:
            _, seconds, cpu = timed(learn, n_codes, [sub], out)
        with open(out.name, "rb") as f:
            outputs.append(f.read())
        log(f"  {seconds:.1f}s")
        results.append({"input": name, "implementation": impl, "n_codes": n_codes,
                        "codes_learned": outputs[-1].count(b"\n"), "seconds": round(seconds, 3),
                        "cpu_seconds": round(cpu, 3), "lines_per_s": round(stats["lines"] / seconds), **stats})
    for r in results:
        r["codes_identical_across_implementations"] = all(o == outputs[0] for o in outputs)
    return results


# ----------------------------------------------------------------------------- main

def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=500_000, help="lines of each generated input")
    parser.add_argument("--learn-lines", type=int, default=200_000, help="lines to learn BPE on")
    parser.add_argument("--n-codes", type=int, default=8000, help="BPE codes to learn")
    parser.add_argument("--novel-fraction", type=float, default=0.1,
                        help="fraction of tokens replaced by random words in the 'mixed' input")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each apply/binarize measurement, the fastest reported (learning runs once)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample", default=SAMPLE, help="output of run-sample.sh (tok/, codes, vocab)")
    parser.add_argument("--workdir", help="scratch directory (default: a temporary one, removed at the end)")
    args = parser.parse_args()

    total_start = time.perf_counter()
    workdir = args.workdir or tempfile.mkdtemp(prefix="xlm-bench-")
    os.makedirs(workdir, exist_ok=True)
    codes, vocab = os.path.join(args.sample, "codes"), os.path.join(args.sample, "vocab")
    try:
        log("checking how much parallelism the machine gives now")
        check_before = parallel_check()
        lines = read_lines([os.path.join(args.sample, "tok", f"train.{lg}") for lg in ("en", "fr")])
        inputs = {"repeated": os.path.join(workdir, "repeated.tok"), "mixed": os.path.join(workdir, "mixed.tok")}
        log(f"writing inputs of {args.lines} lines from {len(lines)} sample lines")
        write_repeated(lines, args.lines, inputs["repeated"])
        write_mixed(lines, args.lines, inputs["mixed"], args.novel_fraction, args.seed)
        stats = {name: text_stats(path) for name, path in inputs.items()}

        apply_results, bpe_outputs = [], {}
        for name, path in inputs.items():
            results, bpe_outputs[name] = bench_apply(name, path, stats[name], codes, workdir, args.repeats)
            apply_results += results

        dico = Dictionary.read_vocab(vocab)
        binarize_results = []
        for name, path in bpe_outputs.items():
            binarize_results += bench_binarize(name, path, dico, workdir, args.repeats)

        learn_results = [r for name, path in inputs.items()
                         for r in bench_learn(name, path, args.learn_lines, args.n_codes, workdir)]
        check_after = parallel_check()
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    print(json.dumps({
        "benchmark": "data_pipeline",
        "command": command_line(),
        "machine": machine_info(),
        "parallel_check": {"before": check_before, "after": check_after},
        "config": {"lines": args.lines, "learn_lines": args.learn_lines, "n_codes": args.n_codes,
                   "novel_fraction": args.novel_fraction, "seed": args.seed, "repeats": args.repeats,
                   "sample_lines": len(lines), "codes": os.path.relpath(codes, ROOT),
                   "vocab": os.path.relpath(vocab, ROOT), "thread_counts": thread_counts()},
        "inputs": stats,
        "bpe_apply": apply_results,
        "binarize": binarize_results,
        "bpe_learn": learn_results,
        "total_seconds": round(time.perf_counter() - total_start, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
