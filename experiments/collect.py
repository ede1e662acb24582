"""Collect the summary.json of many runs into paper-ready tables: markdown, LaTeX, CSV, and a figure.

    python experiments/collect.py outputs/ser/sweeps
    python experiments/collect.py outputs/ser/sweeps --out docs/results/synthetic_minilm
    python experiments/collect.py outputs/a outputs/b --group-by data,rm,schedule,splits.seed --metric val_accuracy

Runs are grouped by (data, rm, schedule) by default; each group reports mean ± sample std over seeds.
Beside a seed_only reference (same data and rm), every other schedule gets its paired difference from it,
seed by seed (mean, 95% t-interval, wins/ties/losses); with a full_data reference too, "gap closed": how much
of the seed_only -> full_data gap of the means it closes. `--out PREFIX` writes PREFIX.md (the table, per-loop
means, provenance), PREFIX.tex, PREFIX.csv (the table), PREFIX_runs.csv (long format: one row per run and
loop) and PREFIX.png.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python experiments/collect.py` puts experiments/, not the repo root, on sys.path
    sys.path.insert(0, str(ROOT))

from ser.io import atomic_write_text  # noqa: E402

SEED_ONLY, SER, FULL_DATA = "seed_only", "ser", "full_data"
SCHEDULE_ORDER = (SEED_ONLY, SER, FULL_DATA)  # the paper's reading order; other schedules follow by name
DEFAULT_GROUP_BY = ("data", "rm", "schedule")
DEFAULT_METRIC = "test_accuracy"
DASH = "—"
NO_VARIANT = "-"  # summary.json's variant of seed_only and full_data runs (ser/evolve/finish.py)
LOOP_KEYS = ("status", "selected", "selected_total", "self_label_accuracy", "val_accuracy", "test_accuracy", "test_ece",
             "train_pairs", "seconds")
NEEDS_REFERENCES = "needs seed_only and full_data runs of the same data and rm"
NO_SHARED_SEED = "no seed with seed_only and full_data runs too"


class CollectError(Exception):
    """The collected runs cannot give a trustworthy table (malformed file, duplicate seed, nothing found)."""


@dataclass
class Collection:
    dirs: list[Path]
    group_by: list[str]
    metric: str
    runs: pd.DataFrame  # one row per run, in table order
    loops: pd.DataFrame  # one row per run and loop (long format)
    table: pd.DataFrame  # one row per group
    unfinished: list[Path]


# ---- finding and loading ---------------------------------------------------------------------------
def find_runs(dirs: Iterable[str | Path]) -> tuple[list[Path], list[Path]]:
    """summary.json files under `dirs`, and run dirs that have a state.json but no summary.json yet."""
    summaries: list[Path] = []
    unfinished: list[Path] = []
    for d in map(Path, dirs):
        if not d.is_dir():
            raise CollectError(f"not a directory: {d}")
        summaries += sorted(d.rglob("summary.json"))
        unfinished += [s.parent for s in sorted(d.rglob("state.json")) if not (s.parent / "summary.json").exists()]
    return _unique(summaries), _unique(unfinished)


def _unique(paths: Iterable[Path]) -> list[Path]:
    """Drop paths seen twice through overlapping dirs (e.g. `outputs outputs/ser`)."""
    seen: dict[Path, Path] = {}
    for p in paths:
        seen.setdefault(p.resolve(), p)
    return list(seen.values())


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def lookup(summary: dict[str, Any], dotted: str) -> Any:
    """`splits.seed` -> summary['splits']['seed']."""
    value: Any = summary
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(dotted)
        value = value[part]
    return value


def load_summary(path: Path, metric: str) -> dict[str, Any]:
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(summary, dict):
            raise TypeError("top level is not an object")
        if not isinstance(summary.get("loops"), list) or not summary["loops"]:
            raise ValueError("'loops' is missing or empty")
        if not all(isinstance(e, dict) for e in summary["loops"]):
            raise TypeError("'loops' holds a non-object")
        if not isinstance(summary.get("final"), dict) or not _is_number(summary["final"].get(metric)):
            raise ValueError(f"final.{metric} is missing or not a number")
        if summary["final"].get("loop") not in [e.get("loop") for e in summary["loops"]]:
            raise KeyError(f"final.loop {summary['final'].get('loop')!r} is not among the loops")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CollectError(f"malformed summary.json: {path}: {err}") from err
    return summary


def seed_rm_above_chance(summary: dict[str, Any]) -> bool | None:
    """Does the seed RM (loop 0) beat a coin on validation: one-sided binomial test, p < 0.05? None when the
    run did not record its validation size or loop-0 accuracy."""
    n_val = (summary.get("splits") or {}).get("val")
    acc = summary["loops"][0].get("val_accuracy")
    if not (_is_number(n_val) and n_val > 0 and _is_number(acc)):
        return None
    from scipy.stats import binomtest

    return bool(binomtest(round(acc * n_val), int(n_val), 0.5, alternative="greater").pvalue < 0.05)


def run_row(path: Path, summary: dict[str, Any], group_by: Sequence[str], metric: str) -> dict[str, Any]:
    try:
        key = {k: lookup(summary, k) for k in group_by}
    except KeyError as err:
        raise CollectError(f"{path}: has no group-by key {err}") from err
    if any(isinstance(v, (dict, list)) for v in key.values()):
        raise CollectError(f"{path}: group-by keys {list(group_by)} must name single values, not objects")
    final = summary["final"]
    return {**key, "seed": summary.get("seed"), "final_loop": final["loop"],
            **{m: final.get(m) for m in dict.fromkeys(("val_accuracy", "test_accuracy", "test_ece", metric))},
            "loops_run": len(summary["loops"]) - 1,  # loop 0 is the seed RM, not an SER loop
            "selected_total": max((e.get("selected_total") or 0) for e in summary["loops"]),  # the run's total
            "seed_rm_above_chance": seed_rm_above_chance(summary), "path": str(path)}


def loop_rows(path: Path, summary: dict[str, Any], key: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for e in summary["loops"]:
        row = {**key, "seed": summary.get("seed"), "loop": e.get("loop"), **{k: e.get(k) for k in LOOP_KEYS},
               "final": e.get("loop") == summary["final"]["loop"], "path": str(path)}
        for nested in ("test_accuracy_by_group", "test_accuracy_by_kind", "selected_by_group"):
            for name, value in (e.get(nested) or {}).items():
                row[f"{nested}.{name}"] = value
        rows.append(row)
    return rows


def _sort_key(series: pd.Series) -> pd.Series:
    if series.name == "schedule":
        return series.map(lambda s: (SCHEDULE_ORDER.index(s) if s in SCHEDULE_ORDER else len(SCHEDULE_ORDER), str(s)))
    return series.map(lambda v: (0, v, "") if _is_number(v) else (1, 0, str(v)))


def collect(dirs: Sequence[str | Path], group_by: Sequence[str] = DEFAULT_GROUP_BY,
            metric: str = DEFAULT_METRIC) -> Collection:
    group_by = list(group_by)
    paths, unfinished = find_runs(dirs)
    if not paths:
        hint = f" ({_unfinished_line(unfinished)})" if unfinished else ""
        raise CollectError(f"no summary.json found under {', '.join(map(str, dirs))}{hint}")
    summaries = {p: load_summary(p, metric) for p in paths}
    runs = pd.DataFrame([run_row(p, s, group_by, metric) for p, s in summaries.items()])
    duplicated = runs[runs.duplicated([*group_by, "seed"], keep=False)]
    if len(duplicated):
        first = duplicated.iloc[0]
        same = duplicated[(duplicated[group_by + ["seed"]] == first[group_by + ["seed"]]).all(axis=1)]
        raise CollectError(f"duplicate runs for {dict(first[group_by])}, seed {first['seed']}: "
                           + " and ".join(same["path"]))
    runs = runs.sort_values([*group_by, "seed"], key=_sort_key, kind="stable").reset_index(drop=True)
    loops = pd.DataFrame([row for _, r in runs.iterrows()
                          for row in loop_rows(Path(r["path"]), summaries[Path(r["path"])], dict(r[group_by]))])
    table = aggregate(runs, group_by, metric)
    return Collection([Path(d) for d in dirs], group_by, metric, runs, loops, table, unfinished)


# ---- statistics --------------------------------------------------------------------------------------
def t_half_width(values: Sequence[float]) -> float | None:
    """Half the 95% t-interval of the mean: t(0.975, n-1) * std / sqrt(n); None for fewer than 2 values."""
    if len(values) < 2:
        return None
    from scipy.stats import t as student_t

    return float(student_t.ppf(0.975, len(values) - 1)) * float(pd.Series(values).std(ddof=1)) / len(values) ** 0.5


def report_args(doc: str | None, argv: list[str] | None) -> argparse.Namespace:
    """The results pages' command line: the sweeps dir to read and the page to write (--out, no suffix)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args(argv)


