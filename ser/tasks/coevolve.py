"""The coevolve task (schedule=coevolve): the SER loop on a pool the policy itself generates.

The RM side is the RM task's stages (data, RMTrainer, scorer, run store, reporter) with the loop of
ser/evolve/coevolve.py; this module holds the policy side: the policy and its prompts, sampling (seeded,
batched, with the KV cache; written to generated/ with provenance so a resumed loop pairs the same
responses), DPO per loop, and the judges (the exact synthetic gold judge, or an exported gold RM).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file

from ser.config import validate_config
from ser.data.schema import PreferencePair
from ser.evaluate.policy_eval import evaluate_policy, win_tie_loss
from ser.evaluate.synthetic_gold import SyntheticGoldJudge, gold_score
from ser.events import emit
from ser.evolve.coevolve import TIME_SPLIT, CoevolveLoop
from ser.evolve.state import LoopState
from ser.io import atomic_write_json, atomic_write_jsonl, read_json, read_jsonl
from ser.locks import hold_run_dir
from ser.policy.model import PolicyWithValue, load_policy_model
from ser.policy.rollout import RewardFunction, encode_prompts, generate
from ser.policy.train import run_dpo, save_policy
from ser.reward.scoring import scoring_device
from ser.seeding import derive_seed
from ser.tasks.policy import distinct_prompts
from ser.tasks.rm import build_loop, finished_already

log = logging.getLogger(__name__)


def train_coevolve(cfg: DictConfig) -> dict[str, Any]:
    validate_config(cfg)
    out = Path(cfg.paths.output_dir)
    with hold_run_dir(out):
        return finished_already(cfg, out) or build_loop(cfg, out, make_loop=lambda *stages, loaded: CoevolveLoop(
            *stages, policy=PolicySide(cfg, out, loaded))).run()


class PolicySteps(pl.Callback):
    """Emits `policy_step` before each of a loop's DPO steps (ser/events.py)."""

    def __init__(self, loop: int) -> None:
        self.loop = loop

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        emit("policy_step", loop=self.loop, step=trainer.global_step)


