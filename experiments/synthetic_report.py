"""The embedded default's results page: per-seed tables with stark / subtle / swapped-step columns, the
ceiling of self-labeling, and the training switches of the loop.

    python experiments/synthetic_report.py outputs/ser/sweeps --out docs/results/synthetic

Reads the runs of experiments/synthetic.sh (a run's setting is its sweep dir name minus `seed=`) and
writes OUT.md and OUT_runs.csv. Settings were chosen on seeds 0-4's validation splits; seeds 5-9 are fresh.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments.collect import find_runs, load_summary, paired_delta, report_args  # noqa: E402
from ser.data.synthetic import pair_kind  # noqa: E402
from ser.io import atomic_write_text  # noqa: E402

CEILING = "data.synthetic.withhold_from_pool=_swapped_steps_"
RM_SCHEDULES = ("seed_only", "ser", "full_data")
DATA = "synthetic"  # the embedded default (summary.json's `data`); harder variants are other data configs
SEED_SETS = {"seeds 0-4 (settings chosen on their validation)": range(0, 5), "fresh seeds 5-9": range(5, 10)}


def setting(path: Path) -> str:
    """The run's overrides without its seed: the setting it belongs to."""
    return ",".join(p for p in path.parent.name.split(",") if not p.startswith("seed=")) or "-"


def trained_precision(path: Path) -> str:
    """trainer.precision as the run dir's composed config records it."""
    config = path.parent / ".hydra" / "config.yaml"
    if not config.exists():
        return "unknown"
    return str(((yaml.safe_load(config.read_text()) or {}).get("trainer") or {}).get("precision", "unknown"))


def load(sweeps: Path) -> pd.DataFrame:
    rows = []
    for path in find_runs([sweeps])[0]:
        # the same sweeps dir holds coevolve and policy runs (a policy stage's summary has no loops) and the
        # real-data tables' RM runs: only the embedded default's RM runs belong on this page
        head = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(head, dict) or head.get("schedule") not in RM_SCHEDULES or head.get("data") != DATA:
            continue
        s = load_summary(path, "test_accuracy")
        final = next(e for e in s["loops"] if e["loop"] == s["final"]["loop"])
        first = s["loops"][0]
        by, by0 = final.get("test_accuracy_by_group") or {}, first.get("test_accuracy_by_group") or {}
        kind, kind0 = final.get("test_accuracy_by_kind") or {}, first.get("test_accuracy_by_kind") or {}
        rows.append({"setting": setting(path), "schedule": s["schedule"], "seed": s["seed"],
                     "val": s["final"]["val_accuracy"], "val_loss": final.get("val_loss", float("nan")),
                     "test": s["final"]["test_accuracy"],
                     "stark": by.get("stark"), "subtle": by.get("subtle"), "swapped": kind.get("swapped_steps"),
                     "stark0": by0.get("stark"), "subtle0": by0.get("subtle"), "swapped0": kind0.get("swapped_steps"),
                     "statuses": "".join(s.get("statuses") or []), "final_loop": s["final"]["loop"],
                     "selected_total": max(e.get("selected_total") or 0 for e in s["loops"]),
                     "precision": trained_precision(path), "path": str(path)})
    return pd.DataFrame(rows).sort_values(["setting", "schedule", "seed"]).reset_index(drop=True)


def pct(v: Any) -> str:
    return "—" if v is None or pd.isna(v) else f"{100 * v:.2f}"