def paired_delta(target: pd.DataFrame, reference: pd.DataFrame, metric: str) -> dict[str, Any]:
    """target - reference seed by seed; the interval is mean ± t(0.975, n-1) * std / sqrt(n)."""
    pairs = target[["seed", metric]].merge(reference[["seed", metric]], on="seed", suffixes=("", "_ref")).dropna()
    if pairs.empty:
        return {}
    diffs = pairs[metric] - pairs[f"{metric}_ref"]
    out = {"delta": diffs.mean(), "delta_low": None, "delta_high": None, "wins": int((diffs > 0).sum()),
           "ties": int((diffs == 0).sum()), "losses": int((diffs < 0).sum()), "delta_seeds": list(pairs["seed"])}
    half = t_half_width(list(diffs))
    if half is not None:
        out.update(delta_low=out["delta"] - half, delta_high=out["delta"] + half)
    return out


def aggregate(runs: pd.DataFrame, group_by: list[str], metric: str) -> pd.DataFrame:
    """One row per group: n, seeds, mean and std of the metrics, the run-total self-labels, and against the
    references (same keys but schedule, and no variant) the paired difference and the gap closed."""
    rows = []
    grouped = runs.groupby(group_by, sort=False, dropna=False)
    for key, members in grouped:
        key = dict(zip(group_by, key if isinstance(key, tuple) else (key,)))
        row = {**key, "n": len(members), "seeds": ", ".join(map(str, members["seed"]))}
        for m in dict.fromkeys((metric, "test_accuracy", "test_ece")):
            values = pd.to_numeric(members[m], errors="coerce").dropna()
            row[f"{m}_mean"], row[f"{m}_std"] = (values.mean(), values.std(ddof=1) if len(values) > 1 else None) \
                if len(values) else (None, None)
        row["selected_total"] = members["selected_total"].mean()
        row["loops_run"] = members["loops_run"].mean()
        known = members["seed_rm_above_chance"].dropna()
        row["seed_rm_above_chance"] = f"{int(known.sum())}/{len(known)}" if len(known) else DASH
        rows.append(row)
    table = pd.DataFrame(rows)
    if "schedule" not in group_by:
        return table

    def reference(key: dict[str, Any], schedule: str) -> pd.DataFrame | None:
        ref = {**{k: key[k] for k in group_by}, "schedule": schedule}
        if "variant" in ref:  # the references select nothing: one seed_only / full_data row serves every variant
            ref["variant"] = NO_VARIANT
        mask = (runs[list(ref)] == pd.Series(ref)).all(axis=1)
        return runs[mask] if mask.any() else None

    for i, row in table.iterrows():
        if row["schedule"] == SEED_ONLY:
            continue
        members = runs[(runs[group_by] == row[group_by]).all(axis=1)]
        seed_only, full = reference(dict(row[group_by]), SEED_ONLY), reference(dict(row[group_by]), FULL_DATA)
        if seed_only is not None:
            for k, v in paired_delta(members, seed_only, metric).items():
                table.at[i, k] = v if k != "delta_seeds" else ", ".join(map(str, v))
        if row["schedule"] == FULL_DATA:
            continue
        if seed_only is None or full is None:
            table.at[i, "gap_note"] = NEEDS_REFERENCES
            continue
        # on the seeds all three share: a queue part way through (seed_only of a seed done, its SER run not yet)
        # would otherwise set one seed set's mean against another's
        shared = set(members["seed"]) & set(seed_only["seed"]) & set(full["seed"])
        if not shared:
            table.at[i, "gap_note"] = NO_SHARED_SEED
            continue
        on = lambda runs_: pd.to_numeric(runs_[runs_["seed"].isin(shared)][metric], errors="coerce").mean()
        x, s, f = on(members), on(seed_only), on(full)
        if f - s > 0:
            table.at[i, "gap_closed"] = 100 * (x - s) / (f - s)
            table.at[i, "gap_seeds"] = ", ".join(map(str, sorted(shared)))
        else:
            table.at[i, "gap_note"] = "full data not above seed-only"
    if "variant" in group_by:
        _versus_extended_variant(table, runs, group_by, metric)
    return table


