"""A policy schedule end to end: RM schedule -> gold judge -> (SFT) -> PPO or DPO -> evaluation.

1. The matching RM schedule runs, or resumes, in its own run dir (by default the one the plain RM
   command would use, so `schedule=ser_ppo` and `schedule=ser_dpo` share the SER RM of `python run.py`).
2. The gold judge: an exported RM given by `evaluate.gold.rm_dir`, or a full-data RM trained on
   synthetic data generated with another seed (disjoint pairs): no policy ever trains against it.
3. The starting policy is evaluated on held-out prompts (the test split's), then trained, then
   evaluated again: gold reward, KL to the reference, length, win/tie/loss, samples table.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from ser.config import POLICY_SCHEDULES, run_id
from ser.data.dataset import build_pairs
from ser.data.schema import PreferencePair
from ser.data.splits import Splits, split_pairs
from ser.evaluate.policy_eval import evaluate_policy, win_tie_loss, write_samples
from ser.evolve.selection import as_pairs
from ser.evolve.state import LoopState, config_hash
from ser.io import atomic_write_json, read_json
from ser.policy.dpo import DPOCollator, DPOModule, dpo_features
from ser.policy.model import PolicyWithValue, load_policy_model
from ser.policy.ppo import PPOModule
from ser.policy.rollout import RewardFunction, encode_prompts
from ser.policy.sft import SFTModule, collate_sequences, sft_features
from ser.reward.scoring import scoring_device

log = logging.getLogger(__name__)

ROOT_DEFAULT_SCHEDULE = "ser"  # conf/config.yaml's schedule: `python run.py` with no schedule= runs it
POLICY_KEYS = ("policy", "evaluate")


# ---- the RM stage and the gold judge -------------------------------------------------------------
def rm_stage_config(cfg: DictConfig, schedule: str, out_dir: Path, data_seed: int | None = None) -> DictConfig:
    """The config the plain RM command would compose: policy keys removed, the RM schedule set.

    Identical settings give an identical config hash, so a run dir of the plain command is resumed
    (or reused when finished) instead of retrained.
    """
    rm_cfg = cfg.copy()
    with open_dict(rm_cfg):
        for key in POLICY_KEYS:
            rm_cfg.pop(key, None)
        rm_cfg.schedule = OmegaConf.create({"name": schedule})
        rm_cfg.paths.output_dir = str(out_dir)
        if data_seed is not None:
            rm_cfg.data.synthetic.seed = data_seed
    return rm_cfg


def auto_rm_dir(cfg: DictConfig, out: Path, rm_schedule: str) -> Path:
    """The run dir of the RM command with the same overrides, minus the policy ones.

    Mirrors Hydra's override_dirname (sorted `key=value`, exclude_keys left out). Outside a Hydra
    run (library use, tests) the RM lives in `<run dir>/rm`.
    """
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
    except ValueError:
        return out / "rm"
    exclude = set(hydra_cfg.job.config.override_dirname.exclude_keys)
    items = []
    for override in hydra_cfg.overrides.task:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in exclude or key.split(".")[0].split("/")[0] in ("schedule",) + POLICY_KEYS:
            continue
        items.append(override)
    if rm_schedule != ROOT_DEFAULT_SCHEDULE:
        items.append(f"schedule={rm_schedule}")
    return Path(str(cfg.paths.log_dir)) / str(cfg.task_name) / "runs" / run_id(",".join(sorted(items)))


def ensure_rm(rm_cfg: DictConfig, out_dir: Path, what: str, reuse_any_finished: bool = False) -> Path:
    """Run (or resume) an RM schedule in `out_dir`; a finished run with the same config is reused as is.

    `reuse_any_finished` (an RM dir named explicitly by `schedule.rm_dir`): a finished run is used
    even when its config hash differs (say, a knob added to the tree since), with a warning.
    """
    from ser.pipeline import Experiment

    out_dir.mkdir(parents=True, exist_ok=True)
    state = LoopState.load(out_dir)
    digest = config_hash(OmegaConf.to_container(rm_cfg, resolve=True))
    finished = (rm_cfg.resume and state is not None and state.stopped
                and (out_dir / "final_rm" / "config.json").exists() and (out_dir / "summary.json").exists())
    if finished and state.config_hash == digest:
        log.info("%s: reusing the finished %s run in %s", what, rm_cfg.schedule.name, out_dir)
    elif finished and reuse_any_finished:
        log.warning("%s: reusing the finished run in %s named by schedule.rm_dir although its config hash differs "
                    "(%s != %s)", what, out_dir, state.config_hash, digest)
    else:
        log.info("%s: running (or resuming) schedule=%s in %s", what, rm_cfg.schedule.name, out_dir)
        try:
            Experiment(rm_cfg, out_dir).run()
        finally:
            _finish_wandb()
    return out_dir / "final_rm"


def _finish_wandb() -> None:
    """One process runs several stages, each with its own wandb run: finish one before the next starts."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def rebuild_splits(cfg: DictConfig) -> tuple[Splits, list[PreferencePair]]:
    """The RM run's splits (seeded, by prompt): held-out prompts come from its test split."""
    pairs, own_test, _ = build_pairs(cfg.data)
    sp = cfg.splits
    splits = split_pairs(pairs, seed=cfg.seed, seed_fraction=sp.seed_fraction, val_fraction=sp.val_fraction,
                         test_fraction=sp.test_fraction, test_pairs=own_test)
    return splits, pairs + list(own_test or [])


