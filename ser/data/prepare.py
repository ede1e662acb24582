"""A run's data, ready to train on: loaded, split by prompt, tokenised once, overlong pairs counted.

The split comes first and does not depend on the tokenizer, so every RM sees the same splits for a
given seed; the tokenizer (the tiny test tokenizer included) is built from the non-test pairs only, so
no test text shapes anything that is trained or exported. Overlong pairs are then counted per split and
truncated or dropped (`data.overlong`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ser.data.dataset import build_pairs
from ser.data.schema import LoadReport, PreferencePair
from ser.data.splits import Splits, split_pairs
from ser.data.synthetic import fine_kind, is_stark, pair_kind
from ser.data.render import Renderer, wants_chat
from ser.data.tokens import TokenCache

log = logging.getLogger(__name__)
SPLITS = ("seed", "val", "pool", "test")


@dataclass
class LoadedData:
    """Pairs split by prompt, before any tokenizer is involved."""

    splits: Splits
    reports: list[LoadReport]
    kind: str  # synthetic | source

    def training_texts(self, limit: int = 5000, pool_answers: bool = True) -> list[str]:
        """Texts a tokenizer may be built from: never the test split's; the pool's prompts alone when its
        answers must stay unread (schedule=coevolve)."""
        labeled = [p for name in ("seed", "val") for p in self.splits_of(name)]
        texts = [t for p in labeled for t in (p.prompt, p.chosen, p.rejected)]
        pool = self.splits.pool
        texts += [t for p in pool for t in ((p.prompt, p.chosen, p.rejected) if pool_answers else (p.prompt,))]
        return texts[: 3 * limit]

    def splits_of(self, name: str) -> list[PreferencePair]:
        return getattr(self.splits, name)


def load_and_split(data_cfg: Mapping[str, Any], splits_cfg: Mapping[str, Any], seed: int) -> LoadedData:
    pairs, own_test, reports = build_pairs(data_cfg)
    splits = split_pairs(pairs, seed=seed, seed_fraction=splits_cfg["seed_fraction"],
                         val_fraction=splits_cfg["val_fraction"], test_fraction=splits_cfg["test_fraction"],
                         test_pairs=own_test)
    withheld = list((data_cfg.get("synthetic") or {}).get("withhold_from_pool") or []) if data_cfg["kind"] == "synthetic" else []
    if withheld:  # a diagnostic: what labels on every other pool pair can reach (schedule=full_data)
        pool = [p for p in splits.pool if fine_kind(p) not in withheld]
        log.warning("data.synthetic.withhold_from_pool=%s: %d of %d pool pairs withheld", withheld,
                    len(splits.pool) - len(pool), len(splits.pool))
        splits = Splits(seed=splits.seed, val=splits.val, pool=pool, test=splits.test)
    for r in reports:
        if r.issues:
            log.warning("%s: skipped %d of %d rows: %s (every one in data_report.json); the first:\n  %s", r.source,
                        len(r.issues), r.rows_read, r.counts, "\n  ".join(i.describe() for i in r.issues[:5]))
    return LoadedData(splits, reports, str(data_cfg["kind"]))


@dataclass
class PreparedData:
    splits: Splits
    cache: TokenCache
    renderer: Renderer
    reports: list[LoadReport] = field(default_factory=list)
    overlong: dict[str, Any] = field(default_factory=dict)
    loaded_sizes: dict[str, int] = field(default_factory=dict)  # before overlong pairs were dropped
    features: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    synthetic: bool = False

    @property
    def template(self) -> str:
        return self.renderer.template

    def featurise(self, pairs: Sequence[PreferencePair], weights: Sequence[float] | None = None) -> list[dict[str, Any]]:
        return pair_features(pairs, self.cache, self.renderer, weights)

    def groups(self, split: str) -> list[str] | None:
        """Synthetic pairs carry their fault kind: report accuracy on stark and subtle pairs apart."""
        if not self.synthetic:
            return None
        return ["stark" if is_stark(pair_kind(p.id)) else "subtle" for p in getattr(self.splits, split)]

    def kinds(self, split: str) -> list[str] | None:
        """Synthetic pairs: the fine fault kind of each (ser.data.synthetic.fine_kind)."""
        return [fine_kind(p) for p in getattr(self.splits, split)] if self.synthetic else None

    def report(self) -> dict[str, Any]:
        return {"sources": [r.to_dict() for r in self.reports], "overlong": self.overlong,
                "splits": self.splits.sizes(), "splits_loaded": self.loaded_sizes}


def pair_features(pairs: Sequence[PreferencePair], cache: TokenCache, renderer: Renderer | str,
                  weights: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """Token ids of both sides of every pair (`renderer`: a Renderer, or a text template)."""
    if isinstance(renderer, str):
        renderer = Renderer(cache.tokenizer, renderer)
    chosen = cache.encode([renderer.side(p, "chosen") for p in pairs])
    rejected = cache.encode([renderer.side(p, "rejected") for p in pairs])
    weights = weights if weights is not None else [1.0] * len(pairs)
    return [{"chosen_ids": c, "rejected_ids": r, "weight": w} for c, r, w in zip(chosen, rejected, weights)]


def prepare(loaded: LoadedData, tokenizer, data_cfg: Mapping[str, Any]) -> PreparedData:
    """Tokenise every split once; count (and by `data.overlong`, drop) pairs longer than data.max_length."""
    renderer = Renderer(tokenizer, str(data_cfg["template"]), wants_chat(data_cfg.get("chat_template", "auto"), tokenizer))
    cache = TokenCache(tokenizer, int(data_cfg["max_length"]), add_special_tokens=renderer.adds_special_tokens)
    policy = str(data_cfg["overlong"])
    kept, overlong = {}, {"max_length": cache.max_length, "policy": policy}
    for name in SPLITS:
        pairs = getattr(loaded.splits, name)
        long_ = [p for p in pairs if cache.is_truncated(renderer.side(p, "chosen"))
                 or cache.is_truncated(renderer.side(p, "rejected"))]
        overlong[f"{name}_overlong_pairs"] = len(long_)
        overlong.setdefault("examples", []).extend(p.id for p in long_[: 20 - len(overlong.get("examples", []))])
        ids = {p.id for p in long_}
        kept[name] = [p for p in pairs if p.id not in ids] if policy == "drop" else list(pairs)
    overlong["overlong_pairs"] = sum(overlong[f"{n}_overlong_pairs"] for n in ("seed", "val", "pool"))
    overlong["test_overlong_pairs"] = overlong["test_overlong_pairs"]
    n_long = overlong["overlong_pairs"] + overlong["test_overlong_pairs"]
    if n_long:
        log.warning("%d pairs exceed max_length=%d tokens: %s", n_long, cache.max_length,
                    "dropped" if policy == "drop" else "truncated (side=%s)" % tokenizer.truncation_side)
    splits = Splits(**kept)
    if not splits.seed:
        loaded_seed = len(loaded.splits.seed)
        why = (f"all {loaded_seed} seed pairs exceed data.max_length={cache.max_length} tokens and data.overlong=drop "
               "removed them: raise max_length or use overlong=truncate") if loaded_seed else (
               f"splits.seed_fraction leaves no labeled training pairs ({sum(loaded.splits.sizes().values())} pairs "
               "in all): raise it or use more data")
        raise ValueError(why)
    if renderer.chat:
        log.info("texts rendered by the RM tokenizer's chat template (data.chat_template=%s)", data_cfg.get("chat_template", "auto"))
    data = PreparedData(splits, cache, renderer, loaded.reports, overlong, loaded.splits.sizes(),
                        synthetic=loaded.kind == "synthetic")
    data.features = {name: data.featurise(getattr(splits, name)) for name in SPLITS}
    log.info("splits (by prompt): %s", splits.sizes())
    return data
