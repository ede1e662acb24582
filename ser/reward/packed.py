"""Padding-free RM forward (`rm.padding_free`): the linear layers see only real tokens.

A padded batch of B rows wastes every GEMM row spent on padding. Here the real tokens of all rows are
concatenated into one row of T tokens with per-sequence position ids, so embeddings, projections, MLPs and
layer norms run on T rows, not B x L. Only attention needs the sequences apart. On the CPU each sequence
attends alone on its slice of the packed queries, keys and values (causal for decoders): no padding anywhere.
Elsewhere (a GPU, where a loop over sequences would cost a kernel launch each) it scatters them back to
[B, L], runs one scaled-dot-product attention with the key mask (and the causal mask for decoders), and
gathers the real rows again. The model's own modules run as they are (LoRA layers, autocast),
through a transformers attention function registered as `ser_packed` and chosen only for the packed call.

Rewards and gradients equal the padded forward's to float rounding (tests/unit/test_speed_equivalence.py).
Supported: BERT-style encoders with absolute positions (right padding, as our collator pads), and decoders
with rotary positions (any padding side: rotary attention depends only on relative positions).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from ser.reward.backbone import unwrapped
from ser.reward.head import reward_head

ATTENTION = "ser_packed"
ENCODERS = ("bert",)  # position ids, token type ids and the pooler as BertModel has them
DECODERS = ("llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "phi3")  # rotary positions


class Pack(NamedTuple):
    """Where each packed token sits in the padded batch, as every layer's attention needs it."""

    index: torch.Tensor      # [T]: the flat [B x L] position of each real token, row by row
    rows: int                # B
    width: int               # L
    key_mask: torch.Tensor   # [B, 1, 1, L] bool: real keys
    lengths: list[int]       # real tokens per row (a host list: on the CPU each sequence attends alone)


def packed_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: Any, scaling: float | None = None, dropout: float = 0.0,
                     **kwargs: Any) -> tuple[torch.Tensor, None]:
    """[1, heads, T, d] packed -> attention per sequence -> [1, T, heads, d] packed."""
    pack: Pack = kwargs["ser_pack"]
    if key.shape[1] != query.shape[1]:  # grouped-query attention: each key/value head serves several query heads
        key, value = (t.repeat_interleave(query.shape[1] // t.shape[1], dim=1) for t in (key, value))
    causal = bool(getattr(module, "is_causal", False))
    attend = attend_each if query.device.type == "cpu" else attend_scattered
    return attend(query, key, value, pack, causal, scaling, dropout), None


@contextmanager
def _fp32_on_cpu(x: torch.Tensor) -> Iterator[bool]:
    """CPU's bf16 flash-attention backward runs ~10x slower than fp32's (docs/performance.md), while the
    attention is a small share of the FLOPs: on the CPU attend in fp32, autocast off so it is not cast back.
    Yields whether to upcast (x is a low-precision CPU tensor)."""
    if x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", enabled=False):
            yield True
    else:
        yield False


def attend_each(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, pack: Pack, causal: bool,
                scaling: float | None, dropout: float) -> torch.Tensor:
    """The CPU path: each sequence attends alone on its slice of the packed tensors. No copy to [B, L], no
    mask, no score or softmax spent on padding: a layer's attention, forward and backward, 23-28 ms instead
    of 36-41 for 32 sequences of 20-69 tokens scattered to [B, L] (docs/performance.md). The Python loop's
    cost per sequence is what a CPU can afford and a GPU would not."""
    dtype = query.dtype
    with _fp32_on_cpu(query) as upcast:
        if upcast:
            query, key, value = query.float(), key.float(), value.float()
        lengths = [n for n in pack.lengths if n]  # an empty row has no tokens in the pack
        outs = [F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal, scale=scaling).transpose(1, 2)
                for q, k, v in zip(query.split(lengths, 2), key.split(lengths, 2), value.split(lengths, 2))]
        return torch.cat(outs, 1).to(dtype)


def attend_scattered(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, pack: Pack, causal: bool,
                     scaling: float | None, dropout: float) -> torch.Tensor:
    """Elsewhere: scatter to [B, L] (zeros where padding), one batched attention with the key mask, gather."""
    index, rows, width = pack.index, pack.rows, pack.width

    def unpack(x: torch.Tensor) -> torch.Tensor:  # [1, h, T, d] -> [B, h, L, d]
        x = x[0].transpose(0, 1)
        return x.new_zeros(rows * width, *x.shape[1:]).index_copy(0, index, x).view(rows, width, *x.shape[1:]).transpose(1, 2)

    q, k, v = unpack(query), unpack(key), unpack(value)
    mask = pack.key_mask
    if causal:
        mask = mask & torch.ones(width, width, dtype=torch.bool, device=mask.device).tril()
    with _fp32_on_cpu(q) as upcast:
        if upcast:
            q, k, v = q.float(), k.float(), v.float()
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scaling).to(query.dtype)
    return out.transpose(1, 2).reshape(rows * width, *out.shape[1:2], out.shape[-1])[index].unsqueeze(0)


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
    lengths = real.sum(1)
    pack = Pack(index, rows, width, real[:, None, None, :], lengths.tolist() if input_ids.device.type == "cpu" else [])
    with _attention(inner.config):
        hidden = inner.base_model(input_ids=tokens, position_ids=positions, ser_pack=pack, **extra).last_hidden_state[0]
    ends = lengths.cumsum(0)
    if pooling == "hf":  # the first token of each sequence
        pooled = hidden[ends - lengths]
    elif pooling == "last":
        pooled = hidden[ends - 1]
    else:  # mean over each sequence's tokens
        segment = torch.repeat_interleave(torch.arange(rows, device=hidden.device), lengths)
        pooled = hidden.new_zeros(rows, hidden.shape[-1]).index_add(0, segment, hidden) / lengths.clamp_min(1)[:, None].to(hidden.dtype)
    return reward_head(inner, pooled, pooling)
