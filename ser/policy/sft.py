"""Supervised fine-tuning on prompt + chosen: the causal-LM loss on the response tokens only."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from transformers import PreTrainedTokenizerBase

from ser.policy.model import PolicyWithValue
from ser.policy.rollout import encode_prompts

log = logging.getLogger(__name__)


def encode_responses(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], responses: Sequence[str], *,
                     max_prompt_tokens: int, max_response_tokens: int, chat_template: bool = True
                     ) -> list[dict[str, list[int]]]:
    """Per example: prompt ids, and response ids ending in EOS (what the policy should learn to emit)."""
    prompt_ids = encode_prompts(tokenizer, prompts, max_prompt_tokens, chat_template)
    response_ids = tokenizer(list(responses), add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    out, cut = [], 0
    for p, r in zip(prompt_ids, response_ids):
        r = [t for t in r if t != eos]
        cut += len(r) > max_response_tokens - 1
        out.append({"prompt_ids": p, "response_ids": r[: max_response_tokens - 1] + [eos]})
    if cut:
        log.warning("%d of %d responses are longer than max_response_tokens=%d and were cut", cut, len(out),
                    max_response_tokens)
    return out


def collate_sequences(items: Sequence[Mapping[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded prompt + response rows, with a mask over the response tokens (the loss targets)."""
    width = max(len(i["prompt_ids"]) + len(i["response_ids"]) for i in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(items), width), dtype=torch.long)
    targets = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        seq = item["prompt_ids"] + item["response_ids"]
        ids[row, :len(seq)] = torch.as_tensor(seq)
        attention[row, :len(seq)] = 1
        targets[row, len(item["prompt_ids"]):len(seq)] = 1
    return {"input_ids": ids, "attention_mask": attention, "target_mask": targets}


class SFTModule(pl.LightningModule):
    def __init__(self, model: PolicyWithValue, optimizer: Callable[..., torch.optim.Optimizer]) -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer

    def on_fit_start(self) -> None:
        self.model.train()

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # the mean log p over every target token of the batch, the LM head on target tokens only
        logps = self.model.target_logps(batch["input_ids"], batch["attention_mask"], batch["target_mask"])
        loss = -logps.sum() / batch["target_mask"][:, 1:].sum().clamp_min(1)
        self.log("sft/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def configure_optimizers(self):
        return self.optimizer_factory(params=self.model.trainable_parameters())


def sft_features(pairs: Sequence[Any], tokenizer: PreTrainedTokenizerBase, policy_cfg: Mapping[str, Any]
                 ) -> list[dict[str, list[int]]]:
    """SFT examples from preference pairs: prompt + the chosen answer."""
    return encode_responses(tokenizer, [p.prompt for p in pairs], [p.chosen for p in pairs],
                            max_prompt_tokens=policy_cfg["max_prompt_tokens"],
                            max_response_tokens=policy_cfg["max_response_tokens"],
                            chat_template=policy_cfg["model"].get("chat_template", True))
