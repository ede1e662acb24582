"""Padding-free RM forward (`rm.padding_free`): the linear layers see only real tokens.

A padded batch of B rows wastes every GEMM row spent on padding. Here the real tokens of all rows are
concatenated into one row of T tokens with per-sequence position ids, so embeddings, projections, MLPs and
layer norms run on T rows, not B x L. Only attention needs the sequences apart: it scatters queries, keys and
values back to [B, L] (a copy), runs scaled-dot-product attention with the key mask (and the causal mask for
decoders), and gathers the real rows again. The model's own modules run as they are (LoRA layers, autocast),
through a transformers attention function registered as `ser_packed` and chosen only for the packed call.

Rewards and gradients equal the padded forward's to float rounding (tests/unit/test_speed_equivalence.py).
Supported: BERT-style encoders with absolute positions (right padding, as our collator pads), and decoders
with rotary positions (any padding side: rotary attention depends only on relative positions).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from ser.reward.backbone import unwrapped
from ser.reward.head import reward_head

ATTENTION = "ser_packed"
ENCODERS = ("bert",)  # position ids, token type ids and the pooler as BertModel has them
DECODERS = ("llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "phi3")  # rotary positions


def packed_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: Any, scaling: float | None = None, dropout: float = 0.0,
                     **kwargs: Any) -> tuple[torch.Tensor, None]:
    """[1, heads, T, d] packed -> attention per sequence -> [1, T, heads, d] packed."""
    index, rows, width, key_mask = kwargs["ser_pack"]

    def unpack(x: torch.Tensor) -> torch.Tensor:  # [1, h, T, d] -> [B, h, L, d], zeros where padding
        x = x[0].transpose(0, 1)
        return x.new_zeros(rows * width, *x.shape[1:]).index_copy(0, index, x).view(rows, width, *x.shape[1:]).transpose(1, 2)

    q, k, v = unpack(query), unpack(key), unpack(value)
    if k.shape[1] != q.shape[1]:  # grouped-query attention: each key/value head serves several query heads
        k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
    mask = key_mask
    if getattr(module, "is_causal", False):
        mask = mask & torch.ones(width, width, dtype=torch.bool, device=mask.device).tril()
    if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16):
        # CPU's bf16 flash-attention backward runs ~10x slower than fp32's (docs/performance.md), while the
        # attention is a small share of the FLOPs: attend in fp32, autocast off so it is not cast back
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, dropout_p=dropout,
                                                 scale=scaling).to(q.dtype)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scaling)
    return out.transpose(1, 2).reshape(rows * width, *out.shape[1:2], out.shape[-1])[index].unsqueeze(0), None


AttentionInterface.register(ATTENTION, packed_attention)


def use_packed(model: torch.nn.Module, pooling: str, setting: bool | str) -> bool:
    """rm.padding_free: `auto` packs whatever `check_packable` accepts, `true` refuses what it cannot pack."""
    if setting == "auto":
        try:
            check_packable(model, pooling)
        except ValueError:
            return False
        return True
    if setting is True:
        check_packable(model, pooling)
    return bool(setting)


def check_packable(model: torch.nn.Module, pooling: str) -> None:
    """Refuse, before any training, a model or pooling the packed forward would get wrong."""
    inner = unwrapped(model)
    kind = getattr(inner.config, "model_type", None)
    if kind in ENCODERS:
        if getattr(inner.config, "position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"rm.padding_free: {kind} with position_embedding_type="
                             f"{inner.config.position_embedding_type} is not supported (absolute positions only)")
        if pooling == "hf" and not hasattr(inner, "bert"):
            raise ValueError(f"rm.padding_free: pooling=hf needs a BertFor* head, got {type(inner).__name__}")
        return
    if kind in DECODERS:
        if pooling == "hf":
            raise ValueError("rm.padding_free: a decoder RM pools the last token (rm.pooling=auto or last)")
        return
    raise ValueError(f"rm.padding_free: model_type {kind!r} is not supported (encoders: {', '.join(ENCODERS)}; "
                     f"decoders: {', '.join(DECODERS)}); set rm.padding_free=auto or false")


@contextmanager
def _attention(config: Any) -> Iterator[None]:
    before = config._attn_implementation
    config._attn_implementation = ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = before


def packed_rewards(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   pooling: str) -> torch.Tensor:
    """One scalar reward per row of a padded batch, computed without the padding."""
    inner = unwrapped(model)
    real = attention_mask.bool()
    rows, width = input_ids.shape
    index = real.reshape(-1).nonzero().squeeze(1)  # real tokens, row by row
    tokens = input_ids[real][None]
    positions = (attention_mask.long().cumsum(1) - 1)[real][None]  # 0..n-1 within each sequence
    extra = {"token_type_ids": torch.zeros_like(tokens)} if inner.config.model_type in ENCODERS else {}
    with _attention(inner.config):
        hidden = inner.base_model(input_ids=tokens, position_ids=positions, ser_pack=(index, rows, width, real[:, None, None, :]),
                                  **extra).last_hidden_state[0]
    lengths = real.sum(1)
    ends = lengths.cumsum(0)
    if pooling == "hf":  # the first token of each sequence
        pooled = hidden[ends - lengths]
    elif pooling == "last":
        pooled = hidden[ends - 1]
    else:  # mean over each sequence's tokens
        segment = torch.repeat_interleave(torch.arange(rows, device=hidden.device), lengths)
        pooled = hidden.new_zeros(rows, hidden.shape[-1]).index_add(0, segment, hidden) / lengths.clamp_min(1)[:, None].to(hidden.dtype)
    return reward_head(inner, pooled, pooling)
