"""The co-evolution results page: the final policy's gold win rate against its start, against the fixed-RM
baseline and against offline ser_dpo, with intervals over seeds; and per loop the RM's self-label agreement
with the gold judge.

    python experiments/coevolve_report.py outputs/ser/sweeps --out docs/results/coevolve

Reads the runs of experiments/coevolve.sh. Every comparison is on the same held-out test prompts (the
test split's, drawn with evaluate.seed), judged by the exact synthetic gold judge.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments.collect import report_args, t_half_width  # noqa: E402
from ser.evaluate.policy_eval import win_tie_loss  # noqa: E402
from ser.evolve.coevolve import TIME_SPLIT  # noqa: E402
from ser.io import atomic_write_text  # noqa: E402


def setting(run: Path, summary: dict[str, Any]) -> str:
    if summary["schedule"] == "ser_dpo":
        return "ser_dpo (offline)"
    return f"coevolve rm={summary['coevolve']['rm']}"


def final_gold(run: Path, summary: dict[str, Any]) -> tuple[list[str], list[float], list[float]]:
    """(prompts, final policy's gold per prompt, starting policy's gold per prompt)."""
    if summary["schedule"] == "ser_dpo":
        with (run / "samples.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        return [r["prompt"] for r in rows], [float(r["dpo_gold"]) for r in rows], [float(r["start_gold"]) for r in rows]
    final = json.loads((run / "policy" / f"test_loop_{summary['policy']['final_loop']}.json").read_text())
    start = json.loads((run / "policy" / "test_loop_0.json").read_text())
    return final["prompts"], final["gold"], start["gold"]


def load(sweeps: Path) -> dict[str, dict[int, dict[str, Any]]]:
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for path in sorted(sweeps.rglob("summary.json")):
        summary = json.loads(path.read_text())
        if summary.get("schedule") not in ("coevolve", "ser_dpo") or "experiment=coevolve_cpu" not in path.parent.name:
            continue
        prompts, gold, start = final_gold(path.parent, summary)
        cfg = OmegaConf.load(path.parent / ".hydra" / "config.yaml")  # the seed: a policy-stage summary has none
        runs.setdefault(setting(path.parent, summary), {})[int(cfg.seed)] = {
            "summary": summary, "prompts": prompts, "gold": gold, "start": start, "dir": path.parent,
            "precision": str(cfg.trainer.precision)}
    return runs


def one_precision(runs: dict[str, dict[int, dict[str, Any]]]) -> str:
    """The trainer.precision every run of the page shares; runs of two precisions are not one table."""
    by_precision: dict[str, list[str]] = {}
    for by_seed in runs.values():
        for run in by_seed.values():
            by_precision.setdefault(run["precision"], []).append(run["dir"].name)
    if len(by_precision) > 1:
        raise SystemExit("coevolve_report: the runs were trained at different precisions, not one table: " + "; ".join(
            f"{p}: {', '.join(sorted(names))}" for p, names in sorted(by_precision.items())))
    return next(iter(by_precision), "-")


def judged_labels(run_dir: Path, loop: int) -> tuple[int, int] | None:
    """(right, judged) of a loop's kept labels where the gold judge tells the two answers apart."""
    path = run_dir / "selflabels" / f"loop_{loop}.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    judged = [r for r in rows if r.get("correct") is not None]
    return sum(bool(r["correct"]) for r in judged), len(judged)


def unfinished_runs(sweeps: Path) -> list[str]:
    """Coevolve runs with a loop state but no summary yet: started, stopped or still running."""
    return [path.parent.name for path in sorted(sweeps.rglob("state.json"))
            if "experiment=coevolve_cpu" in path.parent.name and not (path.parent / "summary.json").exists()]


def interval(values: list[float]) -> str:
    mean, half = statistics.fmean(values), t_half_width(values)
    return f"{mean:+.3f}" if half is None else f"{mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}]"


