"""Progress of long work on stderr: tqdm's bar where stderr is a terminal; where it is not (a batch job's
log, in which a bar's carriage returns pile up into one endless line, so tqdm draws none), a line every
PROGRESS_EVERY seconds with what is done, the rate since the start and the time left."""
import sys
import time
from datetime import timedelta


PROGRESS_EVERY = 60.0  # seconds between the lines where stderr is no terminal


def _amount(n, unit):
    if unit != "B":
        return f"{n:,}"
    for scale, name in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if n >= scale:
            return f"{n / scale:.1f} {name}"
    return f"{n} B"


class Progress:
    """`update(n)` counts n more units done (of `total`, if known; `initial` were done before this
    process, and do not count in its rate); with no `desc`, nothing is shown. Lines read "DESC:
    DONE/TOTAL UNIT, RATE UNIT/s, ETA h:mm:ss", without the total and the time left where the total is
    unknown; unit "B" counts bytes (in kB, MB, GB)."""

    def __init__(self, desc, total=None, unit="lines", initial=0):
        self.desc, self.total, self.unit = desc, total, unit
        self.done = self.resumed = initial
        self.started = self.reported = time.monotonic()
        self.shown, self.bar = desc is not None, None
        if self.shown and sys.stderr.isatty():
            from tqdm import tqdm  # imported here: the scripts that import this module start faster
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, unit_scale=unit == "B",
                            file=sys.stderr, leave=False)

    def update(self, n):
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if not self.shown or now - self.reported < PROGRESS_EVERY:
            return
        self.reported = now
        rate = (self.done - self.resumed) / max(now - self.started, 1e-9)
        done = _amount(self.done, self.unit) + ("" if self.total is None else f"/{_amount(self.total, self.unit)}")
        if self.unit == "B":
            line = f"{self.desc}: {done}, {_amount(int(rate), 'B')}/s"
        else:
            line = f"{self.desc}: {done} {self.unit}, {rate:,.1f} {self.unit}/s"
        if self.total is not None and rate > 0:
            line += f", ETA {timedelta(seconds=round(max(self.total - self.done, 0) / rate))}"
        print(line, file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
