"""tools/seed_table.py: mean ± sample sd over seeds, from train.logs and JSON score files."""
import json
import statistics

from conftest import ROOT, load_script, main_in_process, python

SCRIPT = ROOT / "tools" / "seed_table.py"
seed_table = load_script(SCRIPT)


def run_table(capsys, *args):
    return main_in_process(seed_table.main, capsys, *args)


def write_log(path, scores):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["INFO - 01/01/25 00:00:00 - 0:00:01 - ============ Starting epoch 0 ... ============"]
    lines += [f"INFO - 01/01/25 00:00:02 - 0:00:02 - __log__:{json.dumps(s)}" for s in scores]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_mean_and_sample_sd_per_row_and_column(tmp_path, capsys):
    bleu = {"a": [10.0, 12.0, 17.0], "b": [1.0, 1.5, 0.5]}
    for seed in (1, 2, 3):
        # two epochs; the table takes the last one, or the best valid one with --best
        write_log(tmp_path / f"seed{seed}" / "a" / "train.log",
                  [{"epoch": 0, "valid_bleu": 99.0, "test_bleu": 0.0},
                   {"epoch": 1, "valid_bleu": bleu["a"][seed - 1], "test_bleu": seed * 2.0}])
        (tmp_path / f"b{seed}.json").write_text(json.dumps({"valid_bleu": bleu["b"][seed - 1],
                                                             "test_bleu": 1.0}))
    out = tmp_path / "results.json"
    proc = run_table(capsys, "--seeds", "3", "--columns", "valid_bleu=valid BLEU,test_bleu", "--first", "init",
                  "--digits", "2", "--json", out, f"a={tmp_path}/seed{{seed}}/a/train.log",
                  f"b={tmp_path}/b{{seed}}.json")
    m, s = statistics.mean(bleu["a"]), statistics.stdev(bleu["a"])  # stdev: n - 1
    assert proc.stdout.splitlines() == [
        "| init | valid BLEU | test_bleu |", "|---|---|---|",
        f"| a | {m:.2f} ± {s:.2f} | 4.00 ± 2.00 |",
        "| b | 1.00 ± 0.50 | 1.00 ± 0.00 |"]
    saved = json.loads(out.read_text())
    assert saved["seeds"] == [1, 2, 3]
    assert saved["rows"]["a"]["valid_bleu"]["values"] == bleu["a"]
    assert abs(saved["rows"]["a"]["valid_bleu"]["sd"] - s) < 1e-12
    best = run_table(capsys, "--seeds", "2", "--columns", "test_bleu", "--best", "valid_bleu",
                  f"a={tmp_path}/seed{{seed}}/a/train.log").stdout.splitlines()
    assert best[2] == "| a | 0.00 ± 0.00 |"  # epoch 0 of both seeds has the best valid BLEU
    lowest = run_table(capsys, "--seeds", "2", "--columns", "test_bleu", "--best", "valid_bleu", "--lowest",
                       f"a={tmp_path}/seed{{seed}}/a/train.log").stdout.splitlines()
    assert lowest[2] == f"| a | 3.00 ± {statistics.stdev([2.0, 4.0]):.2f} |"  # epoch 1: seed * 2


def test_one_seed_prints_the_value_alone_and_missing_inputs_are_named(tmp_path, capsys):
    write_log(tmp_path / "s1.log", [{"epoch": 0, "ppl": 7.25}])
    proc = run_table(capsys, "--seeds", "1", "--columns", "ppl", f"x={tmp_path}/s{{seed}}.log")
    assert proc.stdout.splitlines()[2] == "| x | 7.25 |"
    proc = run_table(capsys, "--seeds", "2", "--columns", "ppl", f"x={tmp_path}/s{{seed}}.log")
    assert proc.returncode == 1 and f"{tmp_path}/s2.log: missing (row x, seed 2)" in proc.stderr
    proc = python(SCRIPT, "--seeds", "1", "--columns", "acc", f"x={tmp_path}/s{{seed}}.log", check=False)
    assert proc.returncode == 1 and "no metric acc" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "cut").mkdir()  # a log cut in the middle of its line
    (tmp_path / "cut" / "s1.log").write_text("INFO - 01/01/25 00:00:02 - 0:00:02 - __log__:{\"epoch\": 0, \"p\n")
    proc = run_table(capsys, "--seeds", "1", "--columns", "ppl", f"x={tmp_path}/cut/s{{seed}}.log")
    assert proc.returncode == 1 and f"{tmp_path}/cut/s1.log:1: __log__ line is not JSON" in proc.stderr