def compare(a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]], b_key: str = "gold") -> str:
    """Win / tie / loss of a's final policy against b's (per prompt, gold), and win − loss with its 95%
    t-interval over the seeds both ran."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return "—"
    per_seed = []
    for s in seeds:
        assert a[s]["prompts"] == b[s]["prompts"], "the comparison needs the same test prompts"
        per_seed.append(win_tie_loss(a[s]["gold"], b[s][b_key]))
    w, t, lo = (statistics.fmean(x[k] for x in per_seed) for k in ("win", "tie", "loss"))
    return f"{w:.2f} / {t:.2f} / {lo:.2f}; win − loss {interval([x['win'] - x['loss'] for x in per_seed])}"


def time_split(per_loop: dict[str, Any]) -> str:
    parts = [per_loop.get(key) for key in TIME_SPLIT]
    return "" if all(v is None for v in parts) else " / ".join("—" if v is None else f"{v:.0f}" for v in parts)


def main(argv: list[str] | None = None) -> int:
    args = report_args(__doc__, argv)
    runs = load(args.sweeps)
    lines = [f"# {args.out.name}: generated by experiments/coevolve_report.py", "",
             f"Every run: trainer.precision={one_precision(runs)}.", "",
             "| setting | seeds | gold: start → final (mean) | vs its start (win / tie / loss) | vs coevolve rm=frozen | "
             "vs ser_dpo |", "|---|---|---|---|---|---|"]
    frozen, offline = runs.get("coevolve rm=frozen", {}), runs.get("ser_dpo (offline)", {})
    for name, by_seed in sorted(runs.items()):
        seeds = sorted(by_seed)
        start = statistics.fmean(statistics.fmean(by_seed[s]["start"]) for s in seeds)
        final = statistics.fmean(statistics.fmean(by_seed[s]["gold"]) for s in seeds)
        lines.append(f"| {name} | {', '.join(map(str, seeds))} | {start:.3f} → {final:.3f} | "
                     f"{compare(by_seed, by_seed, 'start')} | "
                     f"{compare(by_seed, frozen) if name != 'coevolve rm=frozen' else ''} | "
                     f"{compare(by_seed, offline) if name != 'ser_dpo (offline)' else ''} |")
    split_names = " / ".join(key.removeprefix("seconds_").replace("_", " ") for key in TIME_SPLIT)
    lines += ["", "## Per loop: the RM's labels of the generated pairs against the gold judge, the policy, the time", "",
              "The labels are the co-evolving RM's (rm=self), the seed RM's (rm=frozen) or the full-data RM's, counted "
              "over the kept pairs whose answers the gold judge tells apart (right of judged); seconds are wall time on "
              "a shared machine.", "",
              f"| setting | seed | loop | status | selected | labels agreeing with gold | RM val acc | policy gold | KL | "
              f"seconds: {split_names} |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, by_seed in sorted(runs.items()):
        if not name.startswith("coevolve"):
            continue
        for seed, run in sorted(by_seed.items()):
            for e in run["summary"]["loops"]:
                p = next(x for x in run["summary"]["policy"]["per_loop"] if x["loop"] == e["loop"])
                agree, counts = p.get("self_label_gold_agreement"), judged_labels(run["dir"], e["loop"])
                cell = "—" if agree is None else f"{100 * agree:.1f}%" + (f" ({counts[0]} of {counts[1]})" if counts else "")
                lines.append(f"| {name.removeprefix('coevolve ')} | {seed} | {e['loop']} | {e['status'] or 'seed'} | "
                             f"{e['selected']} | {cell} | "
                             f"{100 * e['val_accuracy']:.1f} | {p['policy_gold']:.3f} | {p['policy_kl']:.3f} | "
                             f"{time_split(p)} |")
    unfinished = unfinished_runs(args.sweeps)
    if unfinished:
        lines += ["", "Still running or queued (resumable; not in the tables): " + ", ".join(f"`{u}`" for u in unfinished) + "."]
    text = "\n".join(lines) + "\n\nRegenerate: `bash experiments/coevolve.sh tables`.\n"
    atomic_write_text(args.out.with_suffix(".md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
