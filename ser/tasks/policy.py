"""The policy task: RM task -> gold judge -> (SFT) -> PPO or DPO -> evaluation.

1. The matching RM schedule runs, or resumes, in the run dir the plain RM command would use (found by
   composing that command with Hydra), so `schedule=ser_ppo` and `schedule=ser_dpo` share the SER RM of
   `python run.py`. Jobs that share it wait for one another (a lock), then reuse it.
2. The gold judge: an exported RM given by `evaluate.gold.rm_dir`, or a full-data RM trained on
   synthetic data generated with another seed (disjoint pairs): no policy ever trains against it.
3. The starting policy is evaluated on held-out prompts (the test split's), then trained, then
   evaluated again: gold reward, KL to the reference, length, win/tie/loss, samples table.
"""

from __future__ import annotations

import logging
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from ser.config import validate_config
from ser.core import POLICY_SCHEDULES
from ser.data.prepare import load_and_split
from ser.data.schema import PreferencePair
from ser.evaluate.policy_eval import evaluate_policy, win_tie_loss, write_samples
from ser.evaluate.synthetic_gold import SyntheticGoldJudge
from ser.evolve.state import LoopState, config_hash
from ser.io import atomic_write_json, read_json
from ser.locks import hold_run_dir
from ser.policy.model import PolicyWithValue, load_policy_model
from ser.policy.rollout import RewardFunction, encode_prompts
from ser.policy.train import dpo_pairs, run_dpo, run_ppo, run_sft, save_policy
from ser.reward.scoring import scoring_device
from ser.store import RunStore
from ser.tasks.rm import train_rm

log = logging.getLogger(__name__)

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


def rm_run_dir(out: Path, rm_schedule: str) -> Path:
    """The run dir of the RM command with this command's overrides, minus the policy ones.

    Hydra composes that command and resolves its `hydra.run.dir` (override_dirname, exclude_keys and
    all). Outside a Hydra run (library use, tests) the RM lives in `<run dir>/rm`.
    """
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return out / "rm"
    running = HydraConfig.get()
    overrides = [o for o in running.overrides.task
                 if o.split("=", 1)[0].lstrip("+~").split(".")[0].split("/")[0] not in ("schedule", *POLICY_KEYS)]
    composed = compose(config_name=running.job.config_name, overrides=overrides, return_hydra_config=True)
    if composed.schedule.name != rm_schedule:  # the root default, or an experiment overlay's, is another schedule
        overrides.append(f"schedule={rm_schedule}")
        composed = compose(config_name=running.job.config_name, overrides=overrides, return_hydra_config=True)
    instance = HydraConfig.instance()
    saved = instance.cfg
    try:  # `${hydra:job.override_dirname}` in hydra.run.dir reads the composed command's, not this job's
        instance.set_config(composed)
        return Path(str(composed.hydra.run.dir))
    finally:
        instance.cfg = saved


def ensure_rm(rm_cfg: DictConfig, out_dir: Path, what: str, reuse_any_finished: bool = False) -> Path:
    """Run (or resume) an RM schedule in `out_dir`; a finished run with the same config is reused as is.

    `reuse_any_finished` (an RM dir named explicitly by `schedule.rm_dir`): a finished run is used
    even when its config hash differs (say, a knob added to the tree since), with a warning.
    """
    with hold_run_dir(out_dir, wait=True):  # another job of the sweep may be training it: wait, then reuse
        state = LoopState.load(out_dir)
        digest = config_hash(OmegaConf.to_container(rm_cfg, resolve=True))
        finished = (rm_cfg.resume and state is not None and state.stopped
                    and (out_dir / "final_rm" / "config.json").exists() and (out_dir / "summary.json").exists())
        if finished and state.config_hash == digest:
            log.info("%s: reusing the finished %s run in %s", what, rm_cfg.schedule.name, out_dir)
            return out_dir / "final_rm"
        if finished and reuse_any_finished:
            log.warning("%s: reusing the finished run in %s named by schedule.rm_dir although its config hash "
                        "differs (%s != %s)", what, out_dir, state.config_hash, digest)
            return out_dir / "final_rm"
    log.info("%s: running (or resuming) schedule=%s in %s", what, rm_cfg.schedule.name, out_dir)
    try:
        train_rm(rm_cfg, out_dir, shared=True)
    finally:
        _finish_wandb()
    if not (out_dir / "final_rm" / "config.json").exists():  # a finished run's record without its weights
        raise RuntimeError(f"{out_dir}: the run finished but its exported RM (final_rm/) is missing, as in a "
                           "record restored from experiments/records/; move the run dir away to train it again")
    return out_dir / "final_rm"