def distinct_prompts(pairs: Sequence[PreferencePair], n: int, seed: int) -> list[str]:
    prompts = sorted({p.prompt for p in pairs})
    random.Random(seed).shuffle(prompts)
    return prompts[:n]


# ---- training phases -----------------------------------------------------------------------------
def _trainer(cfg: DictConfig, out: Path, loggers: list, **kwargs: Any) -> pl.Trainer:
    # manual optimisation (PPO) clips its own gradients: Lightning refuses gradient_clip_val there
    # a policy step is seconds long: log every one of them
    return instantiate(cfg.trainer, logger=loggers or False, callbacks=[], enable_checkpointing=False,
                       num_sanity_val_steps=0, default_root_dir=str(out), log_every_n_steps=1, **kwargs)


def _optimizer(policy_cfg: DictConfig, lr: float | None = None):
    factory = instantiate(policy_cfg.optimizer)
    return (lambda params: factory(params=params, lr=lr)) if lr is not None else factory


def run_sft(cfg: DictConfig, out: Path, model: PolicyWithValue, tokenizer, pairs: Sequence[PreferencePair],
            loggers: list) -> PolicyWithValue:
    policy_cfg = cfg.policy
    pairs = list(pairs)[: int(policy_cfg.sft.max_pairs)]
    features = sft_features(pairs, tokenizer, policy_cfg)
    loader = DataLoader(features, batch_size=int(policy_cfg.batch_size), shuffle=True,
                        generator=torch.Generator().manual_seed(int(policy_cfg.seed)),
                        collate_fn=lambda items: collate_sequences(items, tokenizer.pad_token_id))
    log.info("SFT on %d labeled seed pairs (prompt + chosen), %d epoch(s)", len(features), policy_cfg.sft.epochs)
    _trainer(cfg, out, loggers, max_epochs=int(policy_cfg.sft.epochs)).fit(
        SFTModule(model, _optimizer(policy_cfg, float(policy_cfg.sft.lr))), loader)
    # The SFT model becomes the new starting point and reference: merge the adapter, put a fresh one on.
    inner = model.policy
    if model.uses_lora:
        from peft import get_peft_model

        peft_config = inner.peft_config["default"]
        merged = inner.merge_and_unload()
        inner = get_peft_model(merged, peft_config)
    return PolicyWithValue(inner, with_value=model.value_head is not None)


def run_ppo(cfg: DictConfig, out: Path, model: PolicyWithValue, tokenizer, prompts: Sequence[str],
            reward_fn: RewardFunction, loggers: list) -> PPOModule:
    policy_cfg = cfg.policy
    steps, batch = int(policy_cfg.steps), int(policy_cfg.batch_size)
    ids = encode_prompts(tokenizer, prompts, int(policy_cfg.max_prompt_tokens),
                         policy_cfg.model.get("chat_template", True))
    rng = random.Random(int(policy_cfg.seed))
    order = [rng.randrange(len(prompts)) for _ in range(steps * batch)]  # each step draws its own prompts
    items = [{"prompt": prompts[i], "prompt_ids": ids[i]} for i in order]
    loader = DataLoader(items, batch_size=batch, shuffle=False,
                        collate_fn=lambda b: {"prompt": [x["prompt"] for x in b], "prompt_ids": [x["prompt_ids"] for x in b]})
    ppo_cfg = {**OmegaConf.to_container(policy_cfg.ppo, resolve=True), "seed": int(policy_cfg.seed)}
    module = PPOModule(model, tokenizer, reward_fn, ppo_cfg, OmegaConf.to_container(policy_cfg.generation, resolve=True),
                       _optimizer(policy_cfg))
    log.info("PPO: %d iterations x %d prompts (of %d training prompts), %d new tokens at most", steps, batch,
             len(prompts), policy_cfg.generation.max_new_tokens)
    _trainer(cfg, out, loggers, max_epochs=1, gradient_clip_val=None).fit(module, loader)
    return module


