"""RM training throughput: our RewardModule under Lightning vs TRL's RewardTrainer at its best.

    python -m experiments.bench.train_vs_trl [--steps 12] [--batch-size 16] [--precision 32|bf16] [--trl-compile]

Same backbone (all-MiniLM-L6-v2, head seeded alike), same token ids (our TokenCache, max_length
512, truncated from the left; TRL gets them pre-tokenised so it neither re-tokenises nor drops
any), same batch size, steps (one epoch over steps x batch-size pairs), optimiser (AdamW, lr 5e-5,
weight decay 0.01, linear schedule, 10% warm-up), gradient clipping 1.0, dropout off, precision.
TRL runs with gradient checkpointing off (its default is on, which only slows it on this model),
no logging, no checkpoints. Timed: the fit/train call alone (model loading and TRL's dataset
preparation excluded). Rows:
- ours (grouped, padding-free): length-grouped batches whose linear layers see only real tokens
  (`rm.group_by_length=true rm.padding_free=true`, ser/reward/packed.py)
- ours (length-grouped): `fit_reward_model(..., group_by_length=True)`, padded batches
- ours (random, padding-free) and ours (random batches): the plain shuffled batches TRL also uses
- TRL (group_by_length): TRL's own length grouping, `train_sampling_strategy="group_by_length"`. On pair data
  it needs a precomputed `length` column (max of the two sides, what a batch pads to) and
  `remove_unused_columns=False`: transformers infers lengths only from an `input_ids` column, which
  preference data does not have, and drops unknown columns before the sampler reads them.
- TRL RewardTrainer: its defaults but for gradient checkpointing (off)
- with --trl-compile, TRL (group_by_length, torch_compile): its `torch_compile=True` as well
TRL has no padding-free mode for reward training (its `padding_free` is an SFT option and needs flash
attention, which CPUs lack). The ratio is taken against the fastest TRL row.
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


def ours_setup(feats: list[dict], batch_size: int, precision: str, group: bool, seed: int = 0,
               padding_free: bool = False):
    """A fresh RM module and the arguments of its fit (built outside the timed call)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from ser.reward.module import RewardModule

    model, tokenizer = load_minilm(seed)
    rm = OmegaConf.load(ROOT / "conf" / "rm" / "minilm.yaml")  # the framework's optimiser (AdamW, fused)
    assert rm.optimizer.lr == LR and rm.optimizer.weight_decay == WEIGHT_DECAY, "conf/rm/minilm.yaml changed"
    module = RewardModule(model, instantiate(rm.optimizer), {"name": "linear", "warmup_ratio": WARMUP},
                          padding_free=padding_free)
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
             gradient_checkpointing: bool = False, group: bool = False, compile: bool = False):
    """A TRL RewardTrainer on a fresh RM, ready to train (built outside the timed call)."""
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    model, tokenizer = load_minilm(seed)
    steps = -(-len(feats) // batch_size)
    columns = {"chosen_ids": [f["chosen_ids"] for f in feats], "rejected_ids": [f["rejected_ids"] for f in feats]}
    if group:  # what a batch pads to; see the module docstring for why TRL needs it spelled out
        columns["length"] = [max(len(f["chosen_ids"]), len(f["rejected_ids"])) for f in feats]
    data = Dataset.from_dict(columns)
    config = RewardConfig(
        output_dir=tmp, per_device_train_batch_size=batch_size, num_train_epochs=1, learning_rate=LR,
        weight_decay=WEIGHT_DECAY, lr_scheduler_type="linear", warmup_steps=int(WARMUP * steps),
        max_grad_norm=CLIP, bf16=precision == "bf16", gradient_checkpointing=gradient_checkpointing,
        max_length=max_length, report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True,
        use_cpu=True, seed=seed, data_seed=seed, dataloader_num_workers=0, disable_dropout=True,
        **({"train_sampling_strategy": "group_by_length", "remove_unused_columns": False} if group else {}),
        **({"torch_compile": True} if compile else {}))
    return RewardTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer)


