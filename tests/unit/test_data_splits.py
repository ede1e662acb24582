"""Synthetic data ground truth and prompt-grouped, seeded splits."""

from collections import Counter

import pytest

from ser.data.schema import PreferencePair
from ser.data.splits import split_pairs
from ser.data.synthetic import PROCEDURES, STARK_KINDS, SUBTLE_KINDS, iter_synthetic_pairs, pair_kind, synthetic_pairs


def test_synthetic_is_seeded_sized_and_has_both_families():
    a, b = synthetic_pairs(500, seed=3), synthetic_pairs(500, seed=3)
    assert a == b and len(a) == 500 and synthetic_pairs(500, seed=4) != a
    kinds = Counter(pair_kind(p.id) for p in a)
    assert set(kinds) == set(STARK_KINDS) | set(SUBTLE_KINDS)
    assert len({p.id for p in a}) == 500
    assert all(p.chosen != p.rejected for p in a)
    assert Counter(kind for _, kind in iter_synthetic_pairs(2000, seed=0, subtle_fraction=0.0)).keys() <= set(STARK_KINDS)


def test_synthetic_ground_truth_is_right_by_construction():
    for pair, kind in iter_synthetic_pairs(400, seed=1):
        if kind == "refusal":
            assert "sorry" in pair.rejected.lower() or "cannot" in pair.rejected.lower() or "not able" in pair.rejected \
                or "enough information" in pair.rejected
        if kind == "missing_step":
            assert pair.rejected.count(". ") < pair.chosen.count(". ")
        procedure = any(task in pair.prompt for task in PROCEDURES)
        if kind == "wrong_detail" and procedure:
            assert pair.chosen.count(". ") == pair.rejected.count(". ")
        if kind == "wrong_detail" and not procedure:
            # profile: the chosen answer's attribute appears in the prompt, the rejected one's does not
            right = set(pair.chosen.split()) - set(pair.rejected.split())
            wrong = set(pair.rejected.split()) - set(pair.chosen.split())
            assert all(w.strip(".") in pair.prompt for w in right)
            assert not any(w.strip(".") in pair.prompt for w in wrong)


def _pairs(n_prompts: int, per_prompt: int = 2) -> list[PreferencePair]:
    return [PreferencePair(f"{i}-{k}", f"prompt {i}", f"good {i} {k}", f"bad {i} {k}")
            for i in range(n_prompts) for k in range(per_prompt)]


def test_splits_never_share_a_prompt_and_respect_fractions():
    pairs = _pairs(500)
    s = split_pairs(pairs, seed=0, seed_fraction=0.15, val_fraction=0.2, test_fraction=0.2)
    parts = {name: {p.prompt for p in getattr(s, name)} for name in ("seed", "val", "pool", "test")}
    names = list(parts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not parts[a] & parts[b], (a, b)
    sizes = s.sizes()
    assert sum(sizes.values()) == 1000
    assert sizes["test"] == 200
    assert sizes["seed"] + sizes["val"] == 120  # 15% of the 800 non-test pairs
    assert sizes["val"] == 24


def test_splits_are_seeded_and_independent_of_input_order():
    pairs = _pairs(200)
    a = split_pairs(pairs, seed=1, seed_fraction=0.15, val_fraction=0.2, test_fraction=0.2)
    b = split_pairs(list(reversed(pairs)), seed=1, seed_fraction=0.15, val_fraction=0.2, test_fraction=0.2)
    c = split_pairs(pairs, seed=2, seed_fraction=0.15, val_fraction=0.2, test_fraction=0.2)
    assert {p.id for p in a.test} == {p.id for p in b.test}
    assert {p.id for p in a.test} != {p.id for p in c.test}


def test_own_test_split_removes_overlapping_prompts_from_training():
    pairs = _pairs(50)
    test = [PreferencePair("t0", "prompt 3", "x", "y")]
    s = split_pairs(pairs, seed=0, seed_fraction=0.5, val_fraction=0.2, test_fraction=0.2, test_pairs=test)
    assert s.test == test
    assert all(p.prompt != "prompt 3" for p in s.seed + s.val + s.pool)
    assert sum(s.sizes().values()) == 98 + 1  # 2 pairs of 'prompt 3' left out


def test_full_seed_fraction_leaves_an_empty_pool():
    s = split_pairs(_pairs(20), seed=0, seed_fraction=1.0, val_fraction=0.2, test_fraction=0.2)
    assert s.pool == [] and s.seed and s.val


@pytest.mark.parametrize("n", [1, 2])
def test_tiny_inputs_do_not_crash(n):
    s = split_pairs(_pairs(n, 1), seed=0, seed_fraction=0.5, val_fraction=0.5, test_fraction=0.0)
    assert sum(s.sizes().values()) == n
