"""TRL's preference formats load with data=generic and train a tiny RM: standard and conversational, explicit
and implicit prompt, system messages and multi-turn context kept; a decoder with a chat template renders
whole conversations through it."""

from __future__ import annotations

import json

import pytest
import torch

from ser.data.synthetic import synthetic_pairs
from tests.conftest import compose


def msg(role, content):
    return {"role": role, "content": content}


def rows(fmt: str, n: int = 160) -> list[dict]:
    out = []
    for i, p in enumerate(synthetic_pairs(n, seed=11)):
        system = [msg("system", "Answer in one sentence.")] if fmt in ("system", "multi_turn") else []
        history = [msg("user", "Hello."), msg("assistant", "Hello! How can I help?")] if fmt == "multi_turn" else []
        if fmt == "standard":
            out.append({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected})
        elif fmt == "standard_implicit":
            out.append({"chosen": f"{p.prompt} {p.chosen}", "rejected": f"{p.prompt} {p.rejected}"})
        elif fmt == "conversational":
            out.append({"prompt": [msg("user", p.prompt)], "chosen": [msg("assistant", p.chosen)],
                        "rejected": [msg("assistant", p.rejected)]})
        else:  # implicit prompt: whole conversations, sharing everything but the last answer
            head = [*system, *history, msg("user", p.prompt)]
            out.append({"chosen": head + [msg("assistant", p.chosen)], "rejected": head + [msg("assistant", p.rejected)]})
    return out


FORMATS = ["standard", "standard_implicit", "conversational", "conversational_implicit", "system", "multi_turn"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_trl_format_loads_and_trains_a_tiny_rm(fmt, tmp_path):
    from ser.tasks.run import run_experiment

    path = tmp_path / f"{fmt}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows(fmt)))
    out = tmp_path / "run"
    torch.set_num_threads(1)
    summary = run_experiment(compose(["experiment=smoke", "schedule=seed_only", "data=generic", f"data.source.path={path}",
                                      "data.max_length=96"], out))
    report = json.loads((out / "data_report.json").read_text())["sources"][0]
    assert report["skipped"] == 0 and report["pairs_kept"] == 160
    assert summary["final"]["test_accuracy"] > 0.6  # it learned from them
    seeds = [json.loads(line) for line in (out / "selflabels" / "all.jsonl").read_text().splitlines()]
    assert seeds == []  # seed_only self-labels nothing
    if fmt == "multi_turn":  # the earlier turns and the system message are part of the prompt the RM reads
        from ser.data.loading import load_pairs

        pairs, _ = load_pairs({"adapter": "generic", "path": str(path)})
        assert pairs[0].prompt.startswith("System: Answer in one sentence.\n\nUser: Hello.\n\nAssistant: Hello! How")
        assert [m["role"] for m in pairs[0].conversation["prompt"]] == ["system", "user", "assistant", "user"]


def test_a_source_named_conversational_counts_standard_rows_as_wrong_format(tmp_path):
    from ser.data.loading import load_pairs

    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows("conversational", 4) + rows("standard", 2)))
    pairs, report = load_pairs({"adapter": "generic", "path": str(path), "format": "conversational"})
    assert len(pairs) == 4 and report.counts == {"wrong_format": 2}
    assert report.issues[0].line == 5


CHAT = ("{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}")


def test_a_decoder_rm_with_a_chat_template_renders_whole_conversations(tmp_path):
    from ser.reward.export import RewardScorer
    from ser.tasks.run import run_experiment

    path = tmp_path / "conv.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows("system")))
    out = tmp_path / "run"
    run_experiment(compose(["experiment=smoke", "schedule=seed_only", "rm=tiny_decoder", f"+rm.source.chat_template={CHAT!r}",
                            "data=generic", f"data.source.path={path}", "data.chat_template=true", "data.max_length=96"], out))
    meta = json.loads((out / "final_rm" / "ser_reward.json").read_text())
    assert meta["chat_template"] is True
    scorer = RewardScorer.from_pretrained(out / "final_rm")
    assert scorer.renderer.text("Q?", "A.") == "<user> Q? <assistant> A. "
    system = [msg("system", "Answer in one sentence."), msg("user", "Q?")]
    assert scorer.renderer.text("Q?", "A.", system) == "<system> Answer in one sentence. <user> Q? <assistant> A. "
