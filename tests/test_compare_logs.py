"""tools/compare_logs.py: per-epoch timing, throughput and metrics of train.log files, side by side."""
from conftest import ROOT, python

# the original XLM's log lines (its LogFormatter and print_stats), two epochs
ORIGINAL_LOG = """\
INFO - 12/02/26 10:00:00 - 0:00:00 - ============ Initialized logger ============
INFO - 12/02/26 10:00:03 - 0:00:03 - ============ Starting epoch 0 ... ============
INFO - 12/02/26 10:00:05 - 0:00:05 -       5 -  100.00 sent/s -  1000.00 words/s - MLM-en:  5.0 -  - model LR: 1.0e-03
INFO - 12/02/26 10:00:08 - 0:00:08 -      10 -  300.00 sent/s -  3000.00 words/s - MLM-en:  4.0 -  - model LR: 1.0e-03
INFO - 12/02/26 10:00:10 - 0:00:10 - ============ End of epoch 0 ============
INFO - 12/02/26 10:00:12 - 0:00:12 - __log__:{"epoch": 0, "valid_mlm_ppl": 300.5, "test_mlm_ppl": 310.0}
INFO - 12/02/26 10:00:12 - 0:00:12 - ============ Starting epoch 1 ... ============
INFO - 12/02/26 10:00:14 - 0:00:14 -      15 -  100.00 sent/s -  4000.00 words/s - MLM-en:  3.0 -  - model LR: 1.0e-03
INFO - 12/02/26 10:00:20 - 0:00:20 -      20 -  100.00 sent/s -  6000.00 words/s - MLM-en:  2.9 -  - model LR: 1.0e-03
INFO - 12/02/26 10:01:12 - 0:01:12 - ============ End of epoch 1 ============
INFO - 12/02/26 10:01:13 - 0:01:13 - __log__:{"epoch": 1, "valid_mlm_ppl": 120.25, "test_mlm_ppl": 130.0}
"""
# xlm's progress line has more fields after the losses; one epoch only
XLM_LOG = """\
INFO - 12/02/26 11:00:01 - 0:00:01 - ============ Starting epoch 0 ... ============
INFO - 12/02/26 11:00:02 - 0:00:02 -       5 -  100.00 sent/s -  500.00 words/s - MLM-en:  5.0 - model LR: 1.0e-03 - \
epoch 0 - 80/160 sentences - ETA epoch 0:00:01
INFO - 12/02/26 11:00:04 - 0:00:04 - ============ End of epoch 0 ============
INFO - 12/02/26 11:00:04 - 0:00:04 - __log__:{"epoch": 0, "valid_mlm_ppl": 400.0, "test_mlm_ppl": 410.0}
"""


def test_side_by_side(tmp_path):
    (tmp_path / "a.log").write_text(ORIGINAL_LOG)
    (tmp_path / "b.log").write_text(XLM_LOG)
    out = python(ROOT / "tools" / "compare_logs.py", tmp_path / "a.log", tmp_path / "b.log",
                 "--labels", "orig,xlm").stdout
    rows = {}
    metric = None
    for line in out.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 1 and fields[1] in ("orig", "xlm"):
            metric = fields[0]
            fields = fields[1:]
        rows[metric, fields[0]] = fields[1:]
    # epoch 0: 10:00:03 -> 10:00:10 training, then 2 s to the __log__ line; words/s is the mean of 1000, 3000;
    # epoch 1's first line (iteration 15) is left out: its rate spans epoch 0's evaluation
    assert rows["train_s", "orig"] == ["7.00", "60.00"]
    assert rows["eval_s", "orig"] == ["2.00", "1.00"]
    assert rows["updates", "orig"] == ["10", "20"]
    assert rows["words/s", "orig"] == ["2000.00", "6000.00"]
    assert rows["valid_mlm_ppl", "orig"] == ["300.50", "120.25"]
    assert rows["valid_mlm_ppl", "xlm"] == ["400.00", "-"]
    assert rows["train_s", "xlm"] == ["3.00", "-"]
    assert ("test_mlm_ppl", "orig") not in rows  # only valid_* metrics by default


def test_metric_filter_and_errors(tmp_path):
    (tmp_path / "a.log").write_text(ORIGINAL_LOG)
    out = python(ROOT / "tools" / "compare_logs.py", tmp_path / "a.log", "--metrics", "test_").stdout
    assert "test_mlm_ppl" in out and "valid_mlm_ppl" not in out
    (tmp_path / "none.log").write_text(ORIGINAL_LOG.split("INFO - 12/02/26 10:00:12")[0])
    proc = python(ROOT / "tools" / "compare_logs.py", tmp_path / "none.log", check=False)
    assert proc.returncode != 0 and "no __log__ line" in proc.stderr
    proc = python(ROOT / "tools" / "compare_logs.py", tmp_path / "a.log", "--labels", "x,y", check=False)
    assert proc.returncode != 0 and "2 names for 1 logs" in proc.stderr
    # a log cut in the middle of its last __log__ line (a run killed while writing it)
    cut = ORIGINAL_LOG.rstrip("\n")[:-10] + "\n"
    (tmp_path / "cut.log").write_text(cut)
    proc = python(ROOT / "tools" / "compare_logs.py", tmp_path / "cut.log", check=False)
    line_no = len(cut.splitlines())
    assert proc.returncode != 0 and f"cut.log:{line_no}: __log__ line is not JSON" in proc.stderr, proc.stderr
