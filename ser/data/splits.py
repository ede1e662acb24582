"""Seeded splits by prompt: labeled seed (+ validation carved from it), unlabeled pool, test.

No prompt crosses splits: all pairs that share a prompt go to the same split, so neither the
pool nor the test set leaks into what the RM is trained or selected on.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass

from ser.data.schema import PreferencePair


@dataclass(frozen=True)
class Splits:
    seed: list[PreferencePair]  # labeled, used for training
    val: list[PreferencePair]  # labeled, carved from the seed: stopping and model selection only
    pool: list[PreferencePair]  # labels hidden from training; kept only to score self-labels
    test: list[PreferencePair]  # reported, never used for a decision

    def sizes(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in ("seed", "val", "pool", "test")}


def _group_by_prompt(pairs: list[PreferencePair], seed: int) -> list[list[PreferencePair]]:
    groups: dict[str, list[PreferencePair]] = defaultdict(list)
    for pair in pairs:
        groups[pair.prompt.strip()].append(pair)
    # Order groups by a seeded hash of the prompt: deterministic, and independent of input order.
    def key(prompt: str) -> str:
        return hashlib.sha1(f"{seed}\x00{prompt}".encode()).hexdigest()

    return [groups[p] for p in sorted(groups, key=key)]


def _take(groups: list[list[PreferencePair]], target: float) -> tuple[list, list]:
    """Take whole groups from the front until at least `target` pairs are taken."""
    taken: list[PreferencePair] = []
    i = 0
    while i < len(groups) and len(taken) < target:
        taken.extend(groups[i])
        i += 1
    return taken, groups[i:]


def split_pairs(pairs: list[PreferencePair], *, seed: int, seed_fraction: float, val_fraction: float,
                test_fraction: float, test_pairs: list[PreferencePair] | None = None) -> Splits:
    """Split `pairs` by prompt.

    `test_fraction` of the pairs go to test (unless `test_pairs` is a dataset's own test split;
    then pairs whose prompt is in it are excluded from training). `seed_fraction` of the rest is the
    labeled seed, and `val_fraction` of the seed is held out as validation. The rest is the pool.
    """
    if test_pairs is not None:
        test_prompts = {p.prompt.strip() for p in test_pairs}
        train_side = [p for p in pairs if p.prompt.strip() not in test_prompts]
        groups = _group_by_prompt(train_side, seed)
        test = list(test_pairs)
    else:
        groups = _group_by_prompt(pairs, seed)
        test, groups = _take(groups, test_fraction * len(pairs))
    n_train_side = sum(len(g) for g in groups)
    labeled, groups = _take(groups, seed_fraction * n_train_side)
    pool = [p for g in groups for p in g]
    labeled_groups = _group_by_prompt(labeled, seed + 1)
    val, rest = _take(labeled_groups, val_fraction * len(labeled))
    if val_fraction > 0 and not rest:  # a single prompt group: keep it for training, not validation
        val, rest = [], labeled_groups
    seed_train = [p for g in rest for p in g]
    return Splits(seed=seed_train, val=val, pool=pool, test=test)
