"""What a person sees: a line per finished loop, the loop table at the end, the accuracy-per-loop plot,
and every configured logger (CSV, wandb) fed the same per-loop metrics."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

log = logging.getLogger("ser")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def print_loop_table(loops: Sequence[dict[str, Any]], title: str = "", console: Console | None = None) -> None:
    table = Table(title=title)
    for column in ("loop", "status", "selected", "total", "self-label acc %", "val acc %", "test acc %",
                   "test ECE", "seconds"):
        table.add_column(column, justify="right")
    for e in loops:
        table.add_row(str(e["loop"]), str(e["status"] or "seed"), str(e["selected"]), str(e["selected_total"]),
                      _pct(e["self_label_accuracy"]), _pct(e["val_accuracy"]), _pct(e["test_accuracy"]),
                      "-" if e["test_ece"] is None else f"{e['test_ece']:.3f}", f"{e['seconds']:.1f}")
    # Logs and CI are not terminals: give the table room instead of rich's 80-column default.
    (console or Console(width=None if sys.stdout.isatty() else 160)).print(table)


def plot_loops(loops: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Validation, test and self-label accuracy per loop, with selected counts on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [e["loop"] for e in loops]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, style, label in (("val_accuracy", "o-", "validation accuracy"), ("test_accuracy", "s-", "test accuracy")):
        points = [(e["loop"], 100 * e[key]) for e in loops if e.get(key) is not None]  # a split may be empty
        if points:
            ax.plot(*zip(*points), style, label=label)
    sl = [(e["loop"], 100 * e["self_label_accuracy"]) for e in loops if e["self_label_accuracy"] is not None]
    if sl:
        ax.plot(*zip(*sl), "^--", label="self-label accuracy")
    ax.set_xlabel("loop (0 = seed RM)")
    ax.set_ylabel("accuracy (%)")
    ax.set_xticks(xs)
    ax.grid(alpha=0.3)
    counts = ax.twinx()
    counts.bar(xs, [e["selected_total"] for e in loops], alpha=0.15, color="grey", label="self-labeled pairs (total)")
    counts.set_ylabel("self-labeled pairs (total)")
    lines, labels = ax.get_legend_handles_labels()
    bars, bar_labels = counts.get_legend_handles_labels()
    ax.legend(lines + bars, labels + bar_labels, loc="lower right", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def loop_line(e: dict[str, Any]) -> str:
    """One finished loop in one line: the console's running record of the run."""
    return (f"loop {e['loop']} · status {e['status'] or 'seed'} · selected {e['selected']} (total {e['selected_total']})"
            f" · self-label {_pct(e['self_label_accuracy'])}% · val {_pct(e['val_accuracy'])}%"
            f" · test {_pct(e['test_accuracy'])}% · {e['seconds']:.0f} s")


class Reporter:
    """Console, plot and loggers of one run; only the writing rank (rank 0) reports."""

    def __init__(self, loggers: list, title: str, plot_path: Path, enabled: bool = True,
                 config: dict[str, Any] | None = None) -> None:
        self.loggers, self.title, self.plot_path, self.enabled = loggers, title, plot_path, enabled
        if enabled and config is not None:
            for lg in loggers:  # the composed config in every logger: wandb's config, CSV's hparams.yaml
                lg.log_hyperparams(config)
                lg.save()

    def loop(self, entry: dict[str, Any]) -> None:
        if not self.enabled:
            return
        for lg in self.loggers:
            lg.log_metrics({f"loop/{k}": v for k, v in entry.items() if isinstance(v, (int, float)) and v is not None},
                           step=entry["loop"])
        log.info("%s", loop_line(entry))

    def finish(self, loops: Sequence[dict[str, Any]], final: dict[str, Any]) -> None:
        if not self.enabled:
            return
        print_loop_table(loops, title=self.title)
        plot_loops(loops, self.plot_path, title=self.title)
        for lg in self.loggers:
            lg.log_metrics({k: v for k, v in (("final/test_accuracy", final.get("test_accuracy")),
                                              ("final/test_ece", final.get("test_ece"))) if v is not None}, step=len(loops))
            lg.finalize("success")
