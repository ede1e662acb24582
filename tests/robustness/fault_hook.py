"""A test-only fault hook: SIGKILL this process at a named point of a run (ser/events.py).

Installed on the command line as a Hydra callback, so no production code knows about it:

    python run.py experiment=smoke +hydra.callbacks.fault._target_=tests.robustness.fault_hook.KillAt \
        +hydra.callbacks.fault.at=score:1

Points (`<phase>[:<loop>]`, any loop without one): `train` (a loop's training starts), `midloop` (the first
training step after the loop's first mid-loop checkpoint), `score` (the pool is scored), `record` (a loop's
checkpoint is written, its state not yet), `finish` (the final self-labels are written, summary.json not yet);
schedule=coevolve: `sampling` (after a loop's first batch of samples), `policy` (after its first DPO step).
"""

from __future__ import annotations

import os
import signal
from typing import Any

from hydra.experimental.callback import Callback

from ser import events

EVENTS = {"train": "train_start", "score": "pool_scored", "record": "loop_recording", "finish": "finishing"}
# schedule=coevolve: in the middle of a loop's sampling (after its first batch), of its policy training (after step 0)
MIDWAY = {"sampling": ("sampled_batch", "batch"), "policy": ("policy_step", "step")}
PHASES = (*EVENTS, *MIDWAY, "midloop")


def killer(at: str):
    """The listener that kills at `at`; a list of the events it has seen is kept on it (`.seen`)."""
    phase, _, loop = at.partition(":")
    if phase not in PHASES:
        raise ValueError(f"unknown fault point {phase!r}; known: {PHASES}")
    saved_in: set[int] = set()

    def listen(event: str, info: dict[str, Any]) -> None:
        if loop and int(loop) != info.get("loop"):
            return
        if phase in MIDWAY:
            name, counter = MIDWAY[phase]
            if event == name and info[counter] >= 1:
                os.kill(os.getpid(), signal.SIGKILL)
        elif phase == "midloop":
            if event == "checkpoint_saved":
                saved_in.add(info["loop"])
            elif event == "train_step" and info["loop"] in saved_in:
                os.kill(os.getpid(), signal.SIGKILL)
        elif event == EVENTS[phase]:
            os.kill(os.getpid(), signal.SIGKILL)

    return listen


class KillAt(Callback):
    def __init__(self, at: str) -> None:
        self.listener = killer(at)

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        events.subscribe(self.listener)


def overrides(at: str) -> list[str]:
    """The command-line overrides that install this hook, killing the run at `at`."""
    return [f"+hydra.callbacks.fault._target_={KillAt.__module__}.KillAt", f"+hydra.callbacks.fault.at={at}"]
