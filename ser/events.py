"""Named points of a run that observers can listen to: a small hook registry.

The RM task announces where it is (`emit("pool_scored", loop=1)`); nothing listens unless someone
subscribed, e.g. from a Hydra callback on the command line (`+hydra.callbacks.<name>._target_=...`):
to log, to profile, or (the robustness tests) to stop the process at an exact point. Events:

- `train_start` (loop): a loop's RM training begins
- `train_step` (loop, step): a training step begins; `checkpoint_saved` (loop, step): a mid-loop checkpoint
- `pool_scored` (loop): the remaining pool is scored
- `loop_recording` (loop): a loop's checkpoint is written and its state is about to be saved
- `finishing` (loop): the final self-labels are written and summary.json is about to be
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Listener = Callable[[str, dict[str, Any]], None]
_listeners: list[Listener] = []


def subscribe(listener: Listener) -> Callable[[], None]:
    """Call `listener(event, info)` at every event from now on; returns the function that unsubscribes."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener) if listener in _listeners else None


def emit(event: str, **info: Any) -> None:
    for listener in list(_listeners):
        listener(event, info)
