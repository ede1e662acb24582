"""Finished runs' records kept in the repository, so that a queue of long runs continues across machines.

A run dir holds weights (checkpoints/, final_rm/, policies and LoRA adapters) and records (the composed
config, the loop state, summary.json, loops.csv, self-labels, generated samples, policy evaluations). Run dirs
live under outputs/, which a fresh checkout lacks, while the results pages are made from the records alone.

    python experiments/records.py save outputs/ser/sweeps      # every finished run -> experiments/records/
    python experiments/records.py restore outputs/ser/sweeps   # every record whose run dir is missing -> there

`save` packs one finished run (a dir of the sweeps dir with a summary.json) into `<run name>.tar.gz`, the
same bytes for the same records, so re-saving changes nothing in git. `restore` unpacks each record into a
run dir of its own name unless that dir exists: the queue's scripts then skip the run (a finished run with the
same config returns its summary without loading anything), and the reports read it as any other.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import logging
import shutil
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ser.io import atomic_write_bytes, atomic_write_json  # noqa: E402

RECORDS = ROOT / "experiments" / "records"
RECORD_SUFFIXES = (".json", ".jsonl", ".csv", ".yaml")
# a folder holding one of these is a model's (its config.json and tokenizer files belong to the weights)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".gguf")
SKIPPED_DIRS = ("scores", "wandb")  # scoring's work files; wandb's own copy of what the CSV logger holds
MARKER = "restored_from.json"  # written by `restore`, never packed
MAX_FILE_BYTES = 16 << 20

log = logging.getLogger("records")


def finished_runs(sweeps: Path) -> list[Path]:
    return sorted(p.parent for p in sweeps.glob("*/summary.json") if not p.parent.name.startswith("."))


def record_files(run: Path) -> list[Path]:
    """The files of `run` its record keeps, relative to it, sorted: everything but weights and work files."""
    def is_model_dir(folder: Path) -> bool:
        return any(f.suffix in WEIGHT_SUFFIXES for f in folder.iterdir() if f.is_file())

    kept: list[Path] = []
    pending = [run]
    while pending:
        folder = pending.pop()
        for entry in sorted(folder.iterdir()):
            if entry.is_dir():
                if entry.name not in SKIPPED_DIRS and not is_model_dir(entry):
                    pending.append(entry)
            elif entry.suffix in RECORD_SUFFIXES and entry.name != MARKER:
                if entry.stat().st_size > MAX_FILE_BYTES:
                    raise ValueError(f"{entry}: {entry.stat().st_size} bytes, over the {MAX_FILE_BYTES} a record may "
                                     "hold; records are for metrics and labels, not for data or weights")
                kept.append(entry.relative_to(run))
    return sorted(kept)


def pack(run: Path) -> bytes:
    """The record of `run` as a gzipped tar: members sorted, times, owners and modes fixed (reproducible)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in record_files(run):
            data = (run / rel).read_bytes()
            info = tarfile.TarInfo(rel.as_posix())
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def save(sweeps: Path, records: Path = RECORDS) -> dict[str, str]:
    """Pack every finished run of `sweeps`; returns {run name: "new" | "updated" | "unchanged"}."""
    records.mkdir(parents=True, exist_ok=True)
    done: dict[str, str] = {}
    for run in finished_runs(sweeps):
        path, data = records / f"{run.name}.tar.gz", pack(run)
        before = path.read_bytes() if path.exists() else None
        done[run.name] = "unchanged" if before == data else "updated" if before is not None else "new"
        if before != data:
            atomic_write_bytes(path, data)
        log.info("%s: %s (%d kB)", run.name, done[run.name], len(data) // 1024)
    return done


def restore(sweeps: Path, records: Path = RECORDS) -> dict[str, str]:
    """Unpack every record of `records` into `sweeps`; returns {run name: "restored" | "present"}.
    A run dir that exists (finished, running or stopped) is left as it is."""
    done: dict[str, str] = {}
    for path in sorted(records.glob("*.tar.gz")):
        name = path.name[: -len(".tar.gz")]
        run = sweeps / name
        if run.exists():
            done[name] = "present"
            continue
        tmp = sweeps / f".{name}.restoring"  # renamed into place once complete: a killed restore leaves no run dir
        shutil.rmtree(tmp, ignore_errors=True)
        data = path.read_bytes()
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            tar.extractall(tmp, filter="data")  # refuses absolute paths, links out of the dir, devices
        atomic_write_json(tmp / MARKER, {"record": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
                                         "sha256": hashlib.sha256(data).hexdigest()})
        tmp.replace(run)
        done[name] = "restored"
        log.info("%s: restored", name)
    return done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("save", "restore"))
    parser.add_argument("sweeps", type=Path)
    parser.add_argument("--records", type=Path, default=RECORDS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.sweeps.mkdir(parents=True, exist_ok=True)
    done = (save if args.action == "save" else restore)(args.sweeps, args.records)
    counts = {v: list(done.values()).count(v) for v in sorted(set(done.values()))}
    print(json.dumps({"action": args.action, "sweeps": str(args.sweeps), "records": str(args.records), **counts}))


if __name__ == "__main__":
    main()
