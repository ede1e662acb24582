"""Build the loop's confidence kind, selection rule and phase schedule from their `_target_` nodes."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ser.core import check, config_error
from ser.evolve.confidence import Confidence
from ser.evolve.phases import Fixed, PhaseSchedule, Union
from ser.evolve.rules import SelectionRule


def _instance(node: Any, key: str, base: type) -> Any:
    try:
        obj = instantiate(node, _convert_="all")
    except Exception as err:  # a wrong argument name or value in the node: say which node
        cause = err.__cause__ or err
        raise config_error(key, f"cannot build {node.get('_target_')!r}: {type(cause).__name__}: {cause}") from None
    check(isinstance(obj, base), f"{key}._target_", f"{node.get('_target_')!r} is not a {base.__module__}.{base.__name__}")
    return obj


def build_phases(cfg: DictConfig) -> PhaseSchedule:
    """`phases=<name>`, or the explicit list `ser.phases=[...]` (a Fixed schedule) when one is given."""
    listed = cfg.ser.get("phases")
    node = cfg.get("phases")
    if listed is not None:
        check(not (node is not None and str(node.get("_target_", "")).endswith(".Union")), "ser.phases",
              "a status list cannot run with phases=union (one pass of both predicates every loop): drop one")
        phases: PhaseSchedule = Fixed(statuses=tuple(OmegaConf.to_container(listed) if not isinstance(listed, (list, tuple))
                                                     else listed), label="list")
        phases.check("ser.phases")
        return phases
    check(node is not None, "phases", "no phase schedule: pick one with phases=adaptive|paper|union|status1_only")
    phases = _instance(node, "phases", PhaseSchedule)
    phases.check("phases")
    return phases


def build_selection(cfg: DictConfig) -> tuple[Confidence, SelectionRule, PhaseSchedule]:
    """The three objects one SER loop uses, each checked against the others before anything loads."""
    confidence = _instance(cfg.ser.confidence, "ser.confidence", Confidence)
    rule = _instance(cfg.ser.rule, "ser.rule", SelectionRule)
    rule.check(confidence.probability, "ser.rule")
    return confidence, rule, build_phases(cfg)


def describe_selection(cfg: DictConfig) -> str:
    """The selection settings of a SER run in one short string: ablation tables group runs by it."""
    confidence, rule, phases = build_selection(cfg)
    ser = cfg.ser
    parts = [f"{ser.get('name', 'custom')}: {phases.describe()} {confidence.describe()}({rule.describe()})"]
    if ser.top_fraction is not None:
        parts.append(f"top{100 * ser.top_fraction:g}%")
    if ser.top_k is not None:
        parts.append(f"top{ser.top_k}")
    if int(ser.get("stratify_bins") or 0) > 1:
        parts.append(f"strata{ser.stratify_bins}")
    for key, neutral in (("weighting", "none"), ("relabel", "none"), ("retrain_from", "base"), ("labels", "self"),
                         ("final_model", "last")):
        if str(ser.get(key, neutral)) != neutral:
            parts.append(f"{key}={ser[key]}")
    if ser.agreement.kind != "none":
        a = ser.agreement
        parts.append(f"agree={a.kind}x{a.samples}@{a.min_fraction:g}")
    return " ".join(parts)


def is_union(phases: PhaseSchedule) -> bool:
    return isinstance(phases, Union)