def heldout_accuracy(model, feats: list[dict], pad_id: int) -> float:
    """Share of held-out pairs the trained RM ranks right (eager fp32 scoring, the same for every row)."""
    from ser.reward.scoring import score_token_ids

    ids = [f["chosen_ids"] for f in feats] + [f["rejected_ids"] for f in feats]
    rewards = score_token_ids(model, ids, pad_id=pad_id, pooling="hf", batch_size=8)
    return float((rewards[:len(feats)] > rewards[len(feats):]).float().mean())


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
    parser.add_argument("--trl-compile", action="store_true", help="also time TRL grouped with torch_compile=True")
    parser.add_argument("--only", nargs="+", help="run only the rows whose names contain one of these words")
    parser.add_argument("--heldout", type=int, default=100,
                        help="pairs after the training ones that each trained RM is scored on (0: none)")
    args = parser.parse_args(argv)

    info = machine()
    print_machine(info)
    n = args.steps * args.batch_size
    pairs, source = bench_pairs(n + args.heldout, args.data)
    _, tokenizer = load_minilm()
    feats = features(pairs[:n], tokenizer, args.max_length)
    heldout = features(pairs[n:], tokenizer, args.max_length)
    padded_random = sum(2 * max(max(len(f["chosen_ids"]), len(f["rejected_ids"])) for f in feats[s:s + args.batch_size])
                        * min(args.batch_size, n - s) for s in range(0, n, args.batch_size))
    real = sum(len(f["chosen_ids"]) + len(f["rejected_ids"]) for f in feats)
    print(f"data: {source}; {n} pairs, {args.steps} steps of {args.batch_size}, precision {args.precision}; "
          f"{real} real tokens (a batch in input order pads to {padded_random})", flush=True)

    tmp = tempfile.mkdtemp(prefix="trl_bench_")
    trl_train = lambda trainer: trainer.train().training_loss  # noqa: E731

    def checked(loss: float, model) -> dict:
        return {"loss": loss, "heldout_accuracy": heldout_accuracy(model, heldout, tokenizer.pad_token_id) if heldout else None}

    ours_check = lambda built, loss: checked(loss, built[0].model)  # noqa: E731
    trl_check = lambda trainer, loss: checked(loss, trainer.model)  # noqa: E731
    runs = {
        "ours (grouped, padding-free)": (
            lambda: ours_setup(feats, args.batch_size, args.precision, True, padding_free=True),
            lambda built: ours_fit(feats, built), ours_check),
        "ours (length-grouped)": (lambda: ours_setup(feats, args.batch_size, args.precision, True),
                                  lambda built: ours_fit(feats, built), ours_check),
        "ours (random, padding-free)": (
            lambda: ours_setup(feats, args.batch_size, args.precision, False, padding_free=True),
            lambda built: ours_fit(feats, built), ours_check),
        "ours (random batches)": (lambda: ours_setup(feats, args.batch_size, args.precision, False),
                                  lambda built: ours_fit(feats, built), ours_check),
        "TRL (group_by_length)": (
            lambda: make_trl(feats, args.batch_size, args.precision, args.max_length, tmp, group=True), trl_train,
            trl_check),
        "TRL RewardTrainer": (lambda: make_trl(feats, args.batch_size, args.precision, args.max_length, tmp),
                              trl_train, trl_check),
    }
    if args.trl_compile:
        runs["TRL (group_by_length, torch_compile)"] = (
            lambda: make_trl(feats, args.batch_size, args.precision, args.max_length, tmp, group=True, compile=True),
            trl_train, trl_check)
    if args.trl_default_checkpointing:
        runs["TRL (gradient checkpointing)"] = (
            lambda: make_trl(feats, args.batch_size, args.precision, args.max_length, tmp, gradient_checkpointing=True),
            trl_train, trl_check)
    if args.only:
        runs = {name: run for name, run in runs.items() if any(word in name for word in args.only)}
    results = interleaved(runs, args.repeats)
    trl_rows = [name for name in results if name.startswith("TRL")]
    best_trl = min(trl_rows, key=lambda name: median_seconds(results[name]))
    base = median_seconds(results[best_trl])
    print()
    print(f"ratios against TRL at its fastest here: {best_trl}")
    print(f"{'':<40}{'median s':>10}{'pairs/s':>10}{'x TRL':>8}{'loss*':>8}{'held-out acc':>14}")
    table = {}
    for name, rows in results.items():
        sec = median_seconds(rows)
        accuracies = [r["result"]["heldout_accuracy"] for r in rows]
        table[name] = {"median_s": sec, "pairs_per_s": n / sec, "x_trl": base / sec,
                       "losses": [r["result"]["loss"] for r in rows], "heldout_accuracy": accuracies,
                       "loads": [r["load"] for r in rows], "seconds": [r["seconds"] for r in rows]}
        acc = "-" if accuracies[-1] is None else f"{100 * accuracies[-1]:.1f}%"
        print(f"{name:<40}{sec:>10.2f}{n / sec:>10.2f}{base / sec:>8.2f}{rows[-1]['result']['loss']:>8.4f}{acc:>14}")
    print(f"* loss: ours the last step's, TRL the epoch mean (a check that both trained, not a comparison); "
          f"held-out: {len(heldout)} pairs after the training ones, the last repeat's RM")
    payload = {"machine": info, "data": source, "args": vars(args), "pairs": n, "real_tokens": real, "best_trl": best_trl,
               "random_batch_padded_tokens": padded_random, "results": table}
    save(f"train_vs_trl_{args.precision}", payload)
    return payload


if __name__ == "__main__":
    main()