class PolicySide:
    def __init__(self, cfg: DictConfig, out: Path, loaded: Any) -> None:
        self.cfg, self.out, self.co, self.policy_cfg = cfg, out, cfg.coevolve, cfg.policy
        splits = loaded.splits
        self.pool_prompts = distinct_prompts(splits.pool, len(splits.pool), int(cfg.seed))  # prompts only: no pool answer is read
        self.pool_index = {p: i for i, p in enumerate(self.pool_prompts)}
        self.val_prompts = distinct_prompts(splits.val, int(cfg.evaluate.n_prompts), int(cfg.evaluate.seed))
        self.test_prompts = distinct_prompts(splits.test, int(cfg.evaluate.n_prompts), int(cfg.evaluate.seed))
        model, self.tokenizer = load_policy_model(cfg.policy.model, vocab_texts=loaded.training_texts(pool_answers=False)
                                                  + ["Question", "Answer", ":"])
        self.model = PolicyWithValue(model, with_value=False)
        self.device = scoring_device(cfg.trainer.get("accelerator"))
        chat = cfg.policy.model.get("chat_template", True)
        self.encode = lambda prompts: encode_prompts(self.tokenizer, prompts, int(cfg.policy.max_prompt_tokens), chat)
        gold = cfg.evaluate.gold
        self.gold_rm = RewardFunction(Path(str(gold.rm_dir)).expanduser(), self.tokenizer, normalize=False,
                                      name="gold judge", device=self.device) if gold.get("rm_dir") else None
        self.judge = self.gold_rm if self.gold_rm is not None else SyntheticGoldJudge()  # exact, on synthetic data
        self.generation = OmegaConf.to_container(cfg.policy.generation, resolve=True)
        self.eval_generation = OmegaConf.to_container(cfg.evaluate.generation, resolve=True)

    # ---- the policy's weights, loop by loop ---------------------------------------------------------
    def adapter_dir(self, loop: int) -> Path:
        return self.out / "policy" / f"loop_{loop}"

    def restore(self, state: LoopState) -> None:
        """The policy after the last finished loop: its LoRA adapters replayed in order (merged at each loop's
        start when the reference is the loop's starting policy)."""
        from peft import set_peft_model_state_dict

        for entry in state.loops[1:]:
            self.start_loop()
            set_peft_model_state_dict(self.model.policy, load_file(self.adapter_dir(entry["loop"]) / "adapter_model.safetensors"))
        if len(state.loops) > 1:
            log.info("coevolve: the policy of loop %d restored", state.loops[-1]["loop"])

    def start_loop(self) -> None:
        """reference=loop_start: merge what the policy learnt so far and put a fresh adapter on, so the
        reference (the adapter switched off) is the policy as the loop starts."""
        if str(self.co.reference) != "loop_start":
            return
        from peft import get_peft_model

        inner = self.model.policy
        config = inner.peft_config["default"]
        self.model = PolicyWithValue(get_peft_model(inner.merge_and_unload(), config), with_value=False)

    def train(self, pairs: list[PreferencePair], loop: int) -> None:
        self.start_loop()
        pl.seed_everything(derive_seed(self.cfg.seed, loop, "policy"), workers=True, verbose=False)
        emit("policy_train_start", loop=loop)
        run_dpo(self.cfg, self.out, self.model, self.tokenizer, pairs, loggers=[],
                seed=derive_seed(self.cfg.seed, loop, "policy"), callbacks=[PolicySteps(loop)])
        save_policy(self.model, self.tokenizer, self.adapter_dir(loop))

    # ---- sampling ------------------------------------------------------------------------------------
    def sample(self, loop: int) -> list[dict[str, Any]]:
        """`samples_per_prompt` responses to each of this loop's prompts; written once, reused on resume."""
        path = self.out / "generated" / f"loop_{loop}_samples.jsonl"
        if path.exists():
            return read_jsonl(path)
        prompts = distinct_prompts([PreferencePair("", p, "", "") for p in self.pool_prompts],
                                   int(self.co.prompts_per_loop), derive_seed(self.cfg.seed, loop, "prompts"))
        n, batch = int(self.co.samples_per_prompt), int(self.co.sample_batch_size)
        ids = [x for x in self.encode(prompts) for _ in range(n)]
        torch.manual_seed(derive_seed(self.cfg.seed, loop, "sampling"))
        self.model.to(self.device)
        texts: list[str] = []
        for k, start in enumerate(range(0, len(ids), batch)):
            texts += generate(self.model, self.tokenizer, ids[start:start + batch], self.generation).texts
            emit("sampled_batch", loop=loop, batch=k)
        samples = [{"index": self.pool_index[p], "prompt": p, "responses": texts[i * n:(i + 1) * n],
                    "sampling": {**self.generation, "samples_per_prompt": n, "seed": derive_seed(self.cfg.seed, loop, "sampling")},
                    "policy": f"policy/loop_{loop - 1}" if loop > 1 else "start"} for i, p in enumerate(prompts)]
        atomic_write_jsonl(path, samples)
        return samples

    def gold_scores(self, prompt: str, responses: list[str]) -> list[float] | None:
        if not responses:
            return []
        if self.gold_rm is not None:
            return self.gold_rm([prompt] * len(responses), responses).tolist()
        scores = [gold_score(prompt, r) for r in responses]
        return None if any(s is None for s in scores) else scores

    def write_generated(self, loop: int, samples: list[dict[str, Any]], pairs: list[PreferencePair],
                        rewards: tuple[torch.Tensor, torch.Tensor], gold: dict[str, bool]) -> None:
        """Every generated pair with provenance: the sampling settings, the policy that wrote it, both RM
        scores and both gold scores."""
        by_prompt = {s["prompt"]: s for s in samples}
        rows = []
        for pair, ra, rb in zip(pairs, rewards[0].tolist(), rewards[1].tolist()):
            g = self.gold_scores(pair.prompt, [pair.chosen, pair.rejected]) or [None, None]
            s = by_prompt[pair.prompt]
            rows.append({"id": pair.id, "loop": loop, "prompt": pair.prompt, "a": pair.chosen, "b": pair.rejected,
                         "rm_a": ra, "rm_b": rb, "gold_a": g[0], "gold_b": g[1], "gold_prefers_a": gold[pair.id],
                         "sampling": s["sampling"], "policy": s["policy"]})
        atomic_write_jsonl(self.out / "generated" / f"loop_{loop}.jsonl", rows)

    # ---- evaluation ------------------------------------------------------------------------------------
    def evaluate(self, loop: int, rm_reward: Any) -> dict[str, Any]:
        """Validation prompts: the policy's mean RM reward (it decides the final policy). Test prompts: gold
        reward, KL to the reference, length, and win / tie / loss against the starting policy."""
        self.model.to(self.device)
        batch, seed = int(self.cfg.evaluate.batch_size), int(self.cfg.evaluate.seed)
        val = evaluate_policy(self.model, self.tokenizer, self.val_prompts, self.encode(self.val_prompts), rm_reward,
                              self.eval_generation, batch_size=batch, seed=seed)
        test = evaluate_policy(self.model, self.tokenizer, self.test_prompts, self.encode(self.test_prompts), self.judge,
                               self.eval_generation, batch_size=batch, seed=seed)
        atomic_write_json(self.out / "policy" / f"val_loop_{loop}.json", {"prompts": self.val_prompts,
                                                                          "responses": val["responses"]})
        atomic_write_json(self.out / "policy" / f"test_loop_{loop}.json", {"prompts": self.test_prompts,
                          "responses": test["responses"], "gold": test["gold"]})
        start_path = self.out / "policy" / "start_gold.json"
        if loop == 0:
            atomic_write_json(start_path, {"gold": test["gold"]})
        wtl = win_tie_loss(test["gold"], read_json(start_path)["gold"], float(self.cfg.evaluate.tie_margin))
        log.info("loop %d policy: RM reward on validation prompts %.4f, gold %.4f (win %.2f / tie %.2f / loss %.2f "
                 "against the start), KL %.3f, length %.1f", loop, val["gold_mean"], test["gold_mean"], wtl["win"],
                 wtl["tie"], wtl["loss"], test["kl_mean"], test["length_mean"])
        return {"policy_val_reward": val["gold_mean"], "policy_gold": test["gold_mean"], "policy_kl": test["kl_mean"],
                "policy_length": test["length_mean"], "policy_win_vs_start": wtl["win"],
                "policy_tie_vs_start": wtl["tie"], "policy_loss_vs_start": wtl["loss"]}

    def summary(self, state: LoopState, rm_reward: Any) -> dict[str, Any]:
        """The final policy: the loop whose validation responses the final RM scores highest (each loop's
        own RM differs, so their rewards are compared under one RM: the final one)."""
        loops = [e for e in state.loops if e.get("policy_val_reward") is not None]
        under_final = {}
        for e in loops:
            val = read_json(self.out / "policy" / f"val_loop_{e['loop']}.json")
            under_final[e["loop"]] = float(rm_reward(val["prompts"], val["responses"]).mean())
        final = max(reversed(loops), key=lambda e: under_final[e["loop"]]) if loops else {}
        keys = ("policy_val_reward", "policy_gold", "policy_kl", "policy_length", "policy_win_vs_start",
                "policy_tie_vs_start", "policy_loss_vs_start", "self_label_gold_agreement")
        return {"coevolve": OmegaConf.to_container(self.co, resolve=True),
                "policy": {"model": self.cfg.policy.model.name, "judge": getattr(self.judge, "name", "gold RM"),
                           "final_loop": final.get("loop"), "selected_by": "validation prompts' reward under the final RM",
                           "val_reward_under_final_rm": under_final,
                           "gold_start": loops[0]["policy_gold"] if loops else None,
                           **{k.replace("policy_", ""): final.get(k) for k in keys[:-1]},
                           "per_loop": [{"loop": e["loop"], **{k: e.get(k) for k in keys + TIME_SPLIT}}
                                        for e in state.loops]}}
