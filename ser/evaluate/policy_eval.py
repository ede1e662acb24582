"""Generate with a policy on held-out prompts and measure it: gold reward, KL to the reference, length.

KL(policy || reference) is estimated per response as the sum over its tokens of
log pi(y_t) - log ref(y_t) (k1) on the policy's own samples, at the sampling temperature: an
unbiased estimate of the sequence-level KL, averaged over prompts.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from ser.io import atomic_write_text
from ser.policy import math as rl
from ser.policy.model import PolicyWithValue
from ser.policy.ppo import response_logits
from ser.policy.rollout import generate


@torch.no_grad()
def evaluate_policy(model: PolicyWithValue, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                    prompt_ids: Sequence[Sequence[int]], judge: Any, generation: Mapping[str, Any], *,
                    batch_size: int = 8, reference: bool = False, seed: int = 0) -> dict[str, Any]:
    """Per-prompt responses and gold scores, and their means. `reference=True` evaluates the starting policy."""
    torch.manual_seed(seed)  # the same sampling noise for every policy evaluated with this seed
    temperature = float(generation.get("temperature", 1.0)) if generation.get("do_sample", True) else 1.0
    texts, lengths, kls, eos = [], [], [], []
    for start in range(0, len(prompts), batch_size):
        rollout = generate(model, tokenizer, prompt_ids[start:start + batch_size], generation, reference=reference)
        texts.extend(rollout.texts)
        lengths.extend(rollout.lengths.tolist())
        eos.extend(rollout.has_eos.tolist())
        if reference:
            kls.extend([0.0] * len(rollout.texts))
            continue
        r = rollout.response.shape[1]
        was_training = model.training
        model.eval()
        logits, _ = model(rollout.input_ids, rollout.attention_mask, with_value=False, logits_to_keep=r + 1)
        ref_logits = model.reference_logits(rollout.input_ids, rollout.attention_mask, r + 1)
        model.train(was_training)
        logp = rl.logprobs_from_logits(response_logits(logits, r, temperature), rollout.response)
        ref_logp = rl.logprobs_from_logits(response_logits(ref_logits, r, temperature), rollout.response)
        kls.extend((rl.kl_per_token(logp, ref_logp, "k1") * rollout.response_mask).sum(1).tolist())
    scores = judge(list(prompts), texts).tolist()
    n = max(len(scores), 1)
    return {"responses": texts, "gold": scores, "kl": kls, "length": lengths, "has_eos": eos,
            "gold_mean": sum(scores) / n, "kl_mean": sum(kls) / n, "length_mean": sum(lengths) / n,
            "eos_rate": sum(eos) / n}


def win_tie_loss(a: Sequence[float], b: Sequence[float], tie_margin: float = 0.0) -> dict[str, float]:
    """Per prompt, does policy a's gold score beat b's by more than `tie_margin`? Rates over prompts."""
    if len(a) != len(b) or not a:
        raise ValueError(f"win_tie_loss: need two equal, non-empty score lists, got {len(a)} and {len(b)}")
    wins = sum(x - y > tie_margin for x, y in zip(a, b))
    losses = sum(y - x > tie_margin for x, y in zip(a, b))
    n = len(a)
    return {"win": wins / n, "tie": (n - wins - losses) / n, "loss": losses / n}


def write_samples(path: str | Path, prompts: Sequence[str], results: Mapping[str, Mapping[str, Any]]) -> Path:
    """One row per prompt: each policy's response, gold score, KL and length (CSV, opens in any sheet)."""
    buffer = io.StringIO()
    names = list(results)
    fields = ["prompt"] + [f"{name}_{col}" for name in names for col in ("response", "gold", "kl", "length")]
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for i, prompt in enumerate(prompts):
        row = {"prompt": prompt}
        for name in names:
            r = results[name]
            row.update({f"{name}_response": r["responses"][i], f"{name}_gold": round(r["gold"][i], 4),
                        f"{name}_kl": round(r["kl"][i], 4), f"{name}_length": r["length"][i]})
        writer.writerow(row)
    return atomic_write_text(path, buffer.getvalue())
