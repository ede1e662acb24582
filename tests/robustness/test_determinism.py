"""Determinism: one config + seed gives one result; batch 8 trains as batch 2 with 4 accumulation steps."""

from __future__ import annotations

import json
import logging
import random

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from ser.reward.backbone import load_backbone
from ser.reward.module import RewardModule
from ser.reward.train import fit_reward_model
from tests.conftest import compose, without_timing


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: deterministic reductions, and on a busy 2-core machine 2 threads run ~5x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_same_config_and_seed_give_the_same_summary_selflabels_and_weights(tmp_path):
    from safetensors.torch import load_file

    from ser.tasks.run import run_experiment

    first = run_experiment(compose(["experiment=smoke"], tmp_path / "a"))
    second = run_experiment(compose(["experiment=smoke"], tmp_path / "b"))
    assert len(first["loops"]) == 4, "smoke must run two SER loops for this to mean anything"
    assert without_timing(first) == without_timing(second)
    on_disk = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("a", "b")]
    assert without_timing(on_disk[0]) == without_timing(on_disk[1]) == without_timing(first)
    for name in ("selflabels/all.jsonl", "selflabels/loop_1.jsonl", "selflabels/loop_2.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    weights = [load_file(tmp_path / d / "final_rm" / "model.safetensors") for d in ("a", "b")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


# ---- gradient accumulation ----

# initializer_range 0.2 (BERT's default is 0.02): with 0.02 every reward is ~0, the loss sits at log 2 and
# the weights barely move, so an accumulation bug would hide below float noise.
TINY_BERT = {"kind": "config", "decoder": False, "config": {
    "model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
    "intermediate_size": 32, "initializer_range": 0.2}}
VOCAB = ["the cat sat on the mat", "a dog ran far away", "Question : Answer", "one two three four five six seven"]
N_PAIRS, EPOCHS = 16, 2  # 2 optimizer steps per epoch with an effective batch of 8: 4 steps in all

# Measured on CPU (torch 2.13, 1 thread, 16 pairs): relative weight difference 1.2e-6 (SGD) and 1.0e-6 (AdamW),
# per-step loss difference 7.5e-8 (2 threads, 32 pairs: 1.5e-6 / 1.9e-6 / 9e-8). The tolerances leave ~100x
# headroom and stay far below a real bug (batch 2 without accumulation: relative difference 1.9 to 4.4).
REL_TOL, LOSS_TOL = 1e-4, 1e-5
# The pairwise loss does not depend on these, so their exact gradient is 0: SGD leaves them alone, but
# AdamW divides float noise (1e-10) by its own tiny running norm and takes a full lr-size step. Under
# AdamW they drift by noise alone in either run, so they are excluded from the AdamW comparison.
ZERO_GRADIENT = ("classifier.bias", "attention.self.key.bias")

OPTIMIZERS = {
    "sgd": lambda params: torch.optim.SGD(params, lr=1.0),
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01),
}


class _StepLosses(pl.Callback):
    """The loss of each optimizer step (Lightning divides a micro-batch's loss by the accumulation steps)."""

    def __init__(self) -> None:
        self.micro: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.micro.append(float(outputs["loss"]))

    def per_step(self, accumulate: int) -> list[float]:
        return [sum(self.micro[i:i + accumulate]) for i in range(0, len(self.micro), accumulate)]


def _features(tokenizer) -> list[dict]:
    rng = random.Random(0)
    words = " ".join(VOCAB).split()

    def text() -> str:  # lengths 2..9 words: batches of 2 and of 8 pad differently
        return " ".join(rng.choice(words) for _ in range(rng.randint(2, 9)))

    return [{"chosen_ids": tokenizer(text())["input_ids"], "rejected_ids": tokenizer(text())["input_ids"],
             "weight": 1.0} for _ in range(N_PAIRS)]


def _train(optimizer: str, batch_size: int, accumulate: int, tmp_path) -> tuple[dict, dict, list[float], int]:
    torch.manual_seed(0)
    model, tokenizer = load_backbone({"source": TINY_BERT}, vocab_texts=VOCAB)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    module = RewardModule(model, OPTIMIZERS[optimizer], {"name": "linear", "warmup_ratio": 0.25})
    trainer_cfg = OmegaConf.create({
        "_target_": "pytorch_lightning.Trainer", "accelerator": "cpu", "devices": 1, "precision": "32-true",
        "enable_progress_bar": False, "enable_model_summary": False, "default_root_dir": str(tmp_path),
        "gradient_clip_val": 1.0, "accumulate_grad_batches": accumulate})
    losses = _StepLosses()
    fit_reward_model(module, _features(tokenizer), [], trainer_cfg=trainer_cfg, epochs=EPOCHS,
                     batch_size=batch_size, pad_id=tokenizer.pad_token_id, seed=0, callbacks=[losses])
    after = {n: p.detach().clone() for n, p in model.named_parameters()}
    return start, after, losses.per_step(accumulate), module.global_step


def _relative_difference(a: dict, b: dict, start: dict, skip: tuple[str, ...]) -> float:
    names = [n for n in a if not n.endswith(skip)]
    diff = torch.cat([(a[n] - b[n]).flatten() for n in names]).norm()
    moved = torch.cat([(a[n] - start[n]).flatten() for n in names]).norm()
    assert moved > 0.05, "the weights hardly moved: the comparison would mean nothing"
    return (diff / moved).item()


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_batch_8_trains_as_batch_2_with_4_accumulation_steps(optimizer, tmp_path):
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    start, big, big_losses, big_steps = _train(optimizer, 8, 1, tmp_path)
    _, accumulated, acc_losses, acc_steps = _train(optimizer, 2, 4, tmp_path)
    assert big_steps == acc_steps == EPOCHS * N_PAIRS // 8
    assert len(big_losses) == len(acc_losses) == big_steps
    assert max(abs(a - b) for a, b in zip(big_losses, acc_losses)) < LOSS_TOL, (big_losses, acc_losses)
    skip = ZERO_GRADIENT if optimizer == "adamw" else ()
    assert _relative_difference(big, accumulated, start, skip) < REL_TOL
    # and the test can tell: batch 2 without accumulation takes 4x the steps and ends elsewhere
    _, unaccumulated, _, _ = _train(optimizer, 2, 1, tmp_path)
    assert _relative_difference(big, unaccumulated, start, skip) > 100 * REL_TOL