def run_dpo(cfg: DictConfig, out: Path, model: PolicyWithValue, tokenizer, pairs: Sequence[PreferencePair],
            loggers: list) -> DPOModule:
    policy_cfg = cfg.policy
    pairs = list(pairs)
    random.Random(int(policy_cfg.seed)).shuffle(pairs)
    pairs = pairs[: int(policy_cfg.dpo.max_pairs)]
    features = dpo_features(pairs, tokenizer, policy_cfg)
    batch, steps = int(policy_cfg.batch_size), int(policy_cfg.steps)
    loader = DataLoader(features, batch_size=batch, shuffle=True, drop_last=len(features) >= batch,
                        generator=torch.Generator().manual_seed(int(policy_cfg.seed)),
                        collate_fn=DPOCollator(tokenizer.pad_token_id))
    module = DPOModule(model, _optimizer(policy_cfg), float(policy_cfg.dpo.beta), float(policy_cfg.dpo.label_smoothing))
    log.info("DPO on %d pairs: %d steps of %d pairs", len(features), steps, batch)
    _trainer(cfg, out, loggers, max_steps=steps, max_epochs=math.ceil(steps / max(len(loader), 1))).fit(module, loader)
    return module


def dpo_pairs(cfg: DictConfig, rm_dir: Path, splits: Splits) -> list[PreferencePair]:
    """The self-labeled pairs of the RM run (higher-scored answer as chosen) and, by config, the labeled seed."""
    path = rm_dir / "selflabels" / "all.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    pairs = as_pairs(rows) + (list(splits.seed) if cfg.policy.dpo.include_seed else [])
    if not pairs:
        raise ValueError(f"DPO has no pairs: {path} holds no self-labels and policy.dpo.include_seed=false")
    log.info("DPO data: %d self-labeled pairs from %s + %d seed pairs", len(rows), path,
             len(splits.seed) if cfg.policy.dpo.include_seed else 0)
    return pairs


def save_policy(model: PolicyWithValue, tokenizer, path: Path) -> None:
    """The trained policy (LoRA: the adapter only) + tokenizer, safetensors; the value head beside it.

    Written to a temp dir renamed when complete: a killed run never leaves a half-written policy.
    """
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.policy.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if model.value_head is not None:
        head = {k: v.detach().contiguous() for k, v in model.value_head.state_dict().items()}
        save_file(head, str(tmp / "value_head.safetensors"))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


