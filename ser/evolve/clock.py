"""Where a loop's time goes: each part's seconds, recorded beside the loop's metrics."""

from __future__ import annotations

import time

# Where an SER loop's time goes (loops.csv, summary.json's per-loop record, docs/performance.md)
LOOP_TIME_SPLIT = tuple(f"seconds_{part}" for part in ("score", "select", "train", "evaluate", "write"))


class LoopClock:
    """Seconds per part of a loop, as `seconds_<part>`: each lap is the time since the last."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def elapsed(self) -> float:
        """Seconds since the loop began."""
        return round(time.perf_counter() - self.started, 2)

    def lap(self, part: str) -> None:
        now = time.perf_counter()
        self.seconds[f"seconds_{part}"] = round(now - self.last, 2)
        self.last = now