def on_paired_seeds(by: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """seed_only / ser / full_data runs (indexed by seed) restricted to the seeds all three ran."""
    paired = sorted(set(by["ser"].index) & set(by["seed_only"].index) & set(by["full_data"].index))
    return {k: v.loc[paired] for k, v in by.items()}


def gap_stats(by: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """Test means of paired seed_only / ser / full_data runs, the share of the seed→full gap SER closes, and SER's
    paired difference from seed_only."""
    m = {k: v["test"].mean() for k, v in by.items()}
    return {"n": len(by["ser"]), **m, "gap_closed": 100 * (m["ser"] - m["seed_only"]) / (m["full_data"] - m["seed_only"]),
            **paired_delta(by["ser"].reset_index(), by["seed_only"].reset_index(), "test")}


def seed_table(runs: pd.DataFrame, seeds: range, ser_setting: str = "schedule=ser") -> tuple[str, dict[str, Any]]:
    """Per seed: seed_only, SER (the runs of `ser_setting`), full_data and the ceiling; the means over the seeds
    every column ran, with SER's paired difference from seed_only."""
    base = runs[runs["setting"].isin(["schedule=seed_only", ser_setting, "schedule=full_data"]) & runs["seed"].isin(seeds)]
    by = {k: base[base["schedule"] == k].set_index("seed") for k in ("seed_only", "ser", "full_data")}
    ceiling = runs[(runs["setting"] == f"{CEILING},schedule=full_data") & runs["seed"].isin(seeds)].set_index("seed")
    lines = ["| seed | seed_only | SER | full_data | ceiling¹ | SER − seed_only | stark: seed RM → SER | "
             "subtle: seed RM → SER | swapped steps: seed RM → SER | SER statuses (final loop) |",
             "|" + "---|" * 10]
    for seed in seeds:
        if seed not in by["ser"].index:
            continue
        s = by["ser"].loc[seed]
        so = by["seed_only"]["test"].get(seed)
        lines.append(f"| {seed} | {pct(so)} | {pct(s['test'])} | {pct(by['full_data']['test'].get(seed))} | "
                     f"{pct(ceiling['test'].get(seed))} | {'—' if so is None else f'{100 * (s.test - so):+.2f}'} | "
                     f"{pct(s['stark0'])} → {pct(s['stark'])} | {pct(s['subtle0'])} → {pct(s['subtle'])} | "
                     f"{pct(s['swapped0'])} → {pct(s['swapped'])} | {s['statuses']} ({s['final_loop']}) |")
    stats: dict[str, Any] = {}
    by = on_paired_seeds(by)  # means over the seeds every column ran
    paired = list(by["ser"].index)
    ceiling = ceiling.loc[[s for s in paired if s in ceiling.index]]
    if paired:
        stats = {**gap_stats(by), "subtle_gain": 100 * (by["ser"]["subtle"] - by["ser"]["subtle0"]).mean()}
        if len(ceiling):  # against seed_only and full_data on the seeds the ceiling ran
            c, cs = ceiling["test"].mean(), list(ceiling.index)
            so, full = by["seed_only"]["test"].loc[cs].mean(), by["full_data"]["test"].loc[cs].mean()
            stats.update(ceiling=c, ceiling_n=len(cs), ceiling_gap=100 * (c - so) / (full - so),
                         ser_gap_on_ceiling_seeds=100 * (by["ser"]["test"].loc[cs].mean() - so) / (full - so))
        ceiling_cell = pct(stats.get("ceiling")) + (f" ({stats['ceiling_n']} seeds)" if stats.get("ceiling_n", len(paired))
                                                     != len(paired) else "")
        lines.append(f"| mean ({len(paired)} seeds) | {pct(stats['seed_only'])} | {pct(stats['ser'])} | {pct(stats['full_data'])} | "
                     f"{ceiling_cell} | {100 * stats['delta']:+.2f} "
                     f"[{100 * stats['delta_low']:+.2f}, {100 * stats['delta_high']:+.2f}] "
                     f"{stats['wins']}/{stats['ties']}/{stats['losses']} | | {stats['subtle_gain']:+.2f} points | | |")
    return "\n".join(lines) + "\n", stats


def rm_overrides(overrides: list[str]) -> list[str]:
    """The overrides of a setting that change the RMs themselves, which seed_only and full_data take too: all but the
    schedule and the loop's own (ser.*, phases=)."""
    return [o for o in overrides if not o.startswith(("schedule=", "ser.", "phases="))]


def same_setting_baselines(runs: pd.DataFrame, seeds: range, ser_setting: str) -> dict[str, Any]:
    """SER with `ser_setting` against seed_only and full_data run with the setting's RM overrides (all but ser.* and
    phases=), on the seeds all three ran; {} when the setting has no such overrides or the baselines did not run."""
    rm = rm_overrides(ser_setting.split(","))
    if not rm:
        return {}
    def named(schedule: str) -> str:
        return ",".join(sorted([*rm, f"schedule={schedule}"]))

    by = on_paired_seeds({k: runs[(runs["setting"] == name) & runs["seed"].isin(seeds)].set_index("seed") for k, name
                          in (("seed_only", named("seed_only")), ("ser", ser_setting), ("full_data", named("full_data")))})
    if len(by["ser"]) < 2:
        return {}
    return {"rm_overrides": ",".join(rm), **gap_stats(by)}


def switches_table(runs: pd.DataFrame, chosen: str | None, seeds: tuple[int, ...]) -> str:
    """Each loop setting that finished on every one of `seeds`: the final RM's validation accuracy (what the choice
    is made on), then test; `chosen` (experiments/choose_on_val.py) marked."""
    ser = runs[(runs["schedule"] == "ser") & runs["seed"].isin(list(seeds))]
    lines = ["| setting | seeds | validation (%) | test (%) | subtle test (%) | statuses |", "|---|---|---|---|---|---|"]
    for name, group in ser.groupby("setting", sort=True):
        if set(group["seed"]) != set(seeds):
            continue
        group = group.sort_values("seed")
        mark = " **(chosen)**" if name == chosen else ""
        lines.append(f"| `{name}`{mark} | {', '.join(map(str, group['seed']))} | {pct(group['val'].mean())} | "
                     f"{pct(group['test'].mean())} | {pct(group['subtle'].mean())} | {' '.join(group['statuses'])} |")
    return "\n".join(lines) + "\n"


def round_section(runs: pd.DataFrame, seeds: tuple[int, ...], title: str, chosen_for: str, flag: str = "",
                  min_candidates: int = 0) -> str:
    """One round of the screen: its candidates on `seeds` (experiments/choose_on_val.py), the winner named and marked;
    "" when fewer than `min_candidates` settings finished on every one of them."""
    from experiments.choose_on_val import candidates  # it reads runs with this module's load()

    ranked = candidates(runs, seeds)
    if len(ranked) < min_candidates:
        return ""
    chosen = ranked["setting"].iloc[0] if len(ranked) else None
    span = f"seeds {seeds[0]}-{seeds[-1]}"
    return (f"\n## {title} ({span}; chosen on validation)\n\n"
            + (f"Chosen for {chosen_for} (`experiments/choose_on_val.py{flag}`: the best mean validation accuracy of "
               f"the final RM on {span}, ties to the lower validation loss, among {len(ranked)} settings): "
               f"`{chosen}`.\n\n" if chosen else "") + switches_table(runs, chosen, seeds))


def per_loop_table(runs: pd.DataFrame) -> str:
    """The default SER runs loop by loop: what each status selected, by kind, and how right its self-labels were."""
    lines = ["| seed | loop | status | selected | stark / subtle selected | self-labels right: stark / subtle | "
             "subtle test (%) |", "|---|---|---|---|---|---|---|"]
    for _, run in runs[runs["setting"] == "schedule=ser"].sort_values("seed").iterrows():
        for e in load_summary(Path(run["path"]), "test_accuracy")["loops"][1:]:
            by, right = e.get("selected_by_group") or {}, e.get("self_label_accuracy_by_group") or {}
            lines.append(f"| {run['seed']} | {e['loop']} | {e['status']} | {e['selected']} | "
                         f"{by.get('stark', '—')} / {by.get('subtle', '—')} | "
                         f"{pct(right.get('stark'))} / {pct(right.get('subtle'))} | "
                         f"{pct((e.get('test_accuracy_by_group') or {}).get('subtle'))} |")
    return "\n".join(lines) + "\n"


def by_kind_table(runs: pd.DataFrame, seeds: range) -> str:
    """The default SER runs by fault kind, summed over seeds: how many self-labels of each kind each loop kept
    (from selflabels/loop_<k>.jsonl) and how right they were, beside that kind's test accuracy after the loop."""
    ser = runs[(runs["setting"] == "schedule=ser") & runs["seed"].isin(list(seeds))]
    if ser.empty:
        return ""
    kept: dict[tuple[int, str], list[int]] = {}
    test: dict[tuple[int, str], list[float]] = {}
    loops: set[int] = set()
    for _, run in ser.iterrows():
        path = Path(run["path"])  # the run's summary.json
        for e in load_summary(path, "test_accuracy")["loops"]:
            loops.add(e["loop"])
            for kind, acc in (e.get("test_accuracy_by_kind") or {}).items():
                test.setdefault((e["loop"], kind), []).append(acc)
            labels = path.parent / "selflabels" / f"loop_{e['loop']}.jsonl"
            for line in labels.read_text().splitlines() if labels.exists() else []:
                row = json.loads(line)
                counts = kept.setdefault((e["loop"], pair_kind(row["id"])), [0, 0])
                counts[0] += 1
                counts[1] += bool(row["correct"])
    kinds = sorted({k for _, k in test})
    order = sorted(loops)
    head = "| kind | seed RM test (%) | " + " | ".join(f"loop {k}: kept (right %) → test (%)" for k in order[1:]) + " |"
    lines = [head, "|" + "---|" * (len(order) + 1)]
    for kind in kinds:
        cells = []
        for k in order[1:]:
            n, right = kept.get((k, kind), [0, 0])
            mean = statistics.fmean(test[(k, kind)]) if test.get((k, kind)) else None
            cells.append(f"{n} ({pct(right / n) if n else '—'}) → {pct(mean)}")
        base = statistics.fmean(test[(0, kind)]) if test.get((0, kind)) else None
        lines.append(f"| {kind} | {pct(base)} | " + " | ".join(cells) + " |")
    return (f"Seeds {', '.join(str(s) for s in sorted(ser['seed']))}: self-labels kept per loop summed over seeds, test "
            "accuracy the mean over seeds.\n\n" + "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = report_args(__doc__, argv)
    runs = load(args.sweeps)
    parts = [f"# {args.out.name}: generated by experiments/synthetic_report.py from {len(runs)} runs\n\n"
             "Runs: `bash experiments/synthetic.sh` (resumes; skips finished runs). This page alone: "
             "`bash experiments/synthetic.sh tables`. Test accuracy (%), the final RM of each run; the machine and "
             "the protocol: docs/results/README.md. Trained in: "
             + ", ".join(f"{k} ({v} runs)" for k, v in runs["precision"].value_counts().items()) + ".\n"]
    # the default, then every other SER setting that ran on at least 3 seeds of a set (a switch chosen on seeds
    # 0-1's validation, run on the rest)
    candidates = [(title, seeds, "schedule=ser") for title, seeds in SEED_SETS.items()]
    for name, group in runs[(runs["schedule"] == "ser") & (runs["setting"] != "schedule=ser")].groupby("setting"):
        candidates += [(f"{title}, SER with `{name}`", seeds, name) for title, seeds in SEED_SETS.items()
                       if group["seed"].isin(list(seeds)).sum() >= 3]
    for title, seeds, ser_setting in candidates:
        table, stats = seed_table(runs, seeds, ser_setting)
        parts.append(f"\n## {title}\n\n{table}")
        alike = same_setting_baselines(runs, seeds, ser_setting)
        if alike:
            parts.append(f"\nAgainst seed_only and full_data trained with the same RM overrides (`{alike['rm_overrides']}`, "
                         f"{alike['n']} seeds): {100 * alike['seed_only']:.2f} → SER {100 * alike['ser']:.2f}, full "
                         f"{100 * alike['full_data']:.2f}; SER closes {alike['gap_closed']:.1f}% of that gap, SER − seed_only "
                         f"{100 * alike['delta']:+.2f} [{100 * alike['delta_low']:+.2f}, {100 * alike['delta_high']:+.2f}] "
                         f"{alike['wins']}/{alike['ties']}/{alike['losses']}.\n")
        if stats:
            parts.append(f"\nSER closes {stats['gap_closed']:.1f}% of the seed→full gap of the means "
                         f"({100 * stats['seed_only']:.2f} → {100 * stats['ser']:.2f}, full {100 * stats['full_data']:.2f})"
                         + (f"; on the {stats['ceiling_n']} seeds the ceiling¹ ran, it closes {stats['ceiling_gap']:.1f}% "
                            f"of their gap and SER {stats['ser_gap_on_ceiling_seeds']:.1f}%" if "ceiling_gap" in stats else "")
                         + ". "
                         + f"Subtle test pairs: {stats['subtle_gain']:+.2f} points over the seed RM (mean over seeds).\n")
    parts.append("\n¹ ceiling: schedule=full_data with every pool label revealed except the swapped-step pairs "
                 "(data.synthetic.withhold_from_pool=[swapped_steps]): what labels on every pair a self-labeling loop "
                 "could label can reach.\n")
    parts.append(f"\n## Per loop: selected pairs and self-label accuracy by kind (schedule=ser)\n\n{per_loop_table(runs)}")
    parts.append(f"\n## Per loop, by fault kind (schedule=ser, seeds 0-4)\n\n{by_kind_table(runs, range(0, 5))}")
    from experiments.choose_on_val import SCREEN_SEEDS, SECOND_ROUND_SEEDS  # imported late: it imports this module

    parts.append(round_section(runs, SCREEN_SEEDS, "The loop's switches", "the other seeds"))
    parts.append(round_section(runs, SECOND_ROUND_SEEDS, "Second round", "the fresh seeds", flag=" --seeds 0,1,2,3,4",
                               min_candidates=2))  # a second round needs a rival to the first round's winner
    atomic_write_text(args.out.with_suffix(".md"), "".join(parts))
    atomic_write_text(args.out.with_name(args.out.name + "_runs.csv"), runs.to_csv(index=False))
    print("".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