def extended_variant(variant: str, others: Iterable[str]) -> str | None:
    """The variant `variant` extends: the longest other one it starts with (a switch's run appends the switch to
    its setting's variant, e.g. '... top25% retrain_from=last' extends '... top25%'); None if there is none."""
    bases = [o for o in others if o != variant and o != NO_VARIANT and variant.startswith(o)]
    return max(bases, key=len) if bases else None


def _versus_extended_variant(table: pd.DataFrame, runs: pd.DataFrame, group_by: list[str], metric: str) -> None:
    """A switch's row against the row it switches from (same keys but variant): paired, seed by seed."""
    rest = [k for k in group_by if k != "variant"]
    for i, row in table.iterrows():
        same = table[(table[rest] == row[rest]).all(axis=1)] if rest else table
        base = extended_variant(str(row["variant"]), same["variant"].astype(str))
        if base is None:
            continue
        members = runs[(runs[group_by] == row[group_by]).all(axis=1)]
        reference = runs[(runs[rest] == row[rest]).all(axis=1) & (runs["variant"] == base)] if rest else \
            runs[runs["variant"] == base]
        delta = paired_delta(members, reference, metric)
        if delta:
            table.at[i, "versus"] = base
            for k, v in delta.items():
                table.at[i, f"versus_{k}"] = v if k != "delta_seeds" else ", ".join(map(str, v))


