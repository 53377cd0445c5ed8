"""Stopping a run without losing it. SLURM's time-limit warning (SIGUSR1), a kill (SIGTERM) or Ctrl-C (SIGINT)
is kept until the loop reaches a point where every rank can take part in saving a checkpoint (a progress
line, an epoch's end, a batch of the evaluation; one process, which needs no agreement, the end of any
step); then the run stops with the shell's status of a signalled command (128 + the signal), and SIGUSR1
also requeues the SLURM job, whose rerun of the command resumes. Used by train.py and glue-xnli.py.
"""
import os
import signal
import subprocess
import threading
import time

from .distributed import all_reduce_sum, broadcast_from_master

HANDLED = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)


class EvaluationStopped(Exception):
    """Every rank agreed on a signal between two batches of an evaluation: the run saves as it was before
    the evaluation (which changed nothing of it) and stops; the rerun evaluates again."""


class StopSignals:
    def __init__(self, logger, alone=False, rerun="the same command", saves=True):
        """alone: one process (it stops after any step); rerun: what resumes the run; saves: False where the
        run has nothing to save (--eval_only), and a signal stops its evaluation at the next batch."""
        self.logger, self.alone, self.rerun, self.saves = logger, alone, rerun, saves
        self.received, self.time, self.stopped, self.requeue = None, 0.0, False, False
        for sig in HANDLED:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame):
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            # Ctrl-C again: stop now (a rerun resumes from the last checkpoint); not within a second, as
            # torchrun passes the terminal's Ctrl-C on to the workers, which had it from the terminal too
            if time.monotonic() - self.time >= 1:
                raise KeyboardInterrupt
            return
        # SLURM's warning (SIGUSR1) asks for a requeue, which the SIGTERM of its time limit, or a Ctrl-C, that
        # come before the next save do not cancel (the original requeued at once)
        self.requeue = self.requeue or signum == signal.SIGUSR1
        self.received, self.time = signum, time.monotonic()
        # logged from a thread of its own: Python runs this handler wherever the main thread is, which may be
        # inside a write of this very log (the signal interrupted the write), where a second write is refused
        # and the line lost; the thread waits for the log's lock, which that write holds, and then writes
        what = ("saving a checkpoint " + ("after this step" if self.alone else "at the next progress line") +
                " (or evaluation batch)") if self.saves else "stopping at the next evaluation batch"
        threading.Thread(target=self.logger.warning, args=(
            "Received signal %i: %s%s", signum, what,
            " (Ctrl-C again to stop now)" if signum == signal.SIGINT else "")).start()

    def agreed(self, info):
        """At those points alone (a collective): whether any rank was signalled, so that all of them save
        and stop together. SIGUSR1 on any rank makes it a requeue."""
        usr1, any_signal = all_reduce_sum([float(self.requeue), float(self.received is not None)], info)
        if any_signal:
            self.received = signal.SIGUSR1 if usr1 else self.received or signal.SIGTERM
        return bool(any_signal)

    def check_evaluation(self, info):
        """Before each batch of an evaluation, on every rank (a collective): any rank's signal
        stops it, however long its set (a BLEU set may outlast SLURM's warning or torchrun's 30 s)."""
        if self.agreed(info):
            raise EvaluationStopped

    def stop(self, info):
        """Once the checkpoint is saved: no rank exits (and gets the others killed) before rank 0 has
        written it; under SLURM, SIGUSR1 has rank 0 requeue the job."""
        broadcast_from_master(None, info)
        if self.received == signal.SIGUSR1 and info.is_master and "SLURM_JOB_ID" in os.environ:
            requeue = ["scontrol", "requeue", os.environ["SLURM_JOB_ID"]]
            try:
                failed = subprocess.call(requeue)
            except OSError as e:
                failed = e
            if failed:
                self.logger.error("`%s` failed (%s): resubmit the job to resume", " ".join(requeue), failed)
        self.stopped = True
        if self.saves:
            self.logger.warning("Stopped by signal %i after saving; %s resumes", self.received, self.rerun)
        else:
            self.logger.warning("Stopped by signal %i; nothing to save", self.received)

    @property
    def exit_status(self):
        """The status a stopped process exits with; None if it ran to its end (a signal during the last
        evaluation, after the last progress line, stops nothing)."""
        return 128 + self.received if self.stopped else None
