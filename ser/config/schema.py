"""Typed schemas of the knobs that decide results (OmegaConf structured configs, kept in Hydra's ConfigStore).

Merging a config group onto its schema catches unknown keys, wrong types and values outside an enum,
naming the key; `__post_init__` checks the ranges the types cannot express. Groups with many free-form
keys (data sources, models) are checked on the keys listed here only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore

from ser.core import ALL_SCHEDULES, check


class RetrainFrom(Enum):
    base = "base"  # each loop restarts from the base model on seed + all self-labels
    last = "last"  # each loop continues from the last loop's RM


class FinalModel(Enum):
    best_val = "best_val"
    last = "last"
    soup = "soup"


class KeepCheckpoints(Enum):
    all = "all"
    best_last = "best_last"


class Weighting(Enum):
    none = "none"
    confidence = "confidence"


class Relabel(Enum):
    none = "none"
    drop = "drop"
    flip = "flip"


class Labels(Enum):
    self = "self"
    oracle = "oracle"


class AgreementKind(Enum):
    none = "none"
    dropout = "dropout"
    checkpoints = "checkpoints"


class DataKind(Enum):
    synthetic = "synthetic"
    source = "source"


class Overlong(Enum):
    truncate = "truncate"
    drop = "drop"


class Side(Enum):
    left = "left"
    right = "right"


@dataclass
class AgreementSchema:
    kind: AgreementKind = AgreementKind.none
    samples: int = 4           # dropout samples, or earlier loops' RMs
    dropout: float = 0.1       # MC dropout rate (kind=dropout)
    min_fraction: float = 1.0  # share of the extra scorers that must agree with the current RM

    def __post_init__(self) -> None:
        check(self.samples >= 1, "ser.agreement.samples", f"must be >= 1, got {self.samples}")
        check(0.0 < self.dropout < 1.0, "ser.agreement.dropout", f"must be in (0, 1), got {self.dropout}")
        check(0.0 < self.min_fraction <= 1.0, "ser.agreement.min_fraction", f"must be in (0, 1], got {self.min_fraction}")


@dataclass
class SERSchema:
    name: str = "custom"                  # what summaries and tables call this selection (conf/ser/<name>.yaml)
    confidence: Any = None                 # a _target_ node: ser.evolve.confidence.*
    rule: Any = None                       # a _target_ node: ser.evolve.rules.*
    phases: Optional[list[Any]] = None     # an explicit status list, e.g. [1, 1, 2, 2]: replaces `phases`
    min_pairs: int = 50
    max_loops: int = 3
    patience: int = 3
    retrain_from: RetrainFrom = RetrainFrom.base
    mix_seed: bool = True
    seed_weight: float = 1.0               # loss weight of a human seed label next to a self-label's
    loop_epochs: Optional[int] = None      # epochs of each SER loop's training (None: rm.epochs)
    remove_selected: bool = True
    final_model: FinalModel = FinalModel.last
    keep_checkpoints: KeepCheckpoints = KeepCheckpoints.best_last
    top_fraction: Optional[float] = None
    top_k: Optional[int] = None
    stratify_bins: int = 0                 # > 1: the cap is shared across response-length bins of the pool
    weighting: Weighting = Weighting.none
    relabel: Relabel = Relabel.none
    labels: Labels = Labels.self
    agreement: AgreementSchema = field(default_factory=AgreementSchema)

    def __post_init__(self) -> None:
        check(self.min_pairs >= 1, "ser.min_pairs", f"must be >= 1, got {self.min_pairs}")
        check(self.max_loops >= 0, "ser.max_loops", f"must be >= 0, got {self.max_loops}")
        check(self.patience >= 1, "ser.patience", f"must be >= 1, got {self.patience}")
        check(self.seed_weight > 0, "ser.seed_weight", f"must be > 0, got {self.seed_weight}")
        check(self.loop_epochs is None or self.loop_epochs >= 1, "ser.loop_epochs", f"must be >= 1, got {self.loop_epochs}")
        if self.top_fraction is not None:
            check(0.0 < self.top_fraction <= 1.0, "ser.top_fraction", f"must be in (0, 1], got {self.top_fraction}")
        check(self.stratify_bins == 0 or (self.stratify_bins >= 2 and (self.top_fraction is not None or self.top_k is not None)),
              "ser.stratify_bins", f"must be 0 (off) or >= 2 with a cap (ser.top_fraction or ser.top_k), got {self.stratify_bins}")
        if self.top_k is not None:
            check(self.top_k >= self.min_pairs, "ser.top_k", f"must be >= ser.min_pairs ({self.min_pairs}), got {self.top_k}")
        check(self.labels is Labels.self or self.relabel is Relabel.none, "ser.relabel",
              "must be none with ser.labels=oracle (human labels never flip)")
        for key in ("confidence", "rule"):
            node = getattr(self, key)
            check(isinstance(node, dict) and "_target_" in node, f"ser.{key}",
                  f"must be a node with a _target_ (a class, see conf/ser/top_gap.yaml), got {node!r}")


@dataclass
class SplitsSchema:
    seed_fraction: float = 0.15
    val_fraction: float = 0.2
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        check(0.0 < self.seed_fraction <= 1.0, "splits.seed_fraction", f"must be in (0, 1], got {self.seed_fraction}")
        check(0.0 <= self.val_fraction < 1.0, "splits.val_fraction", f"must be in [0, 1), got {self.val_fraction}")
        check(0.0 <= self.test_fraction < 1.0, "splits.test_fraction", f"must be in [0, 1), got {self.test_fraction}")


@dataclass
class ScheduleSchema:
    name: str = "ser"
    rm_schedule: Optional[str] = None  # policy schedules: the RM schedule they train against
    sft: bool = False
    rm_dir: Optional[str] = None

    def __post_init__(self) -> None:
        check(self.name in ALL_SCHEDULES, "schedule.name", f"must be one of {ALL_SCHEDULES}, got {self.name!r}")


@dataclass
class DataSchema:
    """The data keys every data config has (sources add their own)."""

    name: str = "synthetic"
    kind: DataKind = DataKind.synthetic
    template: str = "Question: {prompt}\n\nAnswer: {response}"
    chat_template: Any = "auto"            # auto | true | false
    max_length: int = 128
    overlong: Overlong = Overlong.truncate
    truncation_side: Side = Side.left

    def __post_init__(self) -> None:
        check(self.max_length > 0, "data.max_length", f"must be > 0, got {self.max_length}")
        check(self.chat_template in ("auto", True, False), "data.chat_template",
              f"must be auto, true or false, got {self.chat_template!r}")
        check("{prompt}" in self.template and "{response}" in self.template, "data.template",
              f"must hold {{prompt}} and {{response}}, got {self.template!r}")


SCHEMAS = {"ser": SERSchema, "splits": SplitsSchema, "schedule": ScheduleSchema, "data": DataSchema}


def register() -> None:
    """Keep the schemas in Hydra's ConfigStore (group `schema`), e.g. for `defaults: [/schema/ser@ser]`."""
    store = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        store.store(group="schema", name=name, node=schema)