def _finish_wandb() -> None:
    """One process runs several stages, each with its own wandb run: finish one before the next starts."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def distinct_prompts(pairs: Sequence[PreferencePair], n: int, seed: int) -> list[str]:
    prompts = sorted({p.prompt for p in pairs})
    random.Random(seed).shuffle(prompts)
    return prompts[:n]


# ---- the task ------------------------------------------------------------------------------------
def train_policy(cfg: DictConfig) -> dict[str, Any]:
    validate_config(cfg)
    out = Path(cfg.paths.output_dir)
    with hold_run_dir(out):
        store = RunStore(out, config_hash(OmegaConf.to_container(cfg, resolve=True)))
        store.write_run_config(cfg)
        store.record_machine()
        return _train_policy(cfg, out)


def _train_policy(cfg: DictConfig, out: Path) -> dict[str, Any]:
    name, rm_schedule = cfg.schedule.name, POLICY_SCHEDULES[cfg.schedule.name]
    digest = config_hash(OmegaConf.to_container(cfg, resolve=True))
    if cfg.resume and (out / "summary.json").exists():
        previous = read_json(out / "summary.json")
        if previous.get("config_hash") == digest:
            log.info("%s: finished already (summary.json); resume=false to run again", out)
            return previous
    rm_dir_opt = cfg.schedule.get("rm_dir") or "auto"
    rm_run = rm_run_dir(out, rm_schedule) if rm_dir_opt == "auto" else Path(str(rm_dir_opt)).expanduser()
    rm_final = ensure_rm(rm_stage_config(cfg, rm_schedule, rm_run), rm_run, f"RM ({rm_schedule})",
                         reuse_any_finished=rm_dir_opt != "auto")
    gold = cfg.evaluate.gold
    if str(gold.get("judge", "rm")) == "synthetic":
        gold_final = None  # the exact judge of the synthetic data (ser/evaluate/synthetic_gold.py)
    elif gold.get("rm_dir"):
        gold_final = Path(str(gold.rm_dir)).expanduser()
    else:
        gold_run = Path(str(gold.dir)).expanduser()
        gold_final = ensure_rm(rm_stage_config(cfg, "full_data", gold_run, data_seed=int(gold.data_seed)), gold_run,
                               "gold judge (full-data RM on disjoint data)")

    policy_cfg = cfg.policy
    pl.seed_everything(int(policy_cfg.seed), workers=True)
    loaded = load_and_split(cfg.data, cfg.splits, int(cfg.seed))
    splits = loaded.splits
    rm_summary = read_json(rm_run / "summary.json")
    rm_splits = rm_summary.get("splits_loaded") or rm_summary.get("splits")
    if rm_splits is not None and rm_splits != splits.sizes():
        raise ValueError(f"{rm_run}: the RM run's splits {rm_splits} differ from this config's {splits.sizes()}: "
                         "held-out prompts could overlap its training data; use an RM run with the same data and splits")
    train_prompts = distinct_prompts(splits.seed + splits.pool, int(policy_cfg.n_train_prompts), int(policy_cfg.seed))
    eval_prompts = distinct_prompts(splits.test, int(cfg.evaluate.n_prompts), int(cfg.evaluate.seed))
    assert not set(train_prompts) & set(eval_prompts), "held-out prompts leaked into training"
    model, tokenizer = load_policy_model(policy_cfg.model, vocab_texts=loaded.training_texts() + ["Question", "Answer", ":"])
    policy = PolicyWithValue(model, with_value=policy_cfg.algo == "ppo")
    loggers = [instantiate(c) for c in (cfg.logger or {}).values() if c is not None]
    chat = policy_cfg.model.get("chat_template", True)
    eval_ids = encode_prompts(tokenizer, eval_prompts, int(policy_cfg.max_prompt_tokens), chat)
    # Lightning hands the policy back on the CPU after each fit: generation, KL and both RMs run on the
    # trainer's accelerator instead (ser.reward.scoring.scoring_device)
    device = scoring_device(cfg.trainer.get("accelerator"))
    judge = (SyntheticGoldJudge() if gold_final is None
             else RewardFunction(gold_final, tokenizer, normalize=False, name="gold judge", device=device))
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
    summary = {
        "schedule": name, "rm_schedule": rm_schedule, "algo": trained, "rm_dir": str(rm_final),
        "gold_dir": str(gold_final) if gold_final is not None else "synthetic (exact)",
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
