"""Test-only fault injection: `SER_FAULT_AT=<phase>[:<loop>]` kills this process with SIGKILL there.

The robustness tests (tests/robustness/test_faults.py) run `python run.py ...` as a subprocess
and need it to die at an exact point, not after a guessed wall time. The pipeline calls
`maybe_die(phase, loop)` at a few named points; unless the variable is set, that is a no-op.

Phases: `train` (start of training a loop), `midloop` (inside a loop's training, at the first step
after its first mid-loop checkpoint), `score` (after scoring the pool), `record` (right before the
loop state is saved), `finish` (while writing the final outputs). Without `:<loop>`
the phase matches any loop.
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "SER_FAULT_AT"
PHASES = ("train", "midloop", "score", "record", "finish")


def maybe_die(phase: str, loop: int) -> None:
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return
    want_phase, _, want_loop = spec.partition(":")
    if want_phase == phase and (not want_loop or int(want_loop) == loop):
        os.kill(os.getpid(), signal.SIGKILL)
