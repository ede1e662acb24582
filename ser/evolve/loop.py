"""The self-evolving loop of one RM schedule: loop 0 trains the seed RM (or the full-data RM), each later
loop scores the remaining pool, takes one pure step (ser/evolve/step.py), retrains and records.

Schedules: seed_only (loop 0 only), ser (loops until the phase schedule, `ser.patience` or
`ser.max_loops` stops them), full_data (loop 0 on every pool label revealed: the upper bound).
When torchrun or SLURM started several ranks, every rank runs this loop on the same scores and so takes
the same decisions (checked); only rank 0 writes the run dir.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace
from typing import Any

import torch
from omegaconf import DictConfig

from ser.data.prepare import PreparedData
from ser.data.synthetic import is_stark, pair_kind
from ser.events import emit
from ser.evolve.agreement import agreement_mask, checkpoint_scores, dropout_scores
from ser.evolve.build import build_selection
from ser.evolve.clock import LoopClock
from ser.evolve.confidence import fit_temperature
from ser.evolve.finish import finish_run
from ser.evolve.state import LoopState
from ser.evolve.step import StepResult, StepSettings, as_pairs, evolve_step, self_label_accuracy
from ser.ranks import barrier, check_same_on_every_rank
from ser.report import Reporter
from ser.reward.scorer import Scorer
from ser.reward.train import pair_metrics
from ser.reward.trainer import RMTrainer
from ser.seeding import derive_seed
from ser.store import RunStore

log = logging.getLogger(__name__)


class SERLoop:
    def __init__(self, cfg: DictConfig, data: PreparedData, rm: RMTrainer, scorer: Scorer, store: RunStore,
                 reporter: Reporter, world: int = 1) -> None:
        self.cfg, self.data, self.rm, self.scorer, self.store, self.reporter = cfg, data, rm, scorer, store, reporter
        self.schedule, self.world = str(cfg.schedule.name), world
        confidence, rule, self.phases = build_selection(cfg)
        ser = cfg.ser
        self.settings = StepSettings(confidence, rule, self.phases, min_pairs=int(ser.min_pairs),
                                     top_fraction=ser.top_fraction, top_k=ser.top_k,
                                     remove_selected=bool(ser.remove_selected), oracle=str(ser.labels) == "oracle",
                                     stratify_bins=int(ser.get("stratify_bins") or 0))

    @property
    def self_labels(self) -> bool:
        """Does this schedule run self-labeling loops after loop 0?"""
        return self.schedule == "ser"

    def extra_entry(self, loop: int) -> dict[str, Any]:
        """More fields for the loop's record (a subclass's own metrics)."""
        return {}

    def summary_extra(self, state: LoopState) -> dict[str, Any]:
        """More fields for summary.json."""
        return {}

    # ---- the loop ----------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        state = self.store.open()
        if state.loops:
            self.rm.load(self.store.checkpoint_path(state.loops[-1]["loop"]))
            log.info("resuming %s after loop %d", self.store.out, state.loops[-1]["loop"])
        if not state.loops:  # loop 0: the seed RM (or the full-data RM)
            clock = LoopClock()
            self.train_on(state, 0)
            clock.lap("train")
            self.record(state, 0, None, clock)
        max_loops = self.phases.max_loops(int(self.cfg.ser.max_loops)) if self.self_labels else 0
        while not state.stopped and state.next_loop <= max_loops:
            state = self.evolve_once(state)
        if not state.stopped:
            state.stopped, state.stop_reason = True, state.stop_reason or f"reached max_loops={max_loops}"
            self.store.save_state(state)
        return finish_run(self, state)

    def evolve_once(self, state: LoopState) -> LoopState:
        loop, clock = state.next_loop, LoopClock()
        relabeled = self.relabel_selected(state, loop) if str(self.cfg.ser.relabel) != "none" else {}
        removed = set(state.removed_from_pool)
        index = [i for i, p in enumerate(self.data.splits.pool) if p.id not in removed]
        pool = [self.data.splits.pool[i] for i in index]
        features = [self.data.features["pool"][i] for i in index]
        if self.scorer.ranks > 1:
            log.info("loop %d: scoring the pool across %d ranks", loop, self.scorer.ranks)
        pool_rewards = self.scorer.pair_rewards(features, f"loop {loop}: scoring pool")
        emit("pool_scored", loop=loop)
        val_rewards = self.scorer.pair_rewards(self.data.features["val"], "calibrating")
        weight_t = fit_temperature(val_rewards[0] - val_rewards[1]) if str(self.cfg.ser.weighting) == "confidence" else None
        settings = replace(self.settings, weight_temperature=weight_t)
        keep = self.agreement(state, loop, features, *pool_rewards)
        clock.lap("score")
        step = evolve_step(state, pool, pool_rewards, val_rewards, settings, loop=loop, keep=keep)
        if self.world > 1:  # same scores, so same decisions; checked, as diverging ranks would train apart
            check_same_on_every_rank([step.status, [(r["id"], r["chosen"]) for r in step.rows],
                                      sorted((k, r["chosen"]) for k, r in step.state.selected.items())],
                                     f"loop {loop}'s self-labels")
        candidates = {**step.candidates, **relabeled}
        log.info("loop %d: %s (candidates %s)", loop, step.reason, candidates)
        if step.shortfall:  # never silent: console, metrics (loops.csv / summary.json) and the state
            log.warning("loop %d: SELECTION SHORTFALL: %s", loop, step.shortfall)
        state = step.state
        if step.stop:
            log.warning("loop %d: stopping: %s", loop, step.reason)
            self.store.save_state(state)
            return state
        self.store.write_selflabels(f"loop_{loop}", step.rows)
        clock.lap("select")
        self.train_on(state, loop)
        clock.lap("train")
        entry = self.record(state, loop, step, clock, candidates)
        self.check_patience(state, entry)
        return state

    # ---- pieces of a loop --------------------------------------------------------------------------
    def training_pairs(self, state: LoopState) -> tuple[list, list[float]]:
        """The pairs the next RM trains on, with their loss weights (human labels weigh 1)."""
        splits = self.data.splits
        if self.schedule == "full_data":
            pairs = splits.seed + splits.pool
            return pairs, [1.0] * len(pairs)
        rows = list(state.selected.values())
        selected, weights = as_pairs(rows), [float(r.get("weight", 1.0)) for r in rows]
        if not selected or self.cfg.ser.mix_seed:
            seed_weight = float(self.cfg.ser.get("seed_weight", 1.0)) if selected else 1.0
            return splits.seed + selected, [seed_weight] * len(splits.seed) + weights
        return selected, weights

    def train_on(self, state: LoopState, loop: int) -> None:
        pairs, weights = self.training_pairs(state)
        self.rm.train(self.data.featurise(pairs, weights), self.data.features["val"], loop,
                      loggers=self.reporter.loggers, checkpoint_dir=self.store.midloop_dir(loop),
                      checkpoint_tag=self.store.digest)

    def evaluate(self) -> dict[str, dict[str, Any]]:
        metrics = {}
        for name in ("val", "test"):
            features = self.data.features[name]
            chosen, rejected = self.scorer.pair_rewards(features, f"eval {name}")
            metrics[name] = pair_metrics(chosen, rejected, self.data.groups(name)) if features else {}
            kinds = self.data.kinds(name)
            if kinds and features:
                metrics[name]["accuracy_by_kind"] = pair_metrics(chosen, rejected, kinds)["accuracy_by_group"]
        return metrics

    def record(self, state: LoopState, loop: int, step: StepResult | None, clock: LoopClock,
               candidates: dict[str, int] | None = None) -> dict[str, Any]:
        metrics = self.evaluate()
        clock.lap("evaluate")
        val, test = metrics["val"], metrics["test"]
        rows = step.rows if step is not None else []
        entry = {
            "loop": loop, "status": step.status if step else None, "selected": len(rows),
            "selected_total": len(state.selected), "self_label_accuracy": self_label_accuracy(rows),
            "self_label_accuracy_total": self_label_accuracy(list(state.selected.values())),
            "candidates": candidates or {}, "train_pairs": len(self.training_pairs(state)[0]),
            "val_accuracy": val.get("accuracy"), "val_loss": val.get("loss"), "val_ece": val.get("ece"),
            "test_accuracy": test.get("accuracy"), "test_ece": test.get("ece"),
            "test_accuracy_by_group": test.get("accuracy_by_group"), "test_accuracy_by_kind": test.get("accuracy_by_kind"),
            "test_margin": test.get("margin"),
            **self.selected_by_group(rows),
            "seconds": clock.elapsed(), "note": step.reason if step else "",
            "shortfall": step.shortfall if step else "",
            **self.extra_entry(loop),
        }
        state.loops.append(entry)
        if self.store.writer:
            self.rm.save(self.store.checkpoint_path(loop))
        clock.lap("write")  # the self-labels (in `select`) and state files are small: the RM checkpoint is this
        entry.update(clock.seconds)
        barrier()  # other ranks may load it (the final RM, agreement with earlier RMs)
        state.checkpoint = str(self.store.checkpoint_path(loop).relative_to(self.store.out))
        emit("loop_recording", loop=loop)
        self.store.save_state(state)
        self.store.drop_midloop(loop)  # the loop is recorded: its mid-loop state is done
        self.store.write_loops_csv(state.loops)
        self.reporter.loop(entry)
        return entry

    def selected_by_group(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Synthetic data: how many self-labels of each kind (stark / subtle), and how many were right."""
        rows = [r for r in rows if str(r["id"]).startswith("syn-")]  # pairs of the generator (not generated ones)
        if not self.data.synthetic or not rows:
            return {"selected_by_group": None, "self_label_accuracy_by_group": None}
        groups = ["stark" if is_stark(pair_kind(r["id"])) else "subtle" for r in rows]
        n, right = Counter(groups), Counter(g for g, r in zip(groups, rows) if r["correct"])
        return {"selected_by_group": dict(sorted(n.items())),
                "self_label_accuracy_by_group": {g: right[g] / n[g] for g in sorted(n)}}

    def agreement(self, state: LoopState, loop: int, features: list[dict], reward_a: torch.Tensor,
                  reward_b: torch.Tensor) -> torch.Tensor | None:
        """Pool pairs on whose label the extra scorers (dropout samples / earlier RMs) agree."""
        spec = self.cfg.ser.agreement
        if str(spec.kind) == "none":
            return None

        def score() -> tuple[torch.Tensor, torch.Tensor]:
            return self.scorer.local.pair_rewards(features, f"loop {loop}: agreement")

        if str(spec.kind) == "dropout":
            others = dropout_scores(self.rm.model, score, spec.samples, spec.dropout,
                                    seed=derive_seed(self.cfg.seed, loop, "dropout_agreement"))
        else:  # the RMs of the `samples` loops before the current one
            earlier = [self.store.checkpoint_path(e["loop"]) for e in state.loops[:-1]][-spec.samples:]
            if not earlier:
                log.warning("loop %d: ser.agreement.kind=checkpoints: no earlier RM yet, the current one decides alone",
                            loop)
            others = checkpoint_scores(self.rm.model, score, earlier, self.store.checkpoint_path(state.loops[-1]["loop"]))
        return agreement_mask(reward_a, reward_b, others, spec.min_fraction)

    def relabel_selected(self, state: LoopState, loop: int) -> dict[str, int]:
        """Re-score every accumulated self-label with the current RM; a label that flips is dropped
        (the pair goes back to the pool) or flipped, by ser.relabel."""
        rows = list(state.selected.values())
        if not rows:
            return {}
        chosen, rejected = self.scorer.pair_rewards(self.data.featurise(as_pairs(rows)), f"loop {loop}: re-scoring self-labels")
        flipped = [row for row, c, r in zip(rows, chosen.tolist(), rejected.tolist()) if r > c]
        for row in flipped:
            if str(self.cfg.ser.relabel) == "drop":
                del state.selected[row["id"]]
                if row["id"] in state.removed_from_pool:
                    state.removed_from_pool.remove(row["id"])
            else:
                flipped_row = {**row, "chosen": row["rejected"], "rejected": row["chosen"], "correct": not row["correct"],
                               "relabeled_in_loop": loop}
                if row.get("conversation"):
                    conv = row["conversation"]
                    flipped_row["conversation"] = {**conv, "chosen": conv["rejected"], "rejected": conv["chosen"]}
                state.selected[row["id"]] = flipped_row
        log.info("loop %d: re-scored %d self-labels, %d flipped (%s)", loop, len(rows), len(flipped), self.cfg.ser.relabel)
        return {"relabel_checked": len(rows), "relabel_flipped": len(flipped),
                "relabel_flipped_were_correct": sum(r["correct"] for r in flipped)}

    def check_patience(self, state: LoopState, entry: dict[str, Any]) -> None:
        best = max(e["val_accuracy"] for e in state.loops)
        best_loop = max(e["loop"] for e in state.loops if e["val_accuracy"] == best)
        since = entry["loop"] - best_loop
        if since >= self.cfg.ser.patience:
            state.stopped = True
            state.stop_reason = f"validation accuracy has not improved for {since} loop(s) (best {best:.4f} at loop {best_loop})"
            log.warning("stopping: %s", state.stop_reason)
            self.store.save_state(state)
