"""Load a configured preference source (hub dataset or local files) into validated pairs.

Local files are read row by row so one malformed line is a counted issue, not a crash;
damage that makes the rest of a file unreadable (a truncated gzip) is an error naming the file.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import gzip
import json
import os
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from ser.data.adapters import PREFERENCE_FORMATS, Located, RowError, adapt_rows
from ser.data.schema import DataError, LoadReport, PreferencePair

SOURCE_KEYS = (
    "adapter",
    "hub",
    "hub_config",
    "path",
    "split",
    "options",
    "format",
    "file_format",
    "limit",
    "revision",
    "trust_remote_code",
)
EXTENSIONS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
FORMATS = ("auto", *EXTENSIONS.values())  # file formats (data.source.file_format)


@dataclass(frozen=True)
class Source:
    """A checked `source` config: exactly one of `hub` / `path`."""

    adapter: str
    hub: str | None = None
    hub_config: str | None = None
    path: str | Sequence[str] | None = None
    split: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    format: str = "auto"  # the preference format: auto | standard | conversational (adapter=generic)
    file_format: str = "auto"
    limit: int | None = None
    revision: str | None = None
    trust_remote_code: bool = False

    @classmethod
    def parse(cls, source: Mapping[str, Any]) -> Source:
        unknown = set(source) - set(SOURCE_KEYS)
        if unknown:
            raise ValueError(f"unknown data source keys {sorted(unknown)}; allowed: {', '.join(SOURCE_KEYS)}")
        if not source.get("adapter"):
            raise ValueError("data source needs 'adapter'")
        if bool(source.get("hub")) == bool(source.get("path")):
            raise ValueError("data source needs exactly one of 'hub' and 'path' set")
        if source.get("hub") and not source.get("split"):
            raise ValueError("a 'hub' data source needs 'split'")
        if (source.get("file_format") or "auto") not in FORMATS:
            raise ValueError(f"data source 'file_format' must be one of {FORMATS}, got {source['file_format']!r}")
        preference = source.get("format") or "auto"
        if preference not in PREFERENCE_FORMATS:
            raise ValueError(f"data source 'format' (the preference format) must be one of {PREFERENCE_FORMATS}, "
                             f"got {preference!r}; the file type is 'file_format'")
        if preference != "auto" and source.get("adapter") != "generic":
            raise ValueError(f"data source 'format={preference}' applies to adapter=generic (TRL's formats); "
                             f"adapter={source.get('adapter')} reads its own format")
        limit = source.get("limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"data source 'limit' must be a positive integer or null, got {limit!r}")
        values = {key: value for key, value in source.items() if value is not None}
        options = dict(source.get("options") or {})
        if preference != "auto":
            options["preference_format"] = preference
        return cls(**values | {"options": options})


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """Expand `~` and environment variables ($DATA_DIR/...) in a configured path."""
    return Path(os.path.expandvars(os.path.expanduser(os.fspath(path))))


def load_pairs(source: Mapping[str, Any]) -> tuple[list[PreferencePair], LoadReport]:
    """Read, adapt and validate one configured source; see `Source` for the keys."""
    spec = Source.parse(source)
    pairs, report = _load_hub(spec) if spec.hub else _load_files(spec)
    if not pairs:
        raise DataError(no_pairs_message(report, spec.adapter), [report])
    return pairs, report


def no_pairs_message(report: LoadReport, adapter: str) -> str:
    """Why a source gave nothing: the commonest failure (reason and field) and the first bad row itself."""
    common = Counter((i.reason, i.field) for i in report.issues).most_common(1)
    reason, field_name = common[0][0] if common else ("no_rows", None)
    hint = ("; TRL's standard and conversational formats load with adapter=generic (data=generic)"
            if adapter != "generic" and reason in ("wrong_type", "missing_field", "bad_transcript") else "")
    first = next((i for i in report.issues if i.excerpt), report.issues[0] if report.issues else None)
    return (f"{report.source}: no valid preference pairs in {report.rows_read} rows; most fail with {reason}"
            + (f" in field '{field_name}'" if field_name else "") + f" ({report.counts}){hint}"
            + (f". First: {first.describe()}" if first else ""))


# ---- sources ----


def _load_hub(spec: Source) -> tuple[list[PreferencePair], LoadReport]:
    import datasets  # heavy import, paid only by hub sources

    extra = {"trust_remote_code": True} if spec.trust_remote_code else {}
    rows = datasets.load_dataset(spec.hub, spec.hub_config, split=spec.split, revision=spec.revision, **extra)
    name = f"{spec.hub}{'/' + spec.hub_config if spec.hub_config else ''}:{spec.split}"
    report = LoadReport(source=name)
    pairs = _adapt(rows, spec, report, name, set(), spec.limit)
    return pairs, report


def _load_files(spec: Source) -> tuple[list[PreferencePair], LoadReport]:
    files = _expand(spec.path)
    prefixes = _id_prefixes(files)
    report = LoadReport(source=", ".join(map(str, files)))
    pairs: list[PreferencePair] = []
    seen_ids: set[str] = set()  # ids must be unique across all files of one source
    for file in files:
        remaining = None if spec.limit is None else spec.limit - len(pairs)
        if remaining == 0:
            break
        part = LoadReport(source=str(file))
        with contextlib.closing(_read_rows(file, _file_format(file, spec.file_format))) as rows:
            pairs += _adapt(rows, spec, part, prefixes[file], seen_ids, remaining)
        _merge(report, part)
    return pairs, report


def _adapt(
    rows: Iterable[Any],
    spec: Source,
    report: LoadReport,
    id_prefix: str,
    seen_ids: set[str],
    limit: int | None,
) -> list[PreferencePair]:
    pairs = adapt_rows(
        rows, spec.adapter, report, id_prefix=id_prefix, seen_ids=seen_ids, limit=limit, **spec.options
    )
    if report.rows_read == 0:
        raise ValueError(f"{report.source}: no rows")
    return pairs


def _merge(into: LoadReport, part: LoadReport) -> None:
    into.rows_read += part.rows_read
    into.pairs_kept += part.pairs_kept
    into.issues.extend(part.issues)
    into.notes.update(part.notes)


# ---- finding files ----


def _expand(path: str | Sequence[str] | None) -> list[Path]:
    """Files named by a path, directory, glob, or list of them; sorted, each once."""
    entries = [path] if isinstance(path, (str, os.PathLike)) else list(path or [])
    files: set[Path] = set()
    for entry in entries:
        files.update(_expand_one(resolve_path(entry).absolute()))
    return sorted(files)


def _expand_one(path: Path) -> list[Path]:
    if glob.has_magic(str(path)):
        found = [Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file()]
        if not found:
            raise FileNotFoundError(f"{path}: no file matches this pattern")
        return found
    if path.is_dir():
        found = [p for p in path.iterdir() if p.is_file() and _format_by_name(p)]
        if not found:
            raise FileNotFoundError(f"{path}: directory holds no {'/'.join(EXTENSIONS.values())} file")
        return found
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file")
    return [path]


def _base_name(path: Path) -> Path:
    return path.with_suffix("") if path.suffix == ".gz" else path


def _format_by_name(path: Path) -> str | None:
    return EXTENSIONS.get(_base_name(path).suffix)


def _file_format(path: Path, configured: str) -> str:
    fmt = _format_by_name(path) if configured == "auto" else configured
    if fmt is None:
        raise ValueError(f"{path}: cannot tell the file format from the extension; set 'file_format'")
    if fmt == "parquet" and path.suffix == ".gz":
        raise ValueError(f"{path}: gzip is supported for jsonl/json/csv only, not parquet")
    return fmt


def _id_prefixes(files: list[Path]) -> dict[Path, str]:
    """Short, machine-independent names for derived ids: the path below the common folder."""
    root = Path(os.path.commonpath([f.parent for f in files]))
    return {f: _base_name(f.relative_to(root)).with_suffix("").as_posix() for f in files}


# ---- reading rows ----


def _read_rows(path: Path, fmt: str) -> Iterator[Any]:
    """Rows of one file in order; a row that cannot be parsed is a RowError in its place."""
    try:
        yield from _READERS[fmt](path)
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise ValueError(f"{path}: truncated or corrupt gzip file ({err})") from err
    except (UnicodeDecodeError, csv.Error, pa.ArrowException) as err:
        raise ValueError(f"{path}: unreadable {fmt} file ({err})") from err


def _open_text(path: Path, newline: str | None = None) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline=newline)
    return open(path, encoding="utf-8", newline=newline)


def _json_lines(lines: Iterable[str]) -> Iterator[Any]:
    # Blank lines are not rows; each row carries its 1-based line number, so issues read file:line.
    for line_number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield Located(line_number, json.loads(line))
        except json.JSONDecodeError as err:
            yield Located(line_number, RowError("malformed_json", None, err.msg))
        except (ValueError, RecursionError) as err:  # an int past the digit limit; nesting too deep
            yield Located(line_number, RowError("malformed_json", None, f"{type(err).__name__}: {str(err)[:80]}"))


def _jsonl_rows(path: Path) -> Iterator[Any]:
    with _open_text(path) as f:
        yield from _json_lines(f)


def _json_rows(path: Path) -> Iterator[Any]:
    """A JSON array of rows, or JSON lines under a .json name (as OpenAI's comparison batches)."""
    with _open_text(path) as f:
        text = f.read()
    if not text.lstrip().startswith("["):
        yield from _json_lines(text.split("\n"))
        return
    try:
        rows = json.loads(text)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, int digit limit, nesting too deep
        raise ValueError(f"{path}: not a valid JSON array ({str(err)[:200]})") from err
    yield from rows


def _csv_rows(path: Path) -> Iterator[Any]:
    # Long answers exceed csv's 128 KiB default field limit.
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    with _open_text(path, newline="") as f:
        reader = csv.DictReader(f)  # empty cells stay "", so they count as empty_text
        for row in reader:
            yield Located(reader.line_num, row)  # the line a row ends on (a quoted cell may span lines)


def _parquet_rows(path: Path) -> Iterator[Any]:
    # to_pylist gives plain lists and dicts, so chat-message columns look as they do in JSON.
    for batch in pq.ParquetFile(path).iter_batches():
        yield from batch.to_pylist()


_READERS = {"jsonl": _jsonl_rows, "json": _json_rows, "csv": _csv_rows, "parquet": _parquet_rows}
