"""Collect the summary.json of many runs into one results table, CSV and figure.

    python experiments/collect.py outputs/ser/sweeps
    python experiments/collect.py outputs/ser/sweeps --out docs/results/synthetic_minilm
    python experiments/collect.py outputs/a outputs/b --group-by data,rm,schedule,splits.seed --metric val_accuracy

Runs are grouped by (data, rm, schedule) by default; each group reports mean ± sample std over seeds.
Where a (data, rm) cell has seed_only, full_data and another schedule, that schedule also gets
"gap closed": how much of the seed_only -> full_data gap in the metric it closes. Every schedule beside a
seed_only reference also gets its paired difference from it, seed by seed: mean, 95% t-interval and
wins/ties/losses, because a difference of means over 3 seeds says little when the seeds differ more than
the schedules do.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python experiments/collect.py` puts experiments/, not the repo root, on sys.path
    sys.path.insert(0, str(ROOT))

from ser.io import atomic_write_csv, atomic_write_text  # noqa: E402

SEED_ONLY, SER, FULL_DATA = "seed_only", "ser", "full_data"
SCHEDULE_ORDER = (SEED_ONLY, SER, FULL_DATA)  # the reading order of the paper; other schedules follow by name
DEFAULT_GROUP_BY = ("data", "rm", "schedule")
DEFAULT_METRIC = "test_accuracy"
DASH = "—"
NO_VARIANT = "-"  # summary.json's variant of seed_only and full_data runs (ser.pipeline.NO_VARIANT)


class CollectError(Exception):
    """The collected runs cannot give a trustworthy table (malformed file, duplicate seed, nothing found)."""


@dataclass(frozen=True)
class Run:
    path: Path
    summary: dict[str, Any]

    @property
    def seed(self) -> Any:
        return self.summary.get("seed")

    @property
    def final(self) -> dict[str, Any]:
        return self.summary["final"]

    @property
    def loops_run(self) -> int:
        return len(self.summary["loops"]) - 1  # loop 0 is the seed RM, not an SER loop

    @property
    def seed_rm_above_chance(self) -> bool | None:
        """Is the seed RM (loop 0) better than a coin on validation: one-sided binomial test, p < 0.05?
        None when the run did not record its validation size or loop-0 accuracy."""
        n_val = (self.summary.get("splits") or {}).get("val")
        acc = self.summary["loops"][0].get("val_accuracy")
        if not (_is_number(n_val) and n_val > 0 and _is_number(acc)):
            return None
        from scipy.stats import binomtest

        return binomtest(round(acc * n_val), int(n_val), 0.5, alternative="greater").pvalue < 0.05

    @property
    def selected_total(self) -> int:
        """Self-labeled pairs the reported (final) model was trained with."""
        return _final_loop_entry(self.summary)["selected_total"]


@dataclass(frozen=True)
class MeanStd:
    mean: float
    std: float | None  # None when n == 1: a single run has no spread


@dataclass(frozen=True)
class GapClosed:
    """Share (%) of the seed_only -> full_data gap a schedule closes; a note says why a value is missing."""
    of_means: float | None
    per_seed: MeanStd | None
    paired_seeds: list[Any]
    of_means_note: str = ""
    per_seed_note: str = ""


@dataclass(frozen=True)
class PairedDelta:
    """target - seed_only on the seeds both ran: mean, 95% t-interval (None for one seed), wins/ties/losses."""
    mean: float
    ci: tuple[float, float] | None
    wins: int
    ties: int
    losses: int
    seeds: list[Any]


@dataclass
class Group:
    key: dict[str, Any]
    runs: list[Run]
    metrics: dict[str, MeanStd | None]
    loops_run: float
    selected_total: float
    gap: GapClosed | None = None
    delta: PairedDelta | None = None

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def seeds(self) -> list[Any]:
        return [r.seed for r in self.runs]

    def above_chance_cell(self) -> str:
        """'4/12': runs whose seed RM beats a coin on validation (p < 0.05) of those that recorded it."""
        known = [r.seed_rm_above_chance for r in self.runs if r.seed_rm_above_chance is not None]
        return f"{sum(known)}/{len(known)}" if known else DASH


@dataclass
class Collection:
    dirs: list[Path]
    group_by: list[str]
    metric: str
    runs: list[Run]
    groups: list[Group]
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


def load_run(path: Path, metric: str = DEFAULT_METRIC) -> Run:
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
        _validate(summary, metric)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CollectError(f"malformed summary.json: {path}: {err}") from err
    return Run(path, summary)


def _validate(summary: Any, metric: str) -> None:
    if not isinstance(summary, dict):
        raise TypeError("top level is not an object")
    if not isinstance(summary.get("loops"), list) or not summary["loops"]:
        raise ValueError("'loops' is missing or empty")
    if not isinstance(summary.get("final"), dict):
        raise ValueError("'final' is missing")
    if not _is_number(summary["final"].get(metric)):
        raise ValueError(f"final.{metric} is missing or not a number")
    _final_loop_entry(summary)


def _final_loop_entry(summary: dict[str, Any]) -> dict[str, Any]:
    loop = summary["final"].get("loop")
    for entry in summary["loops"]:
        if entry.get("loop") == loop:
            return entry
    raise KeyError(f"final.loop {loop!r} is not among the loops")


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


# ---- grouping and statistics -----------------------------------------------------------------------
def _order_value(value: Any) -> tuple[int, float, str]:
    return (0, value, "") if _is_number(value) else (1, 0.0, str(value))


def _schedule_rank(schedule: Any) -> int:
    return SCHEDULE_ORDER.index(schedule) if schedule in SCHEDULE_ORDER else len(SCHEDULE_ORDER)


def _group_order(key: tuple[Any, ...], group_by: Sequence[str]) -> tuple[Any, ...]:
    return tuple((_schedule_rank(value) if name == "schedule" else 0, *_order_value(value))
                 for name, value in zip(group_by, key))


def group_runs(runs: Iterable[Run], group_by: Sequence[str]) -> dict[tuple[Any, ...], list[Run]]:
    """Runs per group key, in table order; a (group, seed) seen twice is an error (it would bias the mean)."""
    groups: dict[tuple[Any, ...], list[Run]] = {}
    seen: dict[tuple[Any, ...], Run] = {}
    for run in runs:
        try:
            key = tuple(lookup(run.summary, k) for k in group_by)
        except KeyError as err:
            raise CollectError(f"{run.path}: has no group-by key {err}") from err
        if any(isinstance(v, (dict, list)) for v in key):
            raise CollectError(f"{run.path}: group-by keys {list(group_by)} must name single values, not objects")
        other = seen.setdefault((*key, _order_value(run.seed)), run)
        if other is not run:
            raise CollectError(f"duplicate runs for {dict(zip(group_by, key))}, seed {run.seed}: "
                               f"{other.path} and {run.path}")
        groups.setdefault(key, []).append(run)
    for members in groups.values():
        members.sort(key=lambda r: _order_value(r.seed))
    return {k: groups[k] for k in sorted(groups, key=lambda k: _group_order(k, group_by))}


def mean_std(values: Sequence[float]) -> MeanStd | None:
    if not values:
        return None
    return MeanStd(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None)


def shown_metrics(metric: str) -> list[str]:
    return list(dict.fromkeys([metric, "test_accuracy", "test_ece"]))


def summarize(key: dict[str, Any], runs: list[Run], metric: str) -> Group:
    # a metric a run did not record (e.g. test_ece null) is left out of that metric's mean only
    metrics = {m: mean_std([r.final[m] for r in runs if _is_number(r.final.get(m))]) for m in shown_metrics(metric)}
    return Group(key=key, runs=runs, metrics=metrics,
                 loops_run=statistics.fmean(r.loops_run for r in runs),
                 selected_total=statistics.fmean(r.selected_total for r in runs))


def gap_closed(target: Group, seed_only: Group, full: Group, metric: str) -> GapClosed:
    """(target - seed_only) / (full_data - seed_only) in %, of the means and per paired seed."""
    t, s, f = (g.metrics[metric].mean for g in (target, seed_only, full))
    of_means, of_means_note = (100 * (t - s) / (f - s), "") if f - s > 0 else (None, "n/a (full <= seed)")

    by_seed = [{_order_value(r.seed): r.final[metric] for r in g.runs} for g in (target, seed_only, full)]
    paired = sorted(set(by_seed[0]) & set(by_seed[1]) & set(by_seed[2]))
    seeds = [r.seed for r in target.runs if _order_value(r.seed) in paired]
    if not paired:
        return GapClosed(of_means, None, [], of_means_note, "n/a (no seed in all three)")
    if any(by_seed[2][k] - by_seed[1][k] <= 0 for k in paired):
        return GapClosed(of_means, None, seeds, of_means_note, "n/a (full <= seed)")
    ratios = [100 * (by_seed[0][k] - by_seed[1][k]) / (by_seed[2][k] - by_seed[1][k]) for k in paired]
    return GapClosed(of_means, mean_std(ratios), seeds, of_means_note)


def paired_delta(target: Group, seed_only: Group, metric: str) -> PairedDelta | None:
    """target - seed_only seed by seed; the interval is mean ± t(0.975, n-1) * std / sqrt(n)."""
    reference = {_order_value(r.seed): r.final.get(metric) for r in seed_only.runs}
    pairs = [(r.seed, r.final.get(metric), reference.get(_order_value(r.seed))) for r in target.runs]
    pairs = [(seed, t, s) for seed, t, s in pairs if _is_number(t) and _is_number(s)]
    if not pairs:
        return None
    diffs = [t - s for _, t, s in pairs]
    mean = statistics.fmean(diffs)
    ci = None
    if len(diffs) > 1:
        from scipy.stats import t as student_t

        half = float(student_t.ppf(0.975, len(diffs) - 1)) * statistics.stdev(diffs) / len(diffs) ** 0.5
        ci = (mean - half, mean + half)
    return PairedDelta(mean, ci, sum(d > 0 for d in diffs), sum(d == 0 for d in diffs), sum(d < 0 for d in diffs),
                       [seed for seed, _, _ in pairs])


def add_gaps(groups: list[Group], group_by: Sequence[str], metric: str) -> None:
    """Give every schedule other than the two references a gap-closed value where both references exist,
    and a paired difference from seed_only where that reference exists."""
    if "schedule" not in group_by:
        return
    by_key = {tuple(g.key.items()): g for g in groups}

    def reference(group: Group, schedule: str) -> Group | None:
        key = {**group.key, "schedule": schedule}
        if "variant" in key:  # the references select nothing: one seed_only / full_data row serves every variant
            key["variant"] = NO_VARIANT
        return by_key.get(tuple(key.items()))

    for group in groups:
        if group.key["schedule"] in (SEED_ONLY, FULL_DATA):
            continue
        seed_only, full = reference(group, SEED_ONLY), reference(group, FULL_DATA)
        if seed_only:
            group.delta = paired_delta(group, seed_only, metric)
        if seed_only and full:
            group.gap = gap_closed(group, seed_only, full, metric)


def collect(dirs: Sequence[str | Path], group_by: Sequence[str] = DEFAULT_GROUP_BY,
            metric: str = DEFAULT_METRIC) -> Collection:
    paths, unfinished = find_runs(dirs)
    if not paths:
        hint = f" ({_unfinished_line(unfinished)})" if unfinished else ""
        raise CollectError(f"no summary.json found under {', '.join(map(str, dirs))}{hint}")
    runs = [load_run(p, metric) for p in paths]
    grouped = group_runs(runs, group_by)
    groups = [summarize(dict(zip(group_by, key)), members, metric) for key, members in grouped.items()]
    add_gaps(groups, group_by, metric)
    ordered_runs = [r for members in grouped.values() for r in members]
    return Collection([Path(d) for d in dirs], list(group_by), metric, ordered_runs, groups, unfinished)


# ---- rendering ---------------------------------------------------------------------------------------
def _is_accuracy(metric: str) -> bool:
    return "accuracy" in metric


def _metric_header(metric: str) -> str:
    return f"{metric} (%)" if _is_accuracy(metric) else metric


def format_metric(metric: str, value: MeanStd | None) -> str:
    """Accuracy in percent with 2 decimals, anything else (ECE) raw with 3."""
    if value is None:
        return DASH
    scale, digits = (100, 2) if _is_accuracy(metric) else (1, 3)
    std = DASH if value.std is None else f"{scale * value.std:.{digits}f}"
    return f"{scale * value.mean:.{digits}f} ± {std}"


def _gap_cells(group: Group) -> list[str]:
    gap = group.gap
    if gap is None:
        return [DASH, DASH]
    of_means = gap.of_means_note or f"{gap.of_means:.2f}%"
    if gap.per_seed is None:
        return [of_means, gap.per_seed_note]
    std = DASH if gap.per_seed.std is None else f"{gap.per_seed.std:.2f}"
    per_seed = f"{gap.per_seed.mean:.2f} ± {std}%"
    if len(gap.paired_seeds) < group.n:  # say so when only some seeds could be paired
        per_seed += f" (seeds {', '.join(map(str, gap.paired_seeds))})"
    return [of_means, per_seed]


def _delta_cell(group: Group, metric: str) -> str:
    """'+1.02 [-2.10, +4.14] 2/0/1' (points for accuracies): mean, 95% CI, wins/ties/losses vs seed_only."""
    d = group.delta
    if d is None:
        return DASH
    scale, digits = (100, 2) if _is_accuracy(metric) else (1, 3)
    text = f"{scale * d.mean:+.{digits}f}"
    if d.ci is not None:
        text += f" [{scale * d.ci[0]:+.{digits}f}, {scale * d.ci[1]:+.{digits}f}]"
    text += f" {d.wins}/{d.ties}/{d.losses}"
    if len(d.seeds) < group.n:
        text += f" (seeds {', '.join(map(str, d.seeds))})"
    return text


def markdown_table(collection: Collection) -> str:
    metrics = shown_metrics(collection.metric)
    headers = [*collection.group_by, "n", "seeds", *map(_metric_header, metrics), "loops run", "selected_total"]
    with_gap = "schedule" in collection.group_by
    if with_gap:
        headers += [f"gap closed (of means, {collection.metric})", "gap closed per seed mean ± std",
                    "Δ vs seed_only per seed [95% CI] W/T/L"]
    headers.append("loop-0 RM above chance on val (binomial p < 0.05)")  # the seed RM: can its self-labels beat coin flips?
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for g in collection.groups:
        cells = [*(str(v) for v in g.key.values()), str(g.n), ", ".join(map(str, g.seeds)),
                 *(format_metric(m, g.metrics[m]) for m in metrics), f"{g.loops_run:.2f}", f"{g.selected_total:.1f}"]
        if with_gap:
            cells += [*_gap_cells(g), _delta_cell(g, collection.metric)]
        cells.append(g.above_chance_cell())
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def loop_rows(collection: Collection) -> list[dict[str, Any]]:
    """Per group of self-labeling runs and per loop, means over the runs that reached the loop: what
    each loop selected, how often its self-labels were right, and what validation and test then saw."""
    rows = []
    for g in collection.groups:
        if not any(r.loops_run > 0 for r in g.runs):
            continue
        for loop in range(max(len(r.summary["loops"]) for r in g.runs)):
            entries = [r.summary["loops"][loop] for r in g.runs if len(r.summary["loops"]) > loop]

            def mean(key: str) -> float | None:
                values = [e[key] for e in entries if _is_number(e.get(key))]
                return sum(values) / len(values) if values else None

            rows.append({**g.key, "loop": loop, "runs": len(entries), "selected": mean("selected"),
                         "self_label_accuracy": mean("self_label_accuracy"), "val_accuracy": mean("val_accuracy"),
                         "test_accuracy": mean("test_accuracy"),
                         "final_here": sum(r.final["loop"] == loop for r in g.runs)})
    return rows


def loop_table(collection: Collection) -> str:
    rows = loop_rows(collection)
    if not rows:
        return ""
    headers = [*collection.group_by, "loop", "runs", "selected (mean)", "self-label accuracy (%)",
               "val accuracy (%)", "test accuracy (%)", "final RM from this loop"]

    def pct(v: float | None) -> str:
        return DASH if v is None else f"{100 * v:.2f}"

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        cells = [*(str(r[k]) for k in collection.group_by), str(r["loop"]), str(r["runs"]),
                 DASH if r["selected"] is None else f"{r['selected']:.1f}", pct(r["self_label_accuracy"]),
                 pct(r["val_accuracy"]), pct(r["test_accuracy"]), str(r["final_here"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_rows(collection: Collection) -> list[dict[str, Any]]:
    """One row per run, in table order."""
    rows = []
    for run in collection.runs:
        row = {k: lookup(run.summary, k) for k in ("data", "rm", "schedule") if k in run.summary}
        row.update({k: lookup(run.summary, k) for k in collection.group_by})
        row.update({"seed": run.seed, "final_loop": run.final["loop"]})
        row.update({m: run.final.get(m) for m in ("val_accuracy", "test_accuracy", "test_ece", collection.metric)})
        row.update({"loops_run": run.loops_run, "selected_total": run.selected_total, "path": str(run.path)})
        rows.append(row)
    return rows


def _cluster(summary: dict[str, Any], group_by: Sequence[str]) -> str:
    """The bar cluster / line colour of a run: its group key without the schedule, e.g. 'synthetic/minilm'."""
    return "/".join(str(lookup(summary, k)) for k in group_by if k != "schedule") or "all runs"


def plot(collection: Collection, path: Path) -> Path:
    """Left: mean final metric per schedule (± std) per cluster; right: the metric per loop of every ser run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (bars, loops) = plt.subplots(1, 2, figsize=(14, 6))
    _plot_bars(bars, collection)
    _plot_ser_loops(loops, collection, plt.rcParams["axes.prop_cycle"].by_key()["color"])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=110)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path


