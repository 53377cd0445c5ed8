"""What a run writes for people and tools: the original's train.log format, JSON lines, TensorBoard."""
import json
import logging
import os
import sys
import time
from datetime import timedelta

from ..fileio import DataError

# the original's mark of an epoch's scores in train.log: `__log__:{json}`, which tools read back
SCORES_MARK = "__log__:"


class _Formatter(logging.Formatter):
    """`LEVEL - mm/dd/yy HH:MM:SS - H:MM:SS - message`, continuation lines indented (the original's)."""

    def __init__(self):
        super().__init__()
        self.start = time.time()

    def format(self, record):
        elapsed = timedelta(seconds=round(record.created - self.start))
        prefix = f"{record.levelname} - {time.strftime('%x %X', time.localtime(record.created))} - {elapsed}"
        message = record.getMessage().replace("\n", "\n" + " " * (len(prefix) + 3))
        return f"{prefix} - {message}"


def logged_scores(line, path, line_no):
    """The scores dict of a train.log line with SCORES_MARK, None for any other line."""
    if SCORES_MARK not in line:
        return None
    try:
        return json.loads(line.split(SCORES_MARK, 1)[1])
    except ValueError:
        raise DataError(f"{path}:{line_no}: __log__ line is not JSON (a log cut mid-line?)") from None


LOGGER = "xlm.train"


def create_logger(path, rank):
    """Rank 0 logs to `path` and the console (stderr, as the original: a job's `2>` file or SLURM's
    `--error` gets the log); rank r > 0 to `path-r` only."""
    logger = logging.getLogger(LOGGER)
    logger.handlers.clear()
    logger.setLevel(logging.INFO)
    logger.propagate = False
    formatter = _Formatter()
    file_handler = logging.FileHandler(path if rank == 0 else f"{path}-{rank}", "a", encoding="utf-8")
    file_handler.setFormatter(formatter)
    logger.addHandler(file_handler)
    if rank == 0:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(formatter)
        logger.addHandler(console)
    return logger


class MetricsWriter:
    """Training stats and evaluation scores as JSON lines (train.jsonl), and TensorBoard if installed."""

    def __init__(self, dump_path, enabled):
        self.enabled = enabled
        self.path = os.path.join(dump_path, "train.jsonl")
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(os.path.join(dump_path, "tensorboard"))
            except ImportError:
                pass

    def write(self, kind, step, values):
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"kind": kind, "n_iter": step, **values}) + "\n")
        if self.tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.tb.add_scalar(f"{kind}/{key}", value, step)
            self.tb.flush()