# ---- the schedule ------------------------------------------------------------------------------------
def run_policy_schedule(cfg: DictConfig, out: Path) -> dict[str, Any]:
    name, rm_schedule = cfg.schedule.name, POLICY_SCHEDULES[cfg.schedule.name]
    digest = config_hash(OmegaConf.to_container(cfg, resolve=True))
    if cfg.resume and (out / "summary.json").exists():
        previous = read_json(out / "summary.json")
        if previous.get("config_hash") == digest:
            log.info("%s: finished already (summary.json); resume=false to run again", out)
            return previous
    rm_dir_opt = cfg.schedule.get("rm_dir") or "auto"
    rm_run = auto_rm_dir(cfg, out, rm_schedule) if rm_dir_opt == "auto" else Path(str(rm_dir_opt)).expanduser()
    rm_final = ensure_rm(rm_stage_config(cfg, rm_schedule, rm_run), rm_run, f"RM ({rm_schedule})",
                         reuse_any_finished=rm_dir_opt != "auto")
    gold = cfg.evaluate.gold
    if gold.get("rm_dir"):
        gold_final = Path(str(gold.rm_dir)).expanduser()
    else:
        gold_run = Path(str(gold.dir)).expanduser()
        gold_final = ensure_rm(rm_stage_config(cfg, "full_data", gold_run, data_seed=int(gold.data_seed)), gold_run,
                               "gold judge (full-data RM on disjoint data)")

    policy_cfg = cfg.policy
    pl.seed_everything(int(policy_cfg.seed), workers=True)
    splits, all_pairs = rebuild_splits(cfg)
    rm_splits = read_json(rm_run / "summary.json").get("splits")
    if rm_splits is not None and rm_splits != splits.sizes():
        raise ValueError(f"{rm_run}: the RM run's splits {rm_splits} differ from this config's {splits.sizes()}: "
                         "held-out prompts could overlap its training data; use an RM run with the same data and splits")
    train_prompts = distinct_prompts(splits.seed + splits.pool, int(policy_cfg.n_train_prompts), int(policy_cfg.seed))
    eval_prompts = distinct_prompts(splits.test, int(cfg.evaluate.n_prompts), int(cfg.evaluate.seed))
    assert not set(train_prompts) & set(eval_prompts), "held-out prompts leaked into training"
    vocab = [t for p in all_pairs[:5000] for t in (p.prompt, p.chosen, p.rejected)] + ["Question", "Answer", ":"]
    model, tokenizer = load_policy_model(policy_cfg.model, vocab_texts=vocab)
    policy = PolicyWithValue(model, with_value=policy_cfg.algo == "ppo")
    loggers = [instantiate(c) for c in (cfg.logger or {}).values() if c is not None]
    chat = policy_cfg.model.get("chat_template", True)
    eval_ids = encode_prompts(tokenizer, eval_prompts, int(policy_cfg.max_prompt_tokens), chat)
    # Lightning hands the policy back on the CPU after each fit: generation, KL and both RMs run on the
    # trainer's accelerator instead (ser.reward.scoring.scoring_device)
    device = scoring_device(cfg.trainer.get("accelerator"))
    judge = RewardFunction(gold_final, tokenizer, normalize=False, name="gold judge", device=device)
    ev = cfg.evaluate
    ev_gen = OmegaConf.to_container(ev.generation, resolve=True)

    def evaluate(label: str) -> dict[str, Any]:
        policy.to(device)
        result = evaluate_policy(policy, tokenizer, eval_prompts, eval_ids, judge, ev_gen,
                                 batch_size=int(ev.batch_size), seed=int(ev.seed))
        log.info("eval %-6s on %d held-out prompts: gold reward %.4f, KL to reference %.3f, length %.1f, EOS %.0f%%",
                 label, len(eval_prompts), result["gold_mean"], result["kl_mean"], result["length_mean"],
                 100 * result["eos_rate"])
        return result

    results = {"start": evaluate("start")}
    history: list[dict[str, float]] = []
    if cfg.schedule.sft or policy_cfg.algo == "sft":
        policy = run_sft(cfg, out, policy, tokenizer, splits.seed, loggers)
        results["sft"] = evaluate("sft")
    if policy_cfg.algo == "ppo":
        reward_fn = RewardFunction(rm_final, tokenizer, normalize=bool(policy_cfg.ppo.normalize_reward),
                                   name=f"RM ({rm_schedule})", device=device)
        history = run_ppo(cfg, out, policy, tokenizer, train_prompts, reward_fn, loggers).history
    elif policy_cfg.algo == "dpo":
        history = run_dpo(cfg, out, policy, tokenizer, dpo_pairs(cfg, rm_run, splits), loggers).history
    trained = policy_cfg.algo
    if trained != "sft":
        results[trained] = evaluate(trained)
    save_policy(policy, tokenizer, out / "policy")
    write_samples(out / str(ev.samples_file), eval_prompts, results)
    comparisons = {f"{trained}_vs_{other}": win_tie_loss(results[trained]["gold"], results[other]["gold"],
                                                         float(ev.tie_margin))
                   for other in results if other != trained}
    for key, wtl in comparisons.items():
        log.info("%s (gold judge): win %.2f, tie %.2f, loss %.2f", key, wtl["win"], wtl["tie"], wtl["loss"])
    for lg in loggers:
        lg.finalize("success")
    rm_summary = read_json(rm_run / "summary.json")
    summary = {
        "schedule": name, "rm_schedule": rm_schedule, "algo": trained, "rm_dir": str(rm_final), "gold_dir": str(gold_final),
        "config_hash": digest, "policy_model": policy_cfg.model.name, "eval_prompts": len(eval_prompts),
        "train_prompts": len(train_prompts), "rm_final": rm_summary["final"],
        "eval": {k: {m: v[m] for m in ("gold_mean", "kl_mean", "length_mean", "eos_rate")} for k, v in results.items()},
        "comparisons": comparisons, "history": history,
        # val_accuracy is the RM's (run.py returns it as the sweep objective); the rest is the policy's
        "final": {"val_accuracy": rm_summary["final"]["val_accuracy"], "gold_reward": results[trained]["gold_mean"],
                  "gold_reward_start": results["start"]["gold_mean"], "kl": results[trained]["kl_mean"],
                  "win_vs_start": comparisons[f"{trained}_vs_start"]["win"],
                  "loss_vs_start": comparisons[f"{trained}_vs_start"]["loss"]},
    }
    atomic_write_json(out / "summary.json", summary)
    log.info("%s: gold reward %.4f -> %.4f (start -> %s), KL %.3f; summary in %s", name,
             results["start"]["gold_mean"], results[trained]["gold_mean"], trained, results[trained]["kl_mean"],
             out / "summary.json")
    return summary
