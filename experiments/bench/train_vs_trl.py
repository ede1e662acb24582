"""RM training throughput: our RewardModule under Lightning vs TRL's RewardTrainer.

    python -m experiments.bench.train_vs_trl [--steps 12] [--batch-size 16] [--precision 32|bf16]

Same backbone (all-MiniLM-L6-v2, head seeded alike), same token ids (our TokenCache, max_length
512, truncated from the left; TRL gets them pre-tokenised so it neither re-tokenises nor drops
any), same batch size, steps (one epoch over steps x batch-size pairs), optimiser (AdamW, lr 5e-5,
weight decay 0.01, linear schedule, 10% warm-up), gradient clipping 1.0, dropout off, precision.
TRL runs with gradient checkpointing off (its default is on, which only slows it on this model),
no logging, no checkpoints. Timed: the fit/train call alone (model loading and TRL's dataset
preparation excluded). Rows:
- ours (length-grouped): `fit_reward_model(..., group_by_length=True)`
- ours (random batches): the same with the plain shuffled batches TRL also uses
- TRL RewardTrainer
"""

from __future__ import annotations

import argparse
import tempfile

from experiments.bench.common import (
    ROOT,
    bench_pairs,
    interleaved,
    load_minilm,
    machine,
    median_seconds,
    print_machine,
    save,
)

LR, WEIGHT_DECAY, WARMUP, CLIP = 5e-5, 0.01, 0.1, 1.0


def features(pairs, tokenizer, max_length: int) -> list[dict]:
    from ser.data.tokens import DEFAULT_TEMPLATE, TokenCache
    from ser.data.prepare import pair_features

    return pair_features(pairs, TokenCache(tokenizer, max_length), DEFAULT_TEMPLATE)


def ours_setup(feats: list[dict], batch_size: int, precision: str, group: bool, seed: int = 0):
    """A fresh RM module and the arguments of its fit (built outside the timed call)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from ser.reward.module import RewardModule

    model, tokenizer = load_minilm(seed)
    rm = OmegaConf.load(ROOT / "conf" / "rm" / "minilm.yaml")  # the framework's optimiser (AdamW, fused)
    assert rm.optimizer.lr == LR and rm.optimizer.weight_decay == WEIGHT_DECAY, "conf/rm/minilm.yaml changed"
    module = RewardModule(model, instantiate(rm.optimizer), {"name": "linear", "warmup_ratio": WARMUP})
    return module, {"batch_size": batch_size, "pad_id": tokenizer.pad_token_id, "seed": seed, "group": group,
                    "precision": precision}


def ours_fit(feats: list[dict], built) -> float:
    """Fit for one epoch; returns the last logged training loss."""
    from omegaconf import OmegaConf

    from ser.reward.train import fit_reward_model

    module, kw = built
    with tempfile.TemporaryDirectory() as tmp:
        trainer_cfg = OmegaConf.create({
            "_target_": "pytorch_lightning.Trainer", "accelerator": "cpu", "devices": 1,
            "precision": "bf16-mixed" if kw["precision"] == "bf16" else "32-true", "gradient_clip_val": CLIP,
            "enable_progress_bar": False, "enable_model_summary": False, "default_root_dir": tmp})
        trainer = fit_reward_model(module, feats, [], trainer_cfg=trainer_cfg, epochs=1, batch_size=kw["batch_size"],
                                   pad_id=kw["pad_id"], seed=kw["seed"], group_by_length=kw["group"])
    return float(trainer.callback_metrics.get("train/loss", float("nan")))


def make_trl(feats: list[dict], batch_size: int, precision: str, max_length: int, tmp: str, seed: int = 0,
             gradient_checkpointing: bool = False):
    """A TRL RewardTrainer on a fresh RM, ready to train (built outside the timed call)."""
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    model, tokenizer = load_minilm(seed)
    steps = -(-len(feats) // batch_size)
    data = Dataset.from_dict({"chosen_ids": [f["chosen_ids"] for f in feats],
                              "rejected_ids": [f["rejected_ids"] for f in feats]})
    config = RewardConfig(
        output_dir=tmp, per_device_train_batch_size=batch_size, num_train_epochs=1, learning_rate=LR,
        weight_decay=WEIGHT_DECAY, lr_scheduler_type="linear", warmup_steps=int(WARMUP * steps),
        max_grad_norm=CLIP, bf16=precision == "bf16", gradient_checkpointing=gradient_checkpointing,
        max_length=max_length, report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True,
        use_cpu=True, seed=seed, data_seed=seed, dataloader_num_workers=0, disable_dropout=True)
    return RewardTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--precision", choices=("32", "bf16"), default="32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", choices=("hh", "synthetic"), default="hh")
    parser.add_argument("--trl-default-checkpointing", action="store_true",
                        help="also time TRL with its default gradient_checkpointing=True")
    args = parser.parse_args(argv)

    info = machine()
    print_machine(info)
    n = args.steps * args.batch_size
    pairs, source = bench_pairs(n, args.data)
    _, tokenizer = load_minilm()
    feats = features(pairs, tokenizer, args.max_length)
    padded_random = sum(2 * max(max(len(f["chosen_ids"]), len(f["rejected_ids"])) for f in feats[s:s + args.batch_size])
                        * min(args.batch_size, n - s) for s in range(0, n, args.batch_size))
    real = sum(len(f["chosen_ids"]) + len(f["rejected_ids"]) for f in feats)
    print(f"data: {source}; {n} pairs, {args.steps} steps of {args.batch_size}, precision {args.precision}; "
          f"{real} real tokens (a batch in input order pads to {padded_random})", flush=True)

    tmp = tempfile.mkdtemp(prefix="trl_bench_")
    runs = {
        "ours (length-grouped)": (lambda: ours_setup(feats, args.batch_size, args.precision, True),
                                  lambda built: ours_fit(feats, built)),
        "ours (random batches)": (lambda: ours_setup(feats, args.batch_size, args.precision, False),
                                  lambda built: ours_fit(feats, built)),
        "TRL RewardTrainer": (lambda: make_trl(feats, args.batch_size, args.precision, args.max_length, tmp),
                              lambda trainer: trainer.train().training_loss),
    }
    if args.trl_default_checkpointing:
        runs["TRL (gradient checkpointing)"] = (
            lambda: make_trl(feats, args.batch_size, args.precision, args.max_length, tmp, gradient_checkpointing=True),
            lambda trainer: trainer.train().training_loss)
    results = interleaved(runs, args.repeats)
    base = median_seconds(results["TRL RewardTrainer"])
    print()
    print(f"{'':<32}{'median s':>10}{'pairs/s':>10}{'x TRL':>8}{'final loss':>12}")
    table = {}
    for name, rows in results.items():
        sec = median_seconds(rows)
        table[name] = {"median_s": sec, "pairs_per_s": n / sec, "x_trl": base / sec,
                       "losses": [r["result"] for r in rows], "loads": [r["load"] for r in rows],
                       "seconds": [r["seconds"] for r in rows]}
        print(f"{name:<32}{sec:>10.2f}{n / sec:>10.2f}{base / sec:>8.2f}{rows[-1]['result']:>10.4f}")
    print("* loss: ours the last step's, TRL the epoch mean (a check that both trained, not a comparison)")
    payload = {"machine": info, "data": source, "args": vars(args), "pairs": n, "real_tokens": real,
               "random_batch_padded_tokens": padded_random, "results": table}
    save(f"train_vs_trl_{args.precision}", payload)
    return payload


if __name__ == "__main__":
    main()
