"""The toy reproductions of §5.5 and §5.6 end to end at a tiny size (the numbers mean nothing here)."""
import json

from conftest import ROOT, run

TINY = ["N_MONO=300", "VOCAB_SIZE=40", "EPOCHS=1", "EPOCH_SIZE=128", "SEEDS=1"]


def test_low_resource_lm_end_to_end_and_rerun(tmp_path):
    env = ["env", f"OUT={tmp_path}", "N_LOW=100", "CELLS=la:la la+lb:la,lb", *TINY]
    first = run([*env, "bash", str(ROOT / "tools" / "toy_low_resource_lm.sh")]).stdout
    table = [line for line in first.splitlines() if line.startswith("|")]
    assert table[0] == "| training data | valid ppl (la) | test ppl (la) |"
    assert [row.split(" | ")[0] for row in table[2:]] == ["| la", "| la+lb"]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["seeds"] == [1] and results["lowest"]
    ppl = results["rows"]["la+lb"]["valid_la_clm_ppl"]["values"]
    assert len(ppl) == 1 and 1 < ppl[0] < 1000
    # the low-resource corpus is the first N_LOW sentences of la; lb shares words with la, lc does not
    raw = tmp_path / "seed1" / "raw"
    assert len((raw / "low.la").read_text().splitlines()) == 100
    words = {lg: set((raw / "mono" / f"train.{lg}").read_text().split()) for lg in ("la", "lb", "lc")}
    assert len(words["la"] & words["lb"]) > len(words["la"] & words["lc"]) + 20
    # a rerun trains nothing and prints the same table
    again = run([*env, "bash", str(ROOT / "tools" / "toy_low_resource_lm.sh")]).stdout
    assert [line for line in again.splitlines() if line.startswith("|")] == table


def test_word_embeddings_end_to_end(tmp_path):
    out = run(["env", f"OUT={tmp_path}", *TINY, "bash", str(ROOT / "tools" / "toy_word_embeddings.sh")]).stdout
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert rows[0] == "| embeddings | cosine similarity | L2 distance | P@1 la→lb |"
    assert [row.split(" | ")[0] for row in rows[1:]] == ["| joint MLM", "| each language alone"]
    lexicon = (tmp_path / "seed1" / "raw" / "lexicon.la-lb.txt").read_text().splitlines()
    assert len(lexicon) == 40 and all(len(line.split()) == 2 for line in lexicon)  # the open-class concepts
    for name in ("joint", "separate"):
        scores = json.loads((tmp_path / "seed1" / f"{name}.json").read_text())
        assert scores["pairs"] + scores["pairs_skipped"] == 40 and 0 <= scores["p_at_1"] <= 1


def test_a_failed_job_stops_a_toy_script_after_the_others(tmp_path):
    """tools/jobs.sh: with 2 jobs at a time, the failure of the first ends neither the others nor the
    script before they end; wait_jobs then fails, and set -e stops the script there."""
    script = f"""set -euo pipefail
source tools/jobs.sh
run_job bash -c 'sleep 0.2; exit 3'
run_job bash -c 'sleep 0.1; touch {tmp_path}/b'
run_job bash -c 'sleep 0.5; touch {tmp_path}/c'
wait_jobs
echo tables"""
    proc = run(["env", "JOBS=2", "bash", "-c", script], check=False)
    assert proc.returncode == 1 and "tables" not in proc.stdout
    assert "1 job(s) failed" in proc.stderr and {p.name for p in tmp_path.iterdir()} == {"b", "c"}
    assert run(["bash", "-c", "set -e; source tools/jobs.sh; run_job true; run_job true; "
                              "wait_jobs; echo ok"]).stdout == "ok\n"
