"""xlm/train/signals.py's handler, apart from the runs that tests/test_train.py and test_glue_xnli.py stop."""
import logging
import signal
import threading

import xlm.train.signals as signals_module


class InterruptedStream:
    """A log stream whose first write is interrupted by a signal, as a write() system call can be: Python
    runs the handler inside it, and a second write of the same buffered file there is refused, as
    io.BufferedWriter refuses it ("reentrant call")."""

    def __init__(self, signalled):
        self.text, self.writing, self.signalled = "", False, signalled

    def write(self, text):
        if self.writing:
            raise RuntimeError("reentrant call inside <_io.BufferedWriter name='train.log'>")
        self.writing = True
        try:
            signalled, self.signalled = self.signalled, None
            if signalled:
                signalled()
            self.text += text
        finally:
            self.writing = False

    def flush(self):
        pass


def test_a_signal_inside_a_write_of_the_log_is_logged(monkeypatch):
    """The handler's line reaches the log after the write it interrupted (it was lost with a traceback
    on stderr when the handler wrote the log itself: a Ctrl-C test failed so, under load)."""
    monkeypatch.setattr(signals_module.signal, "signal", lambda signum, handler: None)  # no handler installed
    logger = logging.getLogger("test_signals")
    logger.propagate = False
    stop_signals = signals_module.StopSignals(logger)
    stream = InterruptedStream(lambda: stop_signals._on_signal(signal.SIGINT, None))
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    before = set(threading.enumerate())
    try:
        logger.warning("a progress line")
        for thread in set(threading.enumerate()) - before:
            thread.join(10)
    finally:
        logger.removeHandler(handler)
    assert stream.text.splitlines() == ["a progress line", "Received signal 2: saving a checkpoint at the next "
                                        "progress line (or evaluation batch) (Ctrl-C again to stop now)"]
    assert stop_signals.received == signal.SIGINT


def test_slurms_time_limit_after_its_warning_still_requeues(monkeypatch):
    """SLURM sends SIGUSR1 before the time limit, then SIGTERM at it: both before the next save point, the run
    must still requeue (it stopped on SIGTERM and the job ended, to be resubmitted by hand)."""
    from xlm.train.distributed import DistInfo
    monkeypatch.setattr(signals_module.signal, "signal", lambda signum, handler: None)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    calls = []
    monkeypatch.setattr(signals_module.subprocess, "call", lambda command: calls.append(command) or 0)
    logger = logging.getLogger("test_signals_requeue")
    logger.propagate = False
    stop_signals = signals_module.StopSignals(logger)
    before = set(threading.enumerate())
    stop_signals._on_signal(signal.SIGUSR1, None)
    stop_signals._on_signal(signal.SIGTERM, None)
    for thread in set(threading.enumerate()) - before:
        thread.join(10)
    assert stop_signals.agreed(DistInfo())
    stop_signals.stop(DistInfo())
    assert calls == [["scontrol", "requeue", "4242"]] and stop_signals.exit_status == 128 + signal.SIGUSR1
