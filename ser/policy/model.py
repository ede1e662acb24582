"""The policy: a causal LM (+ optional LoRA) with a scalar value head, and its frozen reference.

Weights come from the same sources as the RM (ser.reward.backbone.resolve_model_source: hub name,
local dir, an installed package, a GGUF file converted once to safetensors) or a tiny random
model built from a config (tests). With LoRA the reference policy is the same network with the
adapter disabled, so no second copy of the weights is held; without LoRA a frozen copy is kept.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from ser.policy import math as rl
from ser.reward.backbone import build_tiny_tokenizer, disable_dropout, resolve_model_source

log = logging.getLogger(__name__)


def load_policy_model(model_cfg: Mapping[str, Any], vocab_texts: list[str] | None = None
                      ) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """(causal LM, tokenizer with an explicit pad token, padded on the left for generation)."""
    source = model_cfg["source"]
    trust = bool(model_cfg.get("trust_remote_code", False))
    if source.get("kind") == "config":
        tokenizer = build_tiny_tokenizer(vocab_texts, decoder=True)
        config = dict(source["config"])
        model_type = config.pop("model_type")
        hf_cfg = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), **config)
        hf_cfg.pad_token_id = tokenizer.pad_token_id
        hf_cfg.eos_token_id = tokenizer.eos_token_id
        hf_cfg.bos_token_id = None
        model = AutoModelForCausalLM.from_config(hf_cfg)
    else:
        where = resolve_model_source(source)
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=trust)
        model = AutoModelForCausalLM.from_pretrained(where, trust_remote_code=trust, dtype=torch.float32,
                                                     use_safetensors=model_cfg.get("use_safetensors", True))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # prompts are left-padded so every response starts at one column
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if model_cfg.get("disable_dropout", True):
        disable_dropout(model)  # PPO's ratio compares two forward passes: dropout noise would bias it
    if model_cfg.get("gradient_checkpointing", False):
        model.gradient_checkpointing_enable()
    lora = model_cfg.get("lora")
    if lora:
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(model, LoraConfig(
            task_type=TaskType.CAUSAL_LM, r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora.get("dropout", 0.0),
            target_modules=list(lora["target_modules"]) if lora.get("target_modules") else None))
    return model, tokenizer


class PolicyWithValue(torch.nn.Module):
    """The policy LM and a linear value head on its last hidden state (one forward gives both)."""

    def __init__(self, policy: torch.nn.Module, with_value: bool = True) -> None:
        super().__init__()
        self.policy = policy
        self._reference: torch.nn.Module | None = None
        if not hasattr(policy, "disable_adapter"):  # no LoRA: keep a frozen copy as the reference
            self._reference = copy.deepcopy(policy).eval().requires_grad_(False)
        hidden = policy.config.hidden_size if hasattr(policy.config, "hidden_size") else policy.config.n_embd
        self.value_head = torch.nn.Linear(hidden, 1) if with_value else None
        if self.value_head is not None:
            torch.nn.init.zeros_(self.value_head.bias)
            torch.nn.init.normal_(self.value_head.weight, std=1.0 / (hidden + 1) ** 0.5)

    @property
    def uses_lora(self) -> bool:
        return self._reference is None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, with_value: bool = True,
                logits_to_keep: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, values); `logits_to_keep=k` computes the LM head on the last k positions only
        (the response's), which on a 49k vocabulary is a large share of the forward pass."""
        out = self.policy(input_ids=input_ids, attention_mask=attention_mask,
                          position_ids=position_ids(attention_mask), output_hidden_states=with_value,
                          use_cache=False, logits_to_keep=logits_to_keep)
        values = None
        if with_value and self.value_head is not None:
            values = self.value_head(out.hidden_states[-1]).squeeze(-1).float()
        return out.logits, values

    @contextlib.contextmanager
    def reference(self) -> Iterator[torch.nn.Module]:
        """The frozen reference policy (LoRA: the adapter switched off for the duration)."""
        if self._reference is not None:
            yield self._reference
            return
        with self.policy.disable_adapter():
            yield self.policy

    def reference_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int = 0
                         ) -> torch.Tensor:
        with torch.no_grad(), self.reference() as ref:
            return ref(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                       use_cache=False, logits_to_keep=logits_to_keep).logits

    def target_logps(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_mask: torch.Tensor,
                     reference: bool = False) -> torch.Tensor:
        """Per row, the sum of log p(token) over its target tokens (target_mask), the LM head applied at those
        positions only: DPO and SFT read no other logit, and on a 49k vocabulary the head and its softmax over
        every prompt and padding position are a large share of a step (docs/performance.md)."""
        if reference:
            with torch.no_grad(), self.reference() as ref:
                return target_logps(ref, input_ids, attention_mask, target_mask)
        return target_logps(self.policy, input_ids, attention_mask, target_mask)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


def target_logps(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 target_mask: torch.Tensor) -> torch.Tensor:
    """sum over t of log p(input_ids[t + 1]) where target_mask[t + 1], per row: the LM head on target rows only."""
    config = model.config
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        # the head is more than the output embedding here: take the model's own logits, every position
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                       use_cache=False).logits
        logprobs, mask = rl.sequence_logprobs(logits, input_ids, target_mask)
        return (logprobs * mask).sum(1)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                use_cache=False, output_hidden_states=True, logits_to_keep=1)  # 1: the model's own head, one row
    where = target_mask[:, 1:].bool()  # position t predicts token t + 1
    logits = model.get_output_embeddings()(out.hidden_states[-1][:, :-1][where])
    logps = rl.logprobs_from_logits(logits[None], input_ids[:, 1:][where][None])[0]
    return logps.new_zeros(input_ids.shape[0]).index_add(0, where.nonzero()[:, 0], logps)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as `generate` assigns them: the forward pass must match."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
