"""RM and policy co-evolve (schedule=coevolve): the policy's own samples become the unlabeled pool.

Loop 0 trains the seed RM as every schedule does. Each loop k >= 1:
1. the current policy samples `coevolve.samples_per_prompt` responses to each of `coevolve.prompts_per_loop`
   pool prompts (their human answers and labels are never read), seeded per loop;
2. responses of one prompt form pairs (`pairing`: all pairs, or the RM's best against its worst), and the
   current RM scores them; the SER step (same rules, phase schedule, shortfalls and stop rule) keeps some
   and labels them;
3. the RM retrains on the seed + every generated self-label so far (`coevolve.rm=self`; `frozen` keeps the
   seed RM, `full_data` an RM of every human pool label: the fixed-RM baselines);
4. the policy trains by DPO on the loop's self-labeled pairs (reference: the loop's starting policy, or the
   original with `coevolve.reference=original`);
5. validation decides: the RM's validation accuracy (stopping, the final RM) and the policy's mean RM reward
   on validation prompts (the final policy). The test prompts only report: gold reward, KL, length, win /
   tie / loss against the starting policy, and each loop's self-labels' agreement with the gold judge.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from itertools import combinations
from typing import Any

import torch

from ser.data.schema import PreferencePair
from ser.events import emit
from ser.evolve.clock import LoopClock
from ser.evolve.loop import SERLoop
from ser.evolve.state import LoopState
from ser.evolve.step import as_pairs, evolve_step, self_label_accuracy

log = logging.getLogger(__name__)
# Where a loop's time goes (loops.csv, the summary's per-loop policy record, docs/performance.md)
# (`evaluate`: the RM on validation and test; `write`: its checkpoint)
TIME_SPLIT = tuple(f"seconds_{part}" for part in ("sample", "score", "train_rm", "train_policy", "evaluate_policy",
                                                   "evaluate", "write"))


class CoevolveLoop(SERLoop):
    def __init__(self, *args: Any, policy: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.policy = policy  # ser.tasks.coevolve.PolicySide: the policy, its prompts, judges and trainer
        self.co = self.cfg.coevolve
        self.settings = replace(self.settings, remove_selected=False)  # every loop brings a new pool
        self.pending: dict[str, Any] = {}

    @property
    def self_labels(self) -> bool:
        return True

    def extra_entry(self, loop: int) -> dict[str, Any]:
        pending, self.pending = self.pending, {}
        return pending

    def summary_extra(self, state: LoopState) -> dict[str, Any]:
        return self.policy.summary(state, self.rm_reward)

    def training_pairs(self, state: LoopState) -> tuple[list, list[float]]:
        if str(self.co.rm) == "full_data":  # the fixed full-data RM baseline: every human pool label, once
            pairs = self.data.splits.seed + self.data.splits.pool
            return pairs, [1.0] * len(pairs)
        return super().training_pairs(state)

    # ---- the loop ----------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        state = self.store.open()
        self.policy.restore(state)  # the policy of the last finished loop (the start before loop 1)
        if not state.loops:
            self.pending = self.policy.evaluate(0, self.rm_reward)
        return super().run()

    def evolve_once(self, state: LoopState) -> LoopState:
        loop, split = state.next_loop, LoopClock()  # fills TIME_SPLIT (record() adds the RM's evaluation and checkpoint)
        samples = self.policy.sample(loop)
        pairs, gold = self.generated_pairs(samples, loop)
        split.lap("sample")
        rewards = self.scorer.pair_rewards(self.data.featurise(pairs), f"loop {loop}: scoring generated pairs")
        if str(self.co.pairing) == "best_worst":
            keep = best_against_worst(pairs, rewards)
            pairs, rewards = [pairs[i] for i in keep], (rewards[0][keep], rewards[1][keep])
        emit("pool_scored", loop=loop)
        val_rewards = self.scorer.pair_rewards(self.data.features["val"], "calibrating")
        step = evolve_step(state, pairs, rewards, val_rewards, self.settings, loop=loop)
        split.lap("score")
        # answer a is the gold-preferred one, so the step's `correct` is agreement with gold (None: a gold tie)
        rows = [{**r, "correct": r["correct"] if gold[r["id"]] else None} for r in step.rows]
        state = step.state
        for row in rows:
            state.selected[row["id"]] = row
        log.info("loop %d: %s (candidates %s)", loop, step.reason, step.candidates)
        if step.shortfall:
            log.warning("loop %d: SELECTION SHORTFALL: %s", loop, step.shortfall)
        if step.stop:
            log.warning("loop %d: stopping: %s", loop, step.reason)
            self.store.save_state(state)
            return state
        self.store.write_selflabels(f"loop_{loop}", rows)
        self.policy.write_generated(loop, samples, pairs, rewards, gold)
        if str(self.co.rm) == "self":
            self.train_on(state, loop)
        split.lap("train_rm")
        self.policy.train(as_pairs(rows), loop)
        split.lap("train_policy")
        evaluation = self.policy.evaluate(loop, self.rm_reward)
        split.lap("evaluate_policy")
        self.pending = {**evaluation,
                        "self_label_gold_agreement": self_label_accuracy([r for r in rows if r["correct"] is not None])}
        entry = self.record(state, loop, replace(step, rows=rows), split, step.candidates)
        self.check_patience(state, entry)
        return state

    def generated_pairs(self, samples: list[dict[str, Any]], loop: int) -> tuple[list[PreferencePair], dict[str, bool]]:
        """Pairs of one prompt's distinct responses; answer a is the gold-preferred one where the gold judge
        tells them apart ({pair id: True}), else the first sampled ({pair id: False})."""
        pairs, gold = [], {}
        for s in samples:
            responses = list(dict.fromkeys(r for r in s["responses"] if r.strip()))
            scores = self.policy.gold_scores(s["prompt"], responses)
            for i, j in combinations(range(len(responses)), 2):
                if scores is not None and scores[j] > scores[i]:
                    i, j = j, i
                pair = PreferencePair(f"gen{loop}-{s['index']}-{i}-{j}", s["prompt"], responses[i], responses[j])
                pairs.append(pair)
                gold[pair.id] = scores is not None and scores[i] != scores[j]
        return pairs, gold

    def rm_reward(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """The current RM's reward of each (prompt, response): the policy's validation signal."""
        from ser.reward.scoring import score_token_ids

        ids = self.data.cache.encode([self.data.renderer.text(p, r) for p, r in zip(prompts, responses)])
        local = self.scorer.local
        return score_token_ids(self.rm.model, ids, pad_id=self.rm.pad_id, pooling=self.rm.module.pooling,
                               batch_size=local.options["batch_size"], device=local.device)


def best_against_worst(pairs: list[PreferencePair], rewards: tuple[torch.Tensor, torch.Tensor]) -> list[int]:
    """Per prompt, the one pair of its RM-best and RM-worst responses (indices into `pairs`)."""
    best: dict[str, tuple[float, str]] = {}
    worst: dict[str, tuple[float, str]] = {}
    for pair, ra, rb in zip(pairs, rewards[0].tolist(), rewards[1].tolist()):
        for text, r in ((pair.chosen, ra), (pair.rejected, rb)):
            if r > best.get(pair.prompt, (float("-inf"), ""))[0]:
                best[pair.prompt] = (r, text)
            if r < worst.get(pair.prompt, (float("inf"), ""))[0]:
                worst[pair.prompt] = (r, text)
    return [i for i, p in enumerate(pairs)
            if {p.chosen, p.rejected} == {best[p.prompt][1], worst[p.prompt][1]}]
