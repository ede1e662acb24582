"""Score many texts fast: each distinct text once, length-grouped batches, inference mode."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from ser.reward.collator import TokenCache, pad_batch
from ser.reward.module import compute_rewards


def score_token_ids(model: torch.nn.Module, ids: Sequence[Sequence[int]], *, pad_id: int, pooling: str,
                    batch_size: int = 64, device: torch.device | str = "cpu", precision: str = "32",
                    progress: bool = False, desc: str = "scoring") -> torch.Tensor:
    """Rewards for token-id sequences, returned in input order (float32, on CPU)."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch
    out = torch.empty(len(ids), dtype=torch.float32)
    was_training = model.training
    model.eval()
    autocast = torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                              enabled=precision.startswith("bf16"))
    starts = range(0, len(order), batch_size)
    with torch.inference_mode(), autocast:
        # disable=None: bars on a terminal, none in log files and CI
        for start in tqdm(starts, desc=desc, disable=None if progress else True, leave=False):
            index = order[start:start + batch_size]
            batch = pad_batch([ids[i] for i in index], pad_id)
            rewards = compute_rewards(model, batch["input_ids"].to(device), batch["attention_mask"].to(device), pooling)
            out[torch.as_tensor(index)] = rewards.float().cpu()
    model.train(was_training)
    return out


def score_texts(model: torch.nn.Module, cache: TokenCache, texts: Sequence[str], **kwargs) -> torch.Tensor:
    """Rewards for `texts`; a text that occurs several times is scored once."""
    distinct = list(dict.fromkeys(texts))
    rewards = score_token_ids(model, cache.encode(distinct), pad_id=cache.tokenizer.pad_token_id, **kwargs)
    by_text = dict(zip(distinct, rewards.tolist()))
    return torch.tensor([by_text[t] for t in texts], dtype=torch.float32)
