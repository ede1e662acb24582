"""The embedded default is pinned: no result may improve by making the data easier. Harder or other
variants are new named data configs, never a change to this one."""

from __future__ import annotations

import collections
import hashlib
import json

from ser.data.synthetic import fine_kind, is_stark, pair_kind, synthetic_pairs
from tests.conftest import compose


def test_the_default_synthetic_data_is_pinned_size_mix_and_hash(tmp_path):
    syn = compose([], tmp_path).data.synthetic
    assert (syn.n_pairs, syn.seed, syn.subtle_fraction, syn.pairs_per_prompt, list(syn.withhold_from_pool)) == \
        (2000, 1234, 0.5, 2, [])
    pairs = synthetic_pairs(syn.n_pairs, syn.seed, syn.subtle_fraction, syn.pairs_per_prompt)
    assert len(pairs) == 2000 and len({p.prompt for p in pairs}) == 1307
    assert sum(is_stark(pair_kind(p.id)) for p in pairs) == 961  # stark; the other 1,039 are subtle
    assert dict(collections.Counter(fine_kind(p) for p in pairs)) == {
        "missing_step": 273, "off_topic": 298, "refusal": 318, "swapped_steps": 138, "wrong_detail": 628,
        "wrong_entity": 345}
    digest = hashlib.sha256("".join(json.dumps(p.to_dict(), sort_keys=True) for p in pairs).encode()).hexdigest()
    assert digest == "9b923c9146b7330f79236e6ae1126779d67b1b36b1ed1c020f53fa6e5e0a4f7e"
