"""What a new user meets: a quiet console, the config in every logger, clear early errors, untouched run
dirs, errors that name the bad field and row, and an export that plain transformers scores alike."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, compose

SMOKE = ["experiment=smoke"]


def _cli(args: list[str], root: Path, **env: str) -> subprocess.CompletedProcess:
    base = {"PATH": "/usr/bin:/bin", "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT), "PROJECT_ROOT": str(root),
            "OMP_NUM_THREADS": "1", "HOME": str(root)}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=root, env={**base, **env},
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def smoke_cli(tmp_path_factory):
    root = tmp_path_factory.mktemp("newcomer")
    result = _cli(SMOKE + ["logger=default"], root)  # CSV + wandb offline, as a user's first run
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "outputs" / "ser" / "runs" / "experiment=smoke", result


def test_a_smoke_run_prints_at_most_25_lines(smoke_cli):
    _, result = smoke_cli
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) <= 25, "\n".join(lines)
    assert sum("loop 3 · status 2" in line for line in lines) == 1  # one line per loop, the table once
    assert not [line for line in lines if line.startswith("wandb:")]  # e.g. its notice on Lightning's anonymous=None


def test_the_composed_config_is_in_csv_and_wandb(smoke_cli):
    import yaml

    out, _ = smoke_cli
    hparams = yaml.safe_load((out / "csv" / "version_0" / "hparams.yaml").read_text())
    assert hparams["seed"] == 0 and hparams["schedule"]["name"] == "ser" and hparams["ser"]["name"] == "top_gap"
    run_file = next((out / "wandb").glob("offline-run-*/run-*.wandb")).read_bytes()
    for key in ("splits", "rm"):  # wandb's record holds each group as JSON
        assert json.dumps(hparams[key], separators=(",", ":")).encode() in run_file, key
    assert b'"tags":["ser","synthetic","tiny","seed=0"]' in run_file and b'"group":"experiment=smoke"' in run_file
    header = (out / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "train/loss" in header and "loop" in header and not any(h.startswith("loop1/") for h in header)


def test_a_refused_run_leaves_the_existing_run_dir_byte_identical(smoke_cli):
    out, _ = smoke_cli
    before = {p: p.read_bytes() for p in (out / ".hydra").iterdir()}
    root = out.parents[3]
    refused = _cli(SMOKE + ["logger=default", "seed=5", f"hydra.run.dir='{out}'"], root)
    assert refused.returncode != 0 and "another config" in refused.stdout + refused.stderr
    assert {p: p.read_bytes() for p in (out / ".hydra").iterdir()} == before


def test_a_missing_rm_directory_fails_in_seconds_with_one_line(tmp_path):
    started = time.time()
    result = _cli(["rm=hub", "rm.source.name_or_path=/no/such/dir"], tmp_path)
    elapsed = time.time() - started
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode != 0 and elapsed < 5, elapsed
    assert len(lines) == 1 and "rm.source.name_or_path" in lines[0] and "/no/such/dir" in lines[0]


def test_every_row_bad_names_the_field_and_an_example_and_still_writes_the_report(tmp_path):
    from ser.data.schema import DataError
    from ser.tasks.run import run_experiment

    path = tmp_path / "chats.jsonl"
    rows = [{"prompt": "q", "chosen": {"text": f"a{i}"}, "rejected": "b"} for i in range(5)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    with pytest.raises(DataError) as err:
        run_experiment(compose(SMOKE + ["data=generic", f"data.source.path={path}"], out))
    message = str(err.value)
    assert f"{path}: no valid preference pairs in 5 rows" in message and "field 'chosen'" in message
    assert f"First: {path}:1: wrong_type in field 'chosen'" in message and '{"prompt": "q"' in message
    report = json.loads((out / "data_report.json").read_text())
    assert report["sources"][0]["skipped"] == 5 and report["error"] == message


def test_the_exported_rm_scores_alike_in_plain_transformers(tmp_path):
    """No ser settings read: the saved tokenizer's chat template, max length and truncation side suffice."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ser.reward.export import RewardScorer, score_pairs
    from ser.tasks.run import run_experiment

    torch.set_num_threads(1)
    out = tmp_path / "run"
    run_experiment(compose(SMOKE + ["schedule=seed_only"], out))
    model = AutoModelForSequenceClassification.from_pretrained(out / "final_rm").eval()
    tokenizer = AutoTokenizer.from_pretrained(out / "final_rm")
    prompt, response = "Anna works as a teacher. " * 30 + "What does Anna do?", "Anna works as a teacher."  # overlong
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
                                         tokenize=False)
    assert text == f"Question: {prompt}\n\nAnswer: {response}"
    with torch.no_grad():
        plain = model(**tokenizer(text, truncation=True, return_tensors="pt")).logits.item()
    assert plain == pytest.approx(score_pairs(out / "final_rm", [(prompt, response)])[0], abs=1e-5)
    assert tokenizer.model_max_length == 64 and tokenizer.truncation_side == "left"
    (out / "final_rm" / "ser_reward.json").unlink()
    with pytest.raises(FileNotFoundError, match="use_defaults=True"):
        RewardScorer.from_pretrained(out / "final_rm")
    assert RewardScorer.from_pretrained(out / "final_rm", use_defaults=True).score([(prompt, response)]).shape == (1,)


def test_a_failed_run_prints_one_traceback(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "chosen": 1, "rejected": "b"}\n')
    result = _cli(SMOKE + ["data=generic", f"data.source.path={bad}"], tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and output.count("Traceback") == 1
    assert f"First: {bad}:1: wrong_type in field 'chosen'" in output