def _plot_bars(ax: Any, collection: Collection) -> None:
    metric, scale = collection.metric, 100 if _is_accuracy(collection.metric) else 1
    clusters = list(dict.fromkeys(_cluster(g.runs[0].summary, collection.group_by) for g in collection.groups))
    series = list(dict.fromkeys(str(g.key.get("schedule", metric)) for g in collection.groups))
    width = 0.8 / len(series)
    for j, name in enumerate(series):
        members = [g for g in collection.groups if str(g.key.get("schedule", metric)) == name]
        offset = (j - (len(series) - 1) / 2) * width
        xs = [clusters.index(_cluster(g.runs[0].summary, collection.group_by)) + offset for g in members]
        ax.bar(xs, [scale * g.metrics[metric].mean for g in members], width,
               yerr=[scale * (g.metrics[metric].std or 0.0) for g in members], capsize=3, label=name)
    many = len(clusters) > 3  # long variant names: slanted and small, or they print over each other
    ax.set_xticks(range(len(clusters)), clusters, rotation=35 if many else 0, ha="right" if many else "center",
                  fontsize=6 if many else None)
    ax.set_ylabel(_metric_header(metric))
    ax.set_title(f"final {metric} (mean ± std over seeds)")
    low = min(scale * g.metrics[metric].mean for g in collection.groups)
    ax.set_ylim(bottom=max(0.0, low - 0.15 * scale) if low > 0 else None)  # accuracies differ in the top 30%
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def _plot_ser_loops(ax: Any, collection: Collection, colors: list[str]) -> None:
    from matplotlib.ticker import MaxNLocator

    metric, scale = collection.metric, 100 if _is_accuracy(collection.metric) else 1
    ser_runs = [r for r in collection.runs if r.summary.get("schedule") == SER]
    ax.set_title(f"{metric} per loop of the ser runs")
    if not ser_runs:
        ax.text(0.5, 0.5, "no ser runs", ha="center", va="center", transform=ax.transAxes)
        return
    clusters = list(dict.fromkeys(_cluster(r.summary, collection.group_by) for r in ser_runs))
    for i, cluster in enumerate(clusters):
        color = colors[i % len(colors)]
        runs = [r for r in ser_runs if _cluster(r.summary, collection.group_by) == cluster]
        per_loop: dict[int, list[float]] = {}
        for run in runs:
            points = [(e["loop"], scale * e[metric]) for e in run.summary["loops"] if _is_number(e.get(metric))]
            ax.plot(*zip(*points), color=color, linewidth=0.8, alpha=0.4)
            for loop, value in points:
                per_loop.setdefault(loop, []).append(value)
        # runs stop at different loops: a loop's mean is over the runs that reached it
        xs = sorted(per_loop)
        ax.plot(xs, [statistics.fmean(per_loop[x]) for x in xs], color=color, linewidth=2.5,
                marker="o", label=f"ser {cluster} (mean of {len(runs)})")
        for schedule in (SEED_ONLY, FULL_DATA):
            refs = [r.final[metric] for r in collection.runs
                    if r.summary.get("schedule") == schedule and _cluster(r.summary, collection.group_by) == cluster]
            if refs:
                ax.axhline(scale * statistics.fmean(refs), color=color, linestyle="--", linewidth=1,
                           label=f"{schedule} {cluster} mean")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("loop (0 = seed RM)")
    ax.set_ylabel(_metric_header(metric))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def write_outputs(collection: Collection, prefix: str | Path, command: str, regenerate: str | None = None) -> list[Path]:
    """PREFIX.md (table + provenance), PREFIX.csv (one row per run), PREFIX.png; every write atomic."""
    prefix = Path(prefix)
    if regenerate:  # the caller's own command (e.g. a script with globs): the run dirs are in the CSV's path column
        provenance = f"{len(collection.runs)} runs (their dirs: the `path` column of {prefix.name}.csv); regenerate with:"
        command = regenerate
    else:
        dirs = ", ".join(f"`{d}`" for d in collection.dirs)
        provenance = f"{len(collection.runs)} runs collected from {dirs} with:"
    text = f"# {prefix.name}\n\n{markdown_table(collection)}\n{provenance}\n\n```\n{command}\n```\n"
    if collection.unfinished:
        text += f"\n{_unfinished_line(collection.unfinished)}\n"
    if loops := loop_table(collection):
        text += f"\n## Per loop (means over the runs that reached the loop)\n\n{loops}"
    return [atomic_write_text(prefix.with_name(prefix.name + ".md"), text),
            atomic_write_csv(prefix.with_name(prefix.name + ".csv"), csv_rows(collection)),
            plot(collection, prefix.with_name(prefix.name + ".png"))]


def _unfinished_line(unfinished: Sequence[Path]) -> str:
    return f"{len(unfinished)} runs without summary.json: {', '.join(map(str, unfinished))}"


# ---- command line ------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+", help="run or sweep dirs, searched recursively for summary.json")
    parser.add_argument("--out", help="write OUT.md, OUT.csv and OUT.png (e.g. docs/results/synthetic_minilm)")
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