# ---- rendering ---------------------------------------------------------------------------------------
def _is_accuracy(metric: str) -> bool:
    return "accuracy" in metric


def _header(metric: str) -> str:
    return f"{metric} (%)" if _is_accuracy(metric) else metric


def _mean_std(metric: str, mean: Any, std: Any) -> str:
    if mean is None or pd.isna(mean):
        return DASH
    scale, digits = (100, 2) if _is_accuracy(metric) else (1, 3)
    spread = DASH if std is None or pd.isna(std) else f"{scale * std:.{digits}f}"
    return f"{scale * mean:.{digits}f} ± {spread}"


def _delta(row: pd.Series, metric: str, n: int) -> str:
    """'+1.02 [-2.10, +4.14] 2/0/1' (points for accuracies): mean, 95% CI, wins/ties/losses vs seed_only."""
    if pd.isna(row.get("delta", float("nan"))):
        return DASH
    scale, digits = (100, 2) if _is_accuracy(metric) else (1, 3)
    text = f"{scale * row['delta']:+.{digits}f}"
    if not pd.isna(row.get("delta_low", float("nan"))):
        text += f" [{scale * row['delta_low']:+.{digits}f}, {scale * row['delta_high']:+.{digits}f}]"
    text += f" {int(row['wins'])}/{int(row['ties'])}/{int(row['losses'])}"
    if len(str(row["delta_seeds"]).split(", ")) < n:
        text += f" (seeds {row['delta_seeds']})"
    return text


def display_table(c: Collection) -> tuple[pd.DataFrame, list[str]]:
    """The table as shown (formatted cells), and its footnotes."""
    metrics, notes = list(dict.fromkeys((c.metric, "test_accuracy", "test_ece"))), []
    shown = c.table[c.group_by + ["seeds"]].copy()
    for m in metrics:
        shown[_header(m)] = [_mean_std(m, r[f"{m}_mean"], r[f"{m}_std"]) for _, r in c.table.iterrows()]
    shown["self-labels (run total)"] = [f"{v:.0f}" for v in c.table["selected_total"]]
    if "schedule" in c.group_by:
        gaps = []
        for _, r in c.table.iterrows():
            if r["schedule"] in (SEED_ONLY, FULL_DATA):
                gaps.append("")
            elif not pd.isna(r.get("gap_closed", float("nan"))):
                shared = str(r["gap_seeds"])
                on_all = len(shared.split(", ")) == int(r["n"])
                gaps.append(f"{r['gap_closed']:.1f}%" + ("" if on_all else f" (seeds {shared})"))
            else:
                note = r.get("gap_note") or NEEDS_REFERENCES
                notes.append(note) if note not in notes else None
                gaps.append(DASH + "¹²³"[notes.index(note)])
        shown[f"gap closed ({c.metric})"] = gaps
        shown["Δ vs seed_only [95% CI] W/T/L"] = ["" if r["schedule"] == SEED_ONLY else _delta(r, c.metric, int(r["n"]))
                                                  for _, r in c.table.iterrows()]
    if "versus" in c.table:  # a switch beside the setting it switches from: their paired difference
        versus = c.table[["n", "versus"] + [k for k in c.table if k.startswith("versus_")]]
        versus = versus.rename(columns=lambda k: k.removeprefix("versus_"))
        shown["Δ vs the variant it extends [95% CI] W/T/L"] = [
            "" if pd.isna(r["versus"]) else _delta(r, c.metric, int(r["n"])) for _, r in versus.iterrows()]
    shown["seed RM above chance on val"] = c.table["seed_rm_above_chance"]
    return shown, [f"{'¹²³'[i]} {note}" for i, note in enumerate(notes)]


