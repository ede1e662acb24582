"""The end of an RM schedule: pick the final RM, export it, write the summary.

The final RM is the last loop's (`ser.final_model=last`, the paper's protocol), the loop with the best
validation accuracy (`best_val`; ties go to the later loop, which saw more data), or the average of every
loop's weights (`soup`, kept as
checkpoints/soup.safetensors so a run killed after pruning still finishes). The exported reward
statistics (PPO's reward normalisation) are those of the validation split, or of the labeled seed when
there is none: never of the test split, which only ever yields the test metrics.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ser.events import emit
from ser.evolve.build import describe_selection
from ser.evolve.clock import LOOP_TIME_SPLIT
from ser.evolve.soup import average_checkpoints
from ser.evolve.state import LoopState
from ser.ranks import barrier
from ser.reward.export import export_reward_model

log = logging.getLogger(__name__)
NO_VARIANT = "-"  # seed_only and full_data select nothing
SUMMARY_LOOP_KEYS = ("loop", "status", "selected", "selected_total", "self_label_accuracy", "val_accuracy", "val_loss",
                     "test_accuracy", "test_ece", "seconds", "candidates", "test_accuracy_by_group", "train_pairs",
                     "note", "shortfall", "selected_by_group", "self_label_accuracy_by_group",
                     "test_accuracy_by_kind", *LOOP_TIME_SPLIT)


def final_loop(loops: list[dict[str, Any]], how: str) -> dict[str, Any]:
    """The loop whose RM is exported: best validation accuracy (ties: the later loop), or the last."""
    if how == "best_val" and all(e.get("val_accuracy") is not None for e in loops):
        return max(reversed(loops), key=lambda e: e["val_accuracy"])
    return loops[-1]


def reward_stats(run: Any) -> dict[str, Any]:
    """Mean and std of the final RM's rewards over both answers of the validation pairs (else the seed's)."""
    split = "val" if run.data.features["val"] else "seed"
    chosen, rejected = run.scorer.pair_rewards(run.data.features[split], f"reward statistics ({split})")
    rewards = torch.cat([chosen, rejected]).double()
    return {"reward_mean": float(rewards.mean()), "reward_std": float(rewards.std(unbiased=False)),
            "reward_stats_split": "validation" if split == "val" else "seed"}


def finish_run(run: Any, state: LoopState) -> dict[str, Any]:
    """`run`: the SERLoop that ran (its data, RM, scorer, store and reporter)."""
    cfg, store, loops = run.cfg, run.store, state.loops
    how = str(cfg.ser.final_model)
    final = final_loop(loops, how)
    souped: list[int] = []
    if how == "soup" and len(loops) > 1:
        souped = [e["loop"] for e in loops]
        if store.soup_path.exists():
            run.rm.load(store.soup_path)
        else:
            average_checkpoints(run.rm.model, [store.checkpoint_path(k) for k in souped])
            if store.writer:
                run.rm.save(store.soup_path)
        barrier()
        metrics = run.evaluate()
        final = {"loop": loops[-1]["loop"], "val_accuracy": metrics["val"].get("accuracy"),
                 "test_accuracy": metrics["test"].get("accuracy"), "test_ece": metrics["test"].get("ece")}
        log.info("final RM: the average of the RMs of loops %s (ser.final_model=soup)", souped)
    else:
        run.rm.load(store.checkpoint_path(final["loop"]))
    stats = reward_stats(run)
    phases = run.phases.describe() if run.self_labels else NO_VARIANT
    summary = {
        "schedule": run.schedule, "data": cfg.data.name, "rm": cfg.rm.name, "seed": cfg.seed,
        "variant": describe_selection(cfg) if run.self_labels else NO_VARIANT,
        "selection": str(cfg.ser.get("name", "custom")) if run.self_labels else NO_VARIANT, "phases": phases,
        "statuses": [e["status"] for e in loops[1:]],
        "seed_fraction": cfg.splits.seed_fraction, "splits": run.data.splits.sizes(),
        "splits_loaded": run.data.loaded_sizes, "stop_reason": state.stop_reason,
        "loops": [{k: e.get(k) for k in SUMMARY_LOOP_KEYS} for e in loops],
        "warnings": state.warnings,
        "final": {"loop": final["loop"], "selected_by": how, "val_accuracy": final["val_accuracy"],
                  "test_accuracy": final["test_accuracy"], "test_ece": final["test_ece"],
                  **({"soup_of": souped} if souped else {})},
        **run.summary_extra(state),
    }
    if store.writer:
        store.write_selflabels("all", state.selected.values())
        export_reward_model(run.rm.model, run.rm.tokenizer, store.out / "final_rm", {
            "template": run.data.template, "chat_template": run.data.renderer.chat, "max_length": cfg.data.max_length,
            "truncation_side": str(cfg.data.truncation_side), "pooling": run.rm.module.pooling,
            **stats, "loop": final["loop"], "schedule": run.schedule, "data": cfg.data.name})
        if str(cfg.ser.keep_checkpoints) != "all":
            store.prune_checkpoints({final["loop"], loops[-1]["loop"]})
        store.clear_work_dirs()
        emit("finishing", loop=loops[-1]["loop"])
        store.write_json("summary.json", summary)
        run.reporter.finish(loops, summary["final"])
    barrier()  # every rank returns once the run dir is complete
    log.info("final RM (loop %d, by %s): test accuracy %s -> %s", final["loop"], how,
             "-" if final["test_accuracy"] is None else f"{final['test_accuracy']:.4f}", store.out / "final_rm")
    return summary
