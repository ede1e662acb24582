"""Cross-process locks on run dirs and shared caches (the `filelock` package; flock on POSIX).

- A run dir is held by one process from the start of the run to its end: a second launch of the same
  run is refused at once, naming the dir and the holder (`hold_run_dir`), or, for a run shared by other
  jobs (the RM of a policy sweep, the gold judge), waits its turn (`wait=True`) and then reuses it.
- A cache that several processes may fill at once (GGUF conversion, frozen-prefix states) is filled by
  the first under the lock; the others wait, then find it complete (`fill_once`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from filelock import FileLock, Timeout

from ser.io import atomic_write_json

log = logging.getLogger(__name__)
T = TypeVar("T")
RUN_LOCK = ".lock"
HOLDER = ".lock.holder"


class RunDirBusy(RuntimeError):
    """Another process holds the run dir."""


@contextmanager
def hold_run_dir(run_dir: str | Path, wait: bool = False) -> Iterator[None]:
    """Hold `run_dir` for the block. Refuses at once if another process holds it, unless `wait`."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run_dir / RUN_LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = _read_holder(run_dir)
        if not wait:
            raise RunDirBusy(f"{run_dir} is in use by {holder}: a second launch of the same run is refused; "
                             "wait for it to finish (it resumes where it stops), or use another run dir") from None
        log.info("%s is in use by %s: waiting for it", run_dir, holder)
        lock.acquire()
    try:
        atomic_write_json(run_dir / HOLDER, {"pid": os.getpid(), "host": socket.gethostname(),
                                             "since": time.strftime("%Y-%m-%d %H:%M:%S")})
        yield
    finally:
        (run_dir / HOLDER).unlink(missing_ok=True)
        lock.release()


def _read_holder(run_dir: Path) -> str:
    try:
        info = json.loads((run_dir / HOLDER).read_text())
        return f"process {info['pid']} on {info['host']} (since {info['since']})"
    except (OSError, ValueError, KeyError):
        return "another process"


def fill_once(target: str | Path, is_complete: Callable[[], bool], fill: Callable[[], T]) -> T | None:
    """Run `fill` unless `is_complete()`; under a lock beside `target`, so concurrent processes fill it once.

    Returns what `fill` returned, or None when the target was already complete (here or after waiting).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if is_complete():
        return None
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if is_complete():  # another process filled it while this one waited
            return None
        return fill()