def _markdown(frame: pd.DataFrame) -> str:
    headers = [str(h) for h in frame.columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def markdown_table(c: Collection) -> str:
    shown, notes = display_table(c)
    return _markdown(shown) + ("\n" + "\n".join(notes) + "\n" if notes else "")


def latex_table(c: Collection) -> str:
    shown, notes = display_table(c)
    tex = shown.to_latex(index=False, escape=True, column_format="l" * len(shown.columns))
    return tex + "".join(f"% {n}\n" for n in notes)


def loop_means(c: Collection) -> pd.DataFrame:
    """Per group and loop, means over the runs that reached the loop (self-labeling runs only)."""
    ser = c.loops[c.loops.groupby(c.group_by + ["seed"])["loop"].transform("max") > 0] if len(c.loops) else c.loops
    if ser.empty:
        return ser
    extra = [k for k in ser.columns if k.startswith("test_accuracy_by_group.")]
    agg = {"runs": ("seed", "count"), "selected": ("selected", "mean"),
           "self_label_accuracy": ("self_label_accuracy", "mean"), "val_accuracy": ("val_accuracy", "mean"),
           "test_accuracy": ("test_accuracy", "mean"), **{k.split(".")[-1]: (k, "mean") for k in extra},
           "final_here": ("final", "sum")}
    numeric = ser.copy()
    for k in ("selected", "self_label_accuracy", "val_accuracy", "test_accuracy", *extra):
        numeric[k] = pd.to_numeric(numeric[k], errors="coerce")
    return numeric.groupby(c.group_by + ["loop"], sort=False, dropna=False).agg(**agg).reset_index()


def loop_table(c: Collection) -> str:
    means = loop_means(c)
    if means.empty:
        return ""
    shown = means[c.group_by + ["loop", "runs"]].copy()
    shown["selected (mean)"] = [DASH if pd.isna(v) else f"{v:.1f}" for v in means["selected"]]
    pct = lambda v: DASH if pd.isna(v) else f"{100 * v:.2f}"  # noqa: E731
    for col, name in (("self_label_accuracy", "self-label accuracy (%)"), ("val_accuracy", "val accuracy (%)"),
                      ("test_accuracy", "test accuracy (%)"), ("stark", "stark test (%)"), ("subtle", "subtle test (%)")):
        if col in means:
            shown[name] = [pct(v) for v in means[col]]
    shown["final RM from this loop"] = means["final_here"].astype(int)
    return _markdown(shown)


def plot(c: Collection, path: Path) -> Path:
    """Left: the mean final metric per schedule (± std), axis from 0 with a coin's 50% marked; right: the metric
    per loop of every ser run, with the seed_only and full_data means as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric, scale = c.metric, 100 if _is_accuracy(c.metric) else 1
    clusters = [k for k in c.group_by if k != "schedule"]
    table = c.table.assign(cluster=c.table[clusters].astype(str).agg("/".join, axis=1) if clusters else "all runs")
    fig, (bars, loops) = plt.subplots(1, 2, figsize=(14, 6))
    names = list(dict.fromkeys(table["cluster"]))
    series = list(dict.fromkeys(table["schedule"])) if "schedule" in table else [metric]
    width = 0.8 / len(series)
    for j, name in enumerate(series):
        rows = table[table["schedule"] == name] if "schedule" in table else table
        xs = [names.index(cl) + (j - (len(series) - 1) / 2) * width for cl in rows["cluster"]]
        bars.bar(xs, scale * rows[f"{metric}_mean"], width, yerr=scale * rows[f"{metric}_std"].fillna(0.0).astype(float),
                 capsize=3, label=name)
    if _is_accuracy(metric):
        bars.axhline(50, color="grey", linestyle=":", linewidth=1, label="a coin (50%)")
        bars.set_ylim(0, 100)
    many = len(names) > 3
    bars.set_xticks(range(len(names)), names, rotation=35 if many else 0, ha="right" if many else "center",
                    fontsize=6 if many else None)
    bars.set_ylabel(_header(metric))
    bars.set_title(f"final {metric} (mean ± std over seeds)")
    bars.grid(axis="y", alpha=0.3)
    bars.legend(fontsize=8)
    ser = c.loops[c.loops["schedule"] == SER] if "schedule" in c.loops else c.loops.iloc[0:0]
    loops.set_title(f"{metric} per loop of the ser runs")
    for (_, run) in ser.groupby("path", sort=False):
        loops.plot(run["loop"], scale * pd.to_numeric(run[metric], errors="coerce"), linewidth=0.8, alpha=0.5)
    for schedule, style in ((SEED_ONLY, "--"), (FULL_DATA, ":")):
        refs = c.runs[c.runs["schedule"] == schedule][metric] if "schedule" in c.runs else []
        if len(refs):
            loops.axhline(scale * refs.mean(), color="black", linestyle=style, linewidth=1, label=f"{schedule} mean")
    loops.set_xlabel("loop (0 = seed RM)")
    loops.set_ylabel(_header(metric))
    loops.grid(alpha=0.3)
    if len(ser) or len(c.runs):
        loops.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    try:
        fig.savefig(tmp, dpi=110)
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def write_outputs(c: Collection, prefix: str | Path, command: str, regenerate: str | None = None) -> list[Path]:
    """PREFIX.md, PREFIX.tex, PREFIX.csv (the table), PREFIX_runs.csv (per run and loop), PREFIX.png."""
    prefix = Path(prefix)
    runs_csv = prefix.with_name(prefix.name + "_runs.csv")
    if regenerate:  # the caller's own command (e.g. a script with globs): the run dirs are in the runs CSV
        provenance = f"{len(c.runs)} runs (their dirs: the `path` column of {runs_csv.name}); regenerate with:"
        command = regenerate
    else:
        provenance = f"{len(c.runs)} runs collected from {', '.join(f'`{d}`' for d in c.dirs)} with:"
    text = f"# {prefix.name}\n\n{markdown_table(c)}\n{provenance}\n\n```\n{command}\n```\n"
    if c.unfinished:
        text += f"\n{_unfinished_line(c.unfinished)}\n"
    if loops := loop_table(c):
        text += f"\n## Per loop (means over the runs that reached the loop)\n\n{loops}"
    return [atomic_write_text(prefix.with_name(prefix.name + ".md"), text),
            atomic_write_text(prefix.with_name(prefix.name + ".tex"), latex_table(c)),
            atomic_write_text(prefix.with_name(prefix.name + ".csv"), c.table.to_csv(index=False)),
            atomic_write_text(runs_csv, c.loops.to_csv(index=False)),
            plot(c, prefix.with_name(prefix.name + ".png"))]


def _unfinished_line(unfinished: Sequence[Path]) -> str:
    return f"{len(unfinished)} runs without summary.json: {', '.join(map(str, unfinished))}"


# ---- command line ------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+", help="run or sweep dirs, searched recursively for summary.json")
    parser.add_argument("--out", help="write OUT.md, OUT.tex, OUT.csv, OUT_runs.csv and OUT.png")
    parser.add_argument("--group-by", default=",".join(DEFAULT_GROUP_BY),
                        help="comma-separated summary keys, dotted paths allowed (default: %(default)s)")
    parser.add_argument("--metric", default=DEFAULT_METRIC,
                        help="key of `final` for gap closed and the figure, higher is better (default: %(default)s)")
    parser.add_argument("--regenerate", help="the command to show as the table's provenance, instead of this one with "
                        "its expanded globs (e.g. 'bash experiments/real_data.sh tables')")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    group_by = [k.strip() for k in args.group_by.split(",") if k.strip()]
    try:
        collection = collect(args.dirs, group_by, args.metric)
    except CollectError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if collection.unfinished:
        print(_unfinished_line(collection.unfinished), file=sys.stderr)
    print(markdown_table(collection), end="")
    if args.out:
        command = "python " + shlex.join([str(Path(__file__).resolve().relative_to(ROOT)), *argv])
        for path in write_outputs(collection, args.out, command, args.regenerate):
            print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
