"""Run one schedule end to end: data -> seed RM -> (self-evolving loops) -> final RM and reports.

Schedules (the three columns of the paper's table, on identical splits for a given seed):
- seed_only: train on the labeled seed; no loops.
- ser: seed RM, then self-labeling loops until the status rule or validation accuracy stops them.
- full_data: all pool labels revealed; the upper bound.

When torchrun or SLURM started several ranks (trainer=ddp, ser/ranks.py), every rank runs this same
loop; only rank 0 writes the run dir, and the others wait at a barrier wherever they read it.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
import torch
from safetensors.torch import load_model, save_model

from ser.data.dataset import build_pairs
from ser.data.schema import PreferencePair
from ser.data.splits import Splits, split_pairs
from ser.data.synthetic import is_stark, pair_kind
from ser.evolve.agreement import agreement_mask, checkpoint_scores, dropout_scores
from ser.evolve.confidence import Confidence, fit_temperature
from ser.evolve.selection import as_pairs, self_label, self_label_accuracy
from ser.evolve.soup import average_checkpoints
from ser.evolve.state import LoopState, config_hash
from ser.evolve.status import Thresholds
from ser.faults import maybe_die
from ser.io import atomic_write_csv, atomic_write_json, atomic_write_jsonl
from ser.ranks import barrier, check_same_on_every_rank, rank_and_world, rank_zero_first
from ser.report import plot_loops, print_loop_table
from ser.reward.backbone import apply_lora, load_backbone
from ser.reward.collator import TokenCache, render
from ser.reward.export import export_reward_model
from ser.reward.frozen import FrozenPrefix
from ser.reward.module import RewardModule
from ser.reward.scoring import scoring_device
from ser.reward.train import (DieAfterCheckpoint, fit_reward_model, pair_features, pair_metrics, pair_rewards,
                              remove_checkpoint_dir)

log = logging.getLogger(__name__)


def drop_or_count_overlong(pairs: list[PreferencePair], cache: TokenCache, template: str, policy: str
                           ) -> tuple[list[PreferencePair], dict[str, Any]]:
    """Count pairs with a side longer than max_length; truncate them (kept) or drop them, by config."""
    overlong = [p for p in pairs
                if cache.is_truncated(render(template, p.prompt, p.chosen))
                or cache.is_truncated(render(template, p.prompt, p.rejected))]
    report = {"max_length": cache.max_length, "policy": policy, "overlong_pairs": len(overlong),
              "examples": [p.id for p in overlong[:20]]}
    if policy == "drop" and overlong:
        ids = {p.id for p in overlong}
        pairs = [p for p in pairs if p.id not in ids]
    if overlong:
        log.warning("%d pairs exceed max_length=%d tokens: %s", len(overlong), cache.max_length,
                    "dropped" if policy == "drop" else "truncated (side=%s)" % cache.tokenizer.truncation_side)
    return pairs, report


class Experiment:
    """One run of one schedule; every file it writes lives under `out_dir` (written by rank 0 only)."""

    def __init__(self, cfg: DictConfig, out_dir: Path) -> None:
        self.cfg = cfg
        self.out = out_dir
        self.resolved = OmegaConf.to_container(cfg, resolve=True)
        self.schedule = cfg.schedule.name
        self.loggers: list = []
        # Ranks started by torchrun/SLURM (the process group is up): all run this loop, rank 0 writes.
        self.rank, self.world = rank_and_world()
        self.writer = self.rank == 0

    # ---- set-up -------------------------------------------------------------------------------
    def prepare(self) -> None:
        cfg = self.cfg
        with rank_zero_first():  # dataset downloads and the backbone's conversion cache: filled by rank 0 alone
            pairs, own_test, reports = build_pairs(cfg.data)
            pl.seed_everything(cfg.seed, workers=True)  # before the score head is created: reproducible head
            vocab = [t for p in pairs[:5000] for t in (p.prompt, p.chosen, p.rejected)]
            self.model, self.tokenizer = load_backbone(cfg.rm, vocab_texts=vocab)
        self.tokenizer.truncation_side = cfg.data.truncation_side
        if cfg.rm.lora:
            self.model = apply_lora(self.model, cfg.rm.lora)
        # rm.freeze_layers: the embeddings and the bottom blocks stop training; their output is cached below
        self.prefix = (FrozenPrefix(self.model, int(cfg.rm.freeze_layers), self.tokenizer.pad_token_id).attach()
                       if cfg.rm.get("freeze_layers") else None)
        # Only trainable tensors can drift from the base (with LoRA: adapters + head, a few MB), so only
        # they are kept for ser.retrain_from=base.
        self.base_state = {name: p.detach().cpu().clone() for name, p in self.model.named_parameters()
                           if p.requires_grad}
        self.cache = TokenCache(self.tokenizer, cfg.data.max_length)
        self.template = cfg.data.template
        n_loaded = len(pairs)
        pairs, overlong = drop_or_count_overlong(pairs, self.cache, self.template, cfg.data.overlong)
        if not pairs:
            raise ValueError(f"all {n_loaded} pairs exceed data.max_length={cfg.data.max_length} tokens and "
                             "data.overlong=drop removed them: raise max_length or use overlong=truncate")
        if own_test is not None:
            own_test, test_overlong = drop_or_count_overlong(own_test, self.cache, self.template, cfg.data.overlong)
            overlong["test_overlong_pairs"] = test_overlong["overlong_pairs"]
        sp = cfg.splits
        self.splits: Splits = split_pairs(pairs, seed=cfg.seed, seed_fraction=sp.seed_fraction,
                                          val_fraction=sp.val_fraction, test_fraction=sp.test_fraction,
                                          test_pairs=own_test)
        if not self.splits.seed:
            raise ValueError(f"splits.seed_fraction={sp.seed_fraction} leaves no labeled training pairs "
                             f"({len(pairs)} pairs in all): raise it or use more data")
        if self.writer:
            atomic_write_json(self.out / "data_report.json", {
                "sources": [r.to_dict() for r in reports], "overlong": overlong, "splits": self.splits.sizes()})
        for r in reports:
            if r.issues:
                log.warning("%s: skipped %d of %d rows: %s (see data_report.json)", r.source, len(r.issues),
                            r.rows_read, r.counts)
        log.info("splits (by prompt): %s", self.splits.sizes())
        self.module = RewardModule(self.model, instantiate(cfg.rm.optimizer), cfg.rm.scheduler, cfg.rm.pooling)
        self.features = {name: pair_features(getattr(self.splits, name), self.cache, self.template)
                         for name in ("seed", "val", "test")}
        self.pool_features = pair_features(self.splits.pool, self.cache, self.template)
        if self.prefix is not None:
            self._cache_frozen_prefix()
        self.loggers = [instantiate(c) for c in (cfg.logger or {}).values() if c is not None]

    def _cache_frozen_prefix(self) -> None:
        """rm.freeze_layers: the frozen blocks' output for every text of the run, once, in a fixed order."""
        started, prefix = time.time(), self.prefix
        features = [f for fs in (*self.features.values(), self.pool_features) for f in fs]
        how = prefix.build_with_disk_cache([ids for f in features for ids in (f["chosen_ids"], f["rejected_ids"])],
                                           self.cfg.paths.get("frozen_cache_dir"))
        log.info("rm.freeze_layers=%d: the frozen blocks' output of %d texts (%.0f MB), %s in %.1f s", prefix.k,
                 len(prefix.cache), sum(t.numel() * t.element_size() for t in prefix.cache.values()) / 2**20, how,
                 time.time() - started)

    # ---- pieces of a loop ---------------------------------------------------------------------
    def _eval_kwargs(self, desc: str) -> dict[str, Any]:
        return {"pad_id": self.tokenizer.pad_token_id, "batch_size": self.cfg.rm.eval_batch_size,
                "precision": str(self.cfg.rm.get("score_precision") or self.cfg.trainer.precision),
                "progress": True, "desc": desc, "compile": bool(self.cfg.rm.get("score_compile", False)),
                "device": scoring_device(self.cfg.trainer.get("accelerator"))}

    def train(self, train_pairs: list[PreferencePair], loop: int, weights: list[float] | None = None) -> None:
        maybe_die("train", loop)
        cfg = self.cfg
        if loop > 0 and cfg.ser.retrain_from == "base":
            missing = set(self.base_state) - set(dict(self.model.named_parameters()))
            assert not missing, f"base state keys not in the model: {sorted(missing)[:5]}"
            self.model.load_state_dict(self.base_state, strict=False)
        # Reseed per loop: a resumed run draws the same dropout masks and batches as an uninterrupted one.
        pl.seed_everything(cfg.seed * 1000 + loop, workers=True, verbose=False)
        self.module.metric_prefix = f"loop{loop}/"
        features = pair_features(train_pairs, self.cache, self.template, weights)
        log.info("loop %d: training the RM on %d pairs for %d epochs", loop, len(features), cfg.rm.epochs)
        fit_reward_model(self.module, features, self.features["val"], trainer_cfg=cfg.trainer,
                         epochs=cfg.rm.epochs, batch_size=cfg.rm.batch_size, pad_id=self.tokenizer.pad_token_id,
                         seed=cfg.seed + loop, loggers=self.loggers, callbacks=[DieAfterCheckpoint(loop)],
                         checkpoint_dir=self._midloop_dir(loop), checkpoint_every_n_steps=cfg.get("ckpt_every_n_steps", 0),
                         checkpoint_tag=config_hash(self.resolved), group_by_length=bool(cfg.rm.get("group_by_length", False)))

    def _midloop_dir(self, loop: int) -> Path:
        """`last.ckpt` of the loop in training: a killed job resumes from it; dropped once the loop is recorded.
        Kept only for this config (and only with resume=true): anything else there is stale and removed."""
        path, digest = self.out / "checkpoints" / f"loop_{loop}", config_hash(self.resolved)
        marker = path / "config_hash"  # written beside the first checkpoint (CheckpointTag)
        if self.writer and path.exists() and (not self.cfg.resume or not marker.exists()
                                              or marker.read_text().strip() != digest):
            remove_checkpoint_dir(path)
        barrier()  # every rank then sees the same last.ckpt (or none) and resumes (or not) alike
        return path

    def train_on(self, state: LoopState, loop: int) -> None:
        pairs, weights = self.training_pairs(state)
        self.train(pairs, loop, weights)

    def evaluate(self) -> dict[str, dict[str, float]]:
        metrics = {}
        for name in ("val", "test"):
            chosen, rejected = self._pair_rewards(self.features[name], f"eval {name}", name)
            metrics[name] = pair_metrics(chosen, rejected, self._groups(name)) if self.features[name] else {}
        return metrics

    def _pair_rewards(self, features: list[dict], desc: str, work: str, spread: bool | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """(chosen, rejected) rewards. Spread: each pair scored once on one rank and gathered back by index,
        so every rank (or the ddp_spawn driver) holds all of them; by default when several ranks run."""
        spread = self.world > 1 if spread is None else spread
        if not spread or not features:
            return pair_rewards(self.module, features, **self._eval_kwargs(desc))
        from ser.reward.distributed import distributed_pair_rewards

        return distributed_pair_rewards(self.module, features, pad_id=self.tokenizer.pad_token_id,
                                        pooling=self.module.pooling, trainer_cfg=self.cfg.trainer,
                                        work_dir=self.out / "scores" / work, batch_size=self.cfg.rm.eval_batch_size)

    def _groups(self, split: str) -> list[str] | None:
        """Synthetic pairs carry their fault kind: report accuracy on stark and subtle pairs apart."""
        if self.cfg.data.kind != "synthetic":
            return None
        return ["stark" if is_stark(pair_kind(p.id)) else "subtle" for p in getattr(self.splits, split)]

    def _checkpoint_path(self, loop: int) -> Path:
        return self.out / "checkpoints" / f"loop_{loop}.safetensors"

    def checkpoint(self, loop: int) -> str:
        path = self._checkpoint_path(loop)
        if self.writer:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            save_model(self.model, str(tmp))
            tmp.replace(path)
        barrier()  # other ranks may load it (best loop, agreement with earlier RMs)
        return str(path.relative_to(self.out))

    def save_state(self, state: LoopState) -> None:
        if self.writer:
            state.save(self.out)

    def record(self, state: LoopState, loop: int, status: str | None, new_rows: list[dict], started: float,
               candidates: dict[str, int] | None = None, note: str = "", shortfall: str = "") -> dict[str, Any]:
        metrics = self.evaluate()
        val, test = metrics["val"], metrics["test"]
        entry = {
            "loop": loop, "status": status, "selected": len(new_rows), "selected_total": len(state.selected),
            "self_label_accuracy": self_label_accuracy(new_rows),
            "self_label_accuracy_total": self_label_accuracy(list(state.selected.values())),
            "candidates": candidates or {}, "train_pairs": self._train_size(state),
            "val_accuracy": val.get("accuracy"), "val_ece": val.get("ece"),
            "test_accuracy": test.get("accuracy"), "test_ece": test.get("ece"),
            "test_accuracy_by_group": test.get("accuracy_by_group"), "test_margin": test.get("margin"),
            "reward_mean": test.get("reward_mean"),
            "reward_std": test.get("reward_std"), "seconds": round(time.time() - started, 2), "note": note,
            "shortfall": shortfall,
        }
        state.loops.append(entry)
        state.checkpoint = self.checkpoint(loop)
        state.status = status or state.status
        maybe_die("record", loop)
        self.save_state(state)
        if not self.writer:
            return entry
        remove_checkpoint_dir(self.out / "checkpoints" / f"loop_{loop}")  # the loop is recorded: its mid-loop state is done
        for lg in self.loggers:
            lg.log_metrics({f"loop/{k}": v for k, v in entry.items() if isinstance(v, (int, float)) and v is not None},
                           step=loop)
        atomic_write_csv(self.out / "loops.csv", [_flat(e) for e in state.loops])
        print_loop_table(state.loops, title=f"{self.schedule} · {self.cfg.data.name} · {self.cfg.rm.name} · seed {self.cfg.seed}")
        return entry

    def _train_size(self, state: LoopState) -> int:
        seed = len(self.splits.seed) if (self.cfg.ser.mix_seed or not state.selected) else 0
        return seed + len(state.selected)

    def training_pairs(self, state: LoopState) -> tuple[list[PreferencePair], list[float]]:
        """The pairs the next RM trains on, with their loss weights (human labels weigh 1)."""
        if self.schedule == "full_data":
            pairs = self.splits.seed + self.splits.pool
            return pairs, [1.0] * len(pairs)
        rows = list(state.selected.values())
        selected, weights = as_pairs(rows), [float(r.get("weight", 1.0)) for r in rows]
        if not selected or self.cfg.ser.mix_seed:
            return self.splits.seed + selected, [1.0] * len(self.splits.seed) + weights
        return selected, weights

    # ---- the loop -----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        self.prepare()
        digest = config_hash(self.resolved)
        state = LoopState.load(self.out) if cfg.resume else None
        barrier()  # every rank has read state.json before rank 0 may rewrite it
        if state is not None and state.config_hash != digest:
            raise RuntimeError(f"{self.out}: holds a run with another config (hash {state.config_hash} != {digest}); "
                               "use another run dir, or resume=false to start over")
        if state is not None and state.loops:
            load_model(self.model, str(self._checkpoint_path(state.loops[-1]["loop"])))
            log.info("resuming %s after loop %d", self.out, state.loops[-1]["loop"])
        state = state or LoopState(config_hash=digest)

        if not state.loops:  # loop 0: the seed RM (or the full-data RM)
            started = time.time()
            self.train_on(state, loop=0)
            self.record(state, 0, None, [], started)
        max_loops = cfg.ser.max_loops if self.schedule == "ser" else 0
        while not state.stopped and state.next_loop <= max_loops:
            self.evolve_once(state)
        if not state.stopped:
            state.stopped, state.stop_reason = True, state.stop_reason or f"reached max_loops={max_loops}"
            self.save_state(state)
        return self.finish(state)

    def evolve_once(self, state: LoopState) -> None:
        cfg, loop, started = self.cfg, state.next_loop, time.time()
        relabeled = self.relabel_selected(state, loop) if cfg.ser.relabel != "none" else {}
        removed = set(state.removed_from_pool)
        pool_index = [i for i, p in enumerate(self.splits.pool) if p.id not in removed]
        pool = [self.splits.pool[i] for i in pool_index]
        pool_features = [self.pool_features[i] for i in pool_index]
        reward_a, reward_b = self.score_pool(pool_features, loop)
        maybe_die("score", loop)
        val_c, val_r = self._pair_rewards(self.features["val"], "calibrating", "calibrating")
        confidence = Confidence.fit(cfg.ser.confidence, val_c, val_r, torch.cat([reward_a, reward_b]))
        weight_t = fit_temperature(val_c - val_r) if cfg.ser.weighting == "confidence" else None
        keep = self.agreement(state, loop, pool_features, reward_a, reward_b)
        th = cfg.ser.thresholds
        decision, rows = self_label(pool, reward_a, reward_b, confidence=confidence, rule=cfg.ser.rule,
                                    thresholds=Thresholds(th.tau_high, th.tau_low, th.delta),
                                    min_pairs=cfg.ser.min_pairs, previous_status=state.status, loop=loop,
                                    cap=self.selection_cap(len(pool)), keep=keep, weight_temperature=weight_t,
                                    oracle=cfg.ser.labels == "oracle")
        if self.world > 1:  # same scores, so same decisions; checked, as diverging ranks would train apart
            check_same_on_every_rank([decision.stop, decision.status, [(r["id"], r["chosen"]) for r in rows],
                                      sorted((k, r["chosen"]) for k, r in state.selected.items())],
                                     f"loop {loop}'s self-labels")
        candidates = {**decision.candidates, **relabeled}
        if keep is not None:
            candidates["agreeing"] = int(keep.sum())
        log.info("loop %d: %s (candidates %s)", loop, decision.reason, candidates)
        if decision.shortfall:  # never silent: console, metrics (loops.csv / summary.json) and the state
            log.warning("loop %d: SELECTION SHORTFALL: %s", loop, decision.shortfall)
            state.warnings.append(f"loop {loop}: {decision.shortfall}")
        if decision.stop:
            log.warning("loop %d: stopping: %s", loop, decision.reason)
            state.stopped, state.stop_reason = True, decision.reason
            self.save_state(state)
            return
        if self.writer:
            atomic_write_jsonl(self.out / "selflabels" / f"loop_{loop}.jsonl", rows)
        for row in rows:  # D_n = D_new + D_(n-1); a pair labeled again keeps its newest label
            state.selected[row["id"]] = row
        if cfg.ser.remove_selected:
            state.removed_from_pool.extend(r["id"] for r in rows)
        self.train_on(state, loop=loop)
        entry = self.record(state, loop, decision.status, rows, started, candidates, decision.reason,
                            shortfall=decision.shortfall)
        self.check_patience(state, entry)

    def score_pool(self, features: list[dict], loop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The pool's rewards; with several devices each pair is scored once on one rank, gathered by index."""
        devices = self.cfg.trainer.get("devices", 1)
        spread = self.world > 1 or (isinstance(devices, int) and devices > 1)
        if spread:
            log.info("loop %d: scoring the pool across %d ranks", loop, max(self.world, devices))
        return self._pair_rewards(features, f"loop {loop}: scoring pool", f"loop_{loop}", spread=spread)

    def selection_cap(self, pool_size: int) -> int | None:
        """ser.top_k, or ser.top_fraction of the remaining pool (the smaller when both are set)."""
        caps = []
        if self.cfg.ser.top_fraction is not None:
            caps.append(math.ceil(self.cfg.ser.top_fraction * pool_size))
        if self.cfg.ser.top_k is not None:
            caps.append(int(self.cfg.ser.top_k))
        return min(caps) if caps else None

    def agreement(self, state: LoopState, loop: int, features: list[dict], reward_a: torch.Tensor,
                  reward_b: torch.Tensor) -> torch.Tensor | None:
        """Pool pairs on whose label the extra scorers (dropout samples / earlier RMs) agree."""
        spec = self.cfg.ser.agreement
        if spec.kind == "none":
            return None

        def score() -> tuple[torch.Tensor, torch.Tensor]:
            return pair_rewards(self.module, features, **self._eval_kwargs(f"loop {loop}: agreement"))

        if spec.kind == "dropout":
            others = dropout_scores(self.model, score, spec.samples, spec.dropout, seed=self.cfg.seed * 1000 + loop)
        else:  # the RMs of the `samples` loops before the current one
            earlier = [self._checkpoint_path(e["loop"]) for e in state.loops[:-1]][-spec.samples:]
            if not earlier:
                log.warning("loop %d: ser.agreement.kind=checkpoints: no earlier RM yet, the current one decides alone",
                            loop)
            others = checkpoint_scores(self.model, score, earlier, self._checkpoint_path(state.loops[-1]["loop"]))
        return agreement_mask(reward_a, reward_b, others, spec.min_fraction)

    def relabel_selected(self, state: LoopState, loop: int) -> dict[str, int]:
        """Re-score every accumulated self-label with the current RM; a label that flips is dropped
        (the pair goes back to the pool) or flipped, by ser.relabel."""
        rows = list(state.selected.values())
        if not rows:
            return {}
        chosen, rejected = pair_rewards(self.module, pair_features(as_pairs(rows), self.cache, self.template),
                                        **self._eval_kwargs(f"loop {loop}: re-scoring self-labels"))
        flipped = [row for row, c, r in zip(rows, chosen.tolist(), rejected.tolist()) if r > c]
        for row in flipped:
            if self.cfg.ser.relabel == "drop":
                del state.selected[row["id"]]
                if row["id"] in state.removed_from_pool:
                    state.removed_from_pool.remove(row["id"])
            else:
                state.selected[row["id"]] = {**row, "chosen": row["rejected"], "rejected": row["chosen"],
                                             "correct": not row["correct"], "relabeled_in_loop": loop}
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
            self.save_state(state)

    # ---- outputs ------------------------------------------------------------------------------
    def finish(self, state: LoopState) -> dict[str, Any]:
        cfg = self.cfg
        loops = state.loops
        souped: list[int] = []
        if cfg.ser.final_model == "best_val":  # ties go to the later loop: it saw more data
            final = max(reversed(loops), key=lambda e: e["val_accuracy"])
        else:
            final = loops[-1]
        if cfg.ser.final_model == "soup" and len(loops) > 1:
            souped = [e["loop"] for e in loops]
            average_checkpoints(self.model, [self._checkpoint_path(k) for k in souped])
            metrics = self.evaluate()
            val, test = metrics["val"], metrics["test"]
            final = {"loop": loops[-1]["loop"], "val_accuracy": val.get("accuracy"), "test_accuracy": test.get("accuracy"),
                     "test_ece": test.get("ece"), "reward_mean": test.get("reward_mean"),
                     "reward_std": test.get("reward_std")}
            log.info("final RM: the average of the RMs of loops %s (ser.final_model=soup)", souped)
        else:
            load_model(self.model, str(self._checkpoint_path(final["loop"])))
        summary = {
            "schedule": self.schedule, "data": cfg.data.name, "rm": cfg.rm.name, "seed": cfg.seed,
            "variant": selection_variant(cfg.ser) if self.schedule == "ser" else NO_VARIANT,
            "seed_fraction": cfg.splits.seed_fraction, "splits": self.splits.sizes(), "stop_reason": state.stop_reason,
            "loops": [{k: e.get(k) for k in ("loop", "status", "selected", "selected_total", "self_label_accuracy",
                                         "val_accuracy", "test_accuracy", "test_ece", "seconds", "candidates",
                                         "test_accuracy_by_group", "train_pairs", "note", "shortfall")} for e in loops],
            "warnings": state.warnings,
            "final": {"loop": final["loop"], "selected_by": cfg.ser.final_model,
                      "val_accuracy": final["val_accuracy"], "test_accuracy": final["test_accuracy"],
                      "test_ece": final["test_ece"], **({"soup_of": souped} if souped else {})},
        }
        if self.writer:
            self._write_outputs(state, final, summary)
        barrier()  # every rank returns once the run dir is complete
        log.info("final RM (loop %d, by %s): test accuracy %.4f -> %s", final["loop"], cfg.ser.final_model,
                 final["test_accuracy"], self.out / "final_rm")
        return summary

    def _write_outputs(self, state: LoopState, final: dict[str, Any], summary: dict[str, Any]) -> None:
        """Rank 0's part of `finish`: self-labels, the exported RM, summary, plot, loggers."""
        cfg, loops = self.cfg, state.loops
        atomic_write_jsonl(self.out / "selflabels" / "all.jsonl", state.selected.values())
        export_reward_model(self.model, self.tokenizer, self.out / "final_rm", {
            "template": self.template, "max_length": cfg.data.max_length, "pooling": self.module.pooling,
            "reward_mean": final["reward_mean"], "reward_std": final["reward_std"], "loop": final["loop"],
            "schedule": self.schedule, "data": cfg.data.name})
        self._prune_checkpoints(state, final["loop"])
        shutil.rmtree(self.out / "scores", ignore_errors=True)  # emptied work dirs of distributed scoring
        maybe_die("finish", loops[-1]["loop"])
        atomic_write_json(self.out / "summary.json", summary)
        plot_loops(loops, self.out / "accuracy_per_loop.png", title=f"{self.schedule} on {cfg.data.name} ({cfg.rm.name})")
        for lg in self.loggers:
            lg.log_metrics({"final/test_accuracy": final["test_accuracy"], "final/test_ece": final["test_ece"]},
                           step=len(loops))
            lg.finalize("success")

    def _prune_checkpoints(self, state: LoopState, final_loop: int) -> None:
        if self.cfg.ser.keep_checkpoints == "all":
            return
        keep = {final_loop, state.loops[-1]["loop"]}
        for path in (self.out / "checkpoints").glob("loop_*.safetensors"):
            if int(path.stem.split("_")[1]) not in keep:
                path.unlink()


NO_VARIANT = "-"  # seed_only and full_data select nothing


def selection_variant(ser: DictConfig) -> str:
    """The selection settings of a SER run in one short string: ablation tables group runs by it."""
    t = ser.thresholds
    parts = [f"{ser.rule}/{ser.confidence}({t.tau_high:g},{t.tau_low:g},{t.delta:g})"]
    if ser.top_fraction is not None:
        parts.append(f"top{100 * ser.top_fraction:g}%")
    if ser.top_k is not None:
        parts.append(f"top{ser.top_k}")
    if ser.weighting != "none":
        parts.append(f"weight={ser.weighting}")
    if ser.relabel != "none":
        parts.append(f"relabel={ser.relabel}")
    if ser.agreement.kind != "none":
        parts.append(f"agree={ser.agreement.kind}x{ser.agreement.samples}@{ser.agreement.min_fraction:g}")
    if ser.retrain_from != "base":
        parts.append(f"from={ser.retrain_from}")
    if ser.get("labels", "self") != "self":
        parts.append(f"labels={ser.labels}")
    if ser.get("final_model", "best_val") != "best_val":
        parts.append(f"final={ser.final_model}")
    return " ".join(parts)


def _flat(entry: dict[str, Any]) -> dict[str, Any]:
    """One CSV row: nested dicts become prefixed columns (candidates.status1, test_accuracy_by_group.stark)."""
    row: dict[str, Any] = {}
    for key, value in entry.items():
        if isinstance(value, dict):
            row.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            row[key] = value
    return row


def run_experiment(cfg: DictConfig) -> dict[str, Any]:
    from ser.config import POLICY_SCHEDULES, validate_config

    validate_config(cfg)  # library callers get the same checks as run.py, before anything loads
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    join_started_ranks(cfg)
    if cfg.schedule.name in POLICY_SCHEDULES:  # an RM schedule, then the policy stage on its RM
        from ser.policy.stage import run_policy_schedule

        return run_policy_schedule(cfg, out)
    return Experiment(cfg, out).run()


def join_started_ranks(cfg: DictConfig) -> None:
    """Under torchrun or SLURM tasks with trainer=ddp, join the ranks' process group up front: the
    pipeline's barriers (rank 0 writes, the others read) need it before the first fit creates it."""
    from ser.config import is_plain_ddp
    from ser.ranks import launched_world_size, start_process_group

    if launched_world_size() > 1 and is_plain_ddp(cfg.trainer.get("strategy")):
        environment = start_process_group(cfg.trainer)
        rank, world = rank_and_world()
        log.info("rank %d of %d (ranks from %s): every rank runs the pipeline, rank 0 writes %s", rank, world,
                 environment, cfg.paths.output_dir)
