"""No test-split text influences any trained weight or exported file: only the test metrics see it."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from ser.data.synthetic import synthetic_pairs


def _write(path, pairs, mangle: bool = False):
    rows = []
    for p in pairs:
        chosen, rejected = (p.rejected + " !!", p.chosen + " zz") if mangle else (p.chosen, p.rejected)
        rows.append({"id": p.id, "prompt": p.prompt, "chosen": chosen, "rejected": rejected})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _run(tmp_path, name, mangle, schedule):
    from ser.tasks.run import run_experiment
    from tests.conftest import compose

    pairs = synthetic_pairs(360, seed=7)
    test = pairs[300:]
    train = [p for p in pairs[:300] if p.prompt not in {t.prompt for t in test}]
    _write(tmp_path / f"{name}_train.jsonl", train)
    _write(tmp_path / f"{name}_test.jsonl", test, mangle=mangle)
    out = tmp_path / name
    cfg = compose(["experiment=smoke", "data=generic", f"data.source.path={tmp_path / f'{name}_train.jsonl'}",
                   f"data.test_source={{adapter: generic, path: {tmp_path / f'{name}_test.jsonl'}, "
                   "options: {field_map: {id: id, prompt: prompt, chosen: chosen, rejected: rejected}}}",
                   "data.max_length=64", f"schedule={schedule}", "ser.phases=[1,2]"], out)
    return out, run_experiment(cfg)


@pytest.mark.parametrize("schedule", ["seed_only", "ser"])
def test_changing_only_the_test_texts_leaves_the_exported_rm_identical(tmp_path, schedule):
    torch.set_num_threads(1)
    a, summary_a = _run(tmp_path, "a", mangle=False, schedule=schedule)
    b, summary_b = _run(tmp_path, "b", mangle=True, schedule=schedule)
    assert summary_a["final"]["test_accuracy"] != summary_b["final"]["test_accuracy"]  # the test split did change
    weights_a, weights_b = load_file(a / "final_rm" / "model.safetensors"), load_file(b / "final_rm" / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    meta_a = json.loads((a / "final_rm" / "ser_reward.json").read_text())
    meta_b = json.loads((b / "final_rm" / "ser_reward.json").read_text())
    assert meta_a == meta_b and meta_a["reward_stats_split"] == "validation"
    for name in ("tokenizer.json", "config.json"):
        assert (a / "final_rm" / name).read_text() == (b / "final_rm" / name).read_text()
    strip = lambda s: [{k: v for k, v in e.items() if not k.startswith(("test", "seconds"))} for e in s["loops"]]
    assert strip(summary_a) == strip(summary_b)  # every decision (selection, validation) is the same
