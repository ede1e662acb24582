"""Checks of the policy-stage config (policy.*, evaluate.*, schedule.*), run before anything loads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ser.core import POLICY_ALGOS as ALGOS
from ser.core import POLICY_SCHEDULES, check


def validate_policy_config(cfg: Any) -> None:
    name = cfg.schedule.name
    for key in ("policy", "evaluate"):
        check(cfg.get(key) is not None, key, f"schedule={name} needs the {key} group (conf/schedule/{name}.yaml adds it)")
    policy, evaluate, schedule = cfg.policy, cfg.evaluate, cfg.schedule
    check(schedule.get("rm_schedule") == POLICY_SCHEDULES[name], "schedule.rm_schedule",
          f"schedule={name} trains against the {POLICY_SCHEDULES[name]} RM, got {schedule.get('rm_schedule')!r}")
    check(policy.algo == ALGOS[name], "policy.algo", f"schedule={name} runs {ALGOS[name]}, got policy.algo={policy.algo!r}"
          f" (use policy={ALGOS[name]})")
    if schedule.rm_schedule == "ser":
        check(cfg.splits.seed_fraction < 1.0, "splits.seed_fraction", "must be < 1 for the ser RM: the pool is empty")
    check(policy.model.source.kind in ("hub", "package", "gguf", "config"), "policy.model.source.kind",
          f"must be hub, package, gguf or config, got {policy.model.source.kind!r}")
    for key in ("steps", "batch_size", "max_prompt_tokens", "n_train_prompts"):
        check(int(policy[key]) >= 1, f"policy.{key}", f"must be >= 1, got {policy[key]}")
    gen = policy.generation
    check(int(gen.max_new_tokens) >= 1, "policy.generation.max_new_tokens", f"must be >= 1, got {gen.max_new_tokens}")
    check(float(gen.temperature) > 0, "policy.generation.temperature", f"must be > 0, got {gen.temperature}")
    if policy.algo == "ppo":
        ppo = policy.ppo
        check(ppo.kl.estimator in ("k1", "k3"), "policy.ppo.kl.estimator", f"must be k1 or k3, got {ppo.kl.estimator!r}")
        check(ppo.kl.controller in ("fixed", "adaptive"), "policy.ppo.kl.controller",
              f"must be fixed or adaptive, got {ppo.kl.controller!r}")
        check(float(ppo.kl.coef) >= 0, "policy.ppo.kl.coef", f"must be >= 0, got {ppo.kl.coef}")
        if ppo.kl.controller == "adaptive":
            check(float(ppo.kl.target) > 0 and int(ppo.kl.horizon) > 0, "policy.ppo.kl.target",
                  "an adaptive controller needs kl.target > 0 and kl.horizon > 0")
        for key in ("cliprange", "cliprange_value"):
            check(float(ppo[key]) > 0, f"policy.ppo.{key}", f"must be > 0, got {ppo[key]}")
        check(0 <= float(ppo.gamma) <= 1 and 0 <= float(ppo.lam) <= 1, "policy.ppo.gamma", "gamma and lam must be in [0, 1]")
        check(1 <= int(ppo.minibatch_size) <= int(policy.batch_size), "policy.ppo.minibatch_size",
              f"must be in [1, policy.batch_size={policy.batch_size}], got {ppo.minibatch_size}")
        check(int(ppo.ppo_epochs) >= 1, "policy.ppo.ppo_epochs", f"must be >= 1, got {ppo.ppo_epochs}")
    if policy.algo == "dpo":
        check(float(policy.dpo.beta) > 0, "policy.dpo.beta", f"must be > 0, got {policy.dpo.beta}")
        check(0 <= float(policy.dpo.label_smoothing) < 0.5, "policy.dpo.label_smoothing", "must be in [0, 0.5)")
    check(int(evaluate.n_prompts) >= 1, "evaluate.n_prompts", f"must be >= 1, got {evaluate.n_prompts}")
    gold = evaluate.gold
    check(str(gold.get("judge", "rm")) in ("rm", "synthetic"), "evaluate.gold.judge",
          f"must be rm or synthetic, got {gold.get('judge')!r}")
    if str(gold.get("judge", "rm")) == "synthetic":
        check(cfg.data.kind == "synthetic", "evaluate.gold.judge", "synthetic judges data=synthetic prompts only")
    elif gold.get("rm_dir"):
        path = Path(os.path.expanduser(str(gold.rm_dir)))
        check((path / "config.json").exists(), "evaluate.gold.rm_dir", f"{path} is not an exported RM (no config.json)")
    else:
        check(cfg.data.kind == "synthetic", "evaluate.gold.rm_dir",
              "must name an exported RM for data other than synthetic (the gold judge is trained on "
              "disjoint generated data only for data=synthetic)")
    rm_dir = schedule.get("rm_dir")
    if rm_dir not in (None, "auto"):
        path = Path(os.path.expanduser(str(rm_dir)))
        check(not path.exists() or path.is_dir(), "schedule.rm_dir", f"{path} is not a directory")


def validate_coevolve_config(cfg: Any) -> None:
    """schedule=coevolve: its own keys, a LoRA DPO policy, and a gold judge for the data."""
    co = cfg.get("coevolve")
    check(co is not None, "coevolve", "schedule=coevolve needs the coevolve keys (conf/schedule/coevolve.yaml)")
    check(int(co.samples_per_prompt) >= 2, "coevolve.samples_per_prompt", f"must be >= 2, got {co.samples_per_prompt}")
    check(int(co.prompts_per_loop) >= 1, "coevolve.prompts_per_loop", f"must be >= 1, got {co.prompts_per_loop}")
    check(int(co.sample_batch_size) >= 1, "coevolve.sample_batch_size", f"must be >= 1, got {co.sample_batch_size}")
    check(co.pairing in ("all", "best_worst"), "coevolve.pairing", f"must be all or best_worst, got {co.pairing!r}")
    check(co.rm in ("self", "frozen", "full_data"), "coevolve.rm", f"must be self, frozen or full_data, got {co.rm!r}")
    check(co.reference in ("loop_start", "original"), "coevolve.reference",
          f"must be loop_start or original, got {co.reference!r}")
    check(cfg.policy.algo == "dpo", "policy.algo", f"schedule=coevolve trains the policy by DPO, got {cfg.policy.algo!r}"
          " (use policy=dpo)")
    check(bool(cfg.policy.model.get("lora")), "policy.model.lora",
          "schedule=coevolve keeps each loop's policy as a LoRA adapter: set policy.model.lora")
    for key in ("steps", "batch_size", "max_prompt_tokens"):
        check(int(cfg.policy[key]) >= 1, f"policy.{key}", f"must be >= 1, got {cfg.policy[key]}")
    gold = cfg.evaluate.gold
    if gold.get("rm_dir"):
        path = Path(os.path.expanduser(str(gold.rm_dir)))
        check((path / "config.json").exists(), "evaluate.gold.rm_dir", f"{path} is not an exported RM (no config.json)")
    else:
        check(cfg.data.kind == "synthetic", "evaluate.gold.rm_dir",
              "must name an exported RM for data other than synthetic (the exact gold judge knows synthetic prompts only)")
