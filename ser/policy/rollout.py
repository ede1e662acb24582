"""Rollouts: format prompts, sample responses, cut them at the first EOS, and score them with an RM.

The policy and the RM may use different tokenizers (SmolLM2's BPE vs MiniLM's WordPiece): the
response is decoded to text and the RM re-encodes (prompt, response) with its own tokenizer and
template, exactly as it saw pairs in training.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from ser.policy.model import PolicyWithValue

log = logging.getLogger(__name__)


def format_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str, chat_template: bool = True,
                  template: str = "Question: {prompt}\n\nAnswer:") -> str:
    """The text the policy continues: the model's chat template when it has one, else `template`."""
    if chat_template and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    return template.format(prompt=prompt)


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], max_prompt_tokens: int,
                   chat_template: bool = True) -> list[list[int]]:
    """Token ids per prompt, cut from the left to `max_prompt_tokens` (the question is at the end)."""
    texts = [format_prompt(tokenizer, p, chat_template) for p in prompts]
    # the chat template already holds any special tokens; plain templates get the tokenizer's own
    special = not (chat_template and getattr(tokenizer, "chat_template", None))
    ids = tokenizer(texts, add_special_tokens=special)["input_ids"]
    if special and tokenizer.eos_token_id is not None:  # a decoder tokenizer may append eos: a prompt must not end
        ids = [x[:-1] if x and x[-1] == tokenizer.eos_token_id else x for x in ids]
    return [x[-max_prompt_tokens:] for x in ids]


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq):] = torch.as_tensor(seq, dtype=torch.long)
            mask[row, width - len(seq):] = 1
    return ids, mask


def truncate_at_eos(responses: torch.Tensor, eos_id: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep each response up to and including its first EOS; (responses, mask, has_eos)."""
    is_eos = responses == eos_id
    has_eos = is_eos.any(dim=1)
    # position of the first EOS, or the full length when there is none
    first = torch.where(has_eos, is_eos.long().argmax(dim=1), torch.full_like(has_eos, responses.shape[1], dtype=torch.long))
    positions = torch.arange(responses.shape[1], device=responses.device).unsqueeze(0)
    mask = (positions <= first.unsqueeze(1)).long()
    return responses.masked_fill(mask == 0, pad_id), mask, has_eos


@dataclass
class Rollout:
    """One batch of sampled responses; `query` is left-padded, `response` right-padded."""

    query: torch.Tensor
    query_mask: torch.Tensor
    response: torch.Tensor
    response_mask: torch.Tensor
    has_eos: torch.Tensor
    texts: list[str]

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.query, self.response], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.query_mask, self.response_mask], dim=1)

    @property
    def lengths(self) -> torch.Tensor:
        return self.response_mask.sum(1)


@torch.no_grad()
def generate(model: PolicyWithValue, tokenizer: PreTrainedTokenizerBase, prompt_ids: Sequence[Sequence[int]],
             generation: Mapping[str, Any], reference: bool = False) -> Rollout:
    """Sample (or greedily decode) one response per prompt with the policy, or with the reference."""
    query, query_mask = left_pad(prompt_ids, tokenizer.pad_token_id)
    device = next(model.parameters()).device  # prompts arrive as token-id lists: a GPU policy needs them there
    query, query_mask = query.to(device), query_mask.to(device)
    do_sample = bool(generation.get("do_sample", True))
    kwargs = {"max_new_tokens": int(generation["max_new_tokens"]), "do_sample": do_sample,
              "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    if do_sample:
        kwargs.update(temperature=float(generation.get("temperature", 1.0)), top_k=int(generation.get("top_k", 0)),
                      top_p=float(generation.get("top_p", 1.0)))
    was_training = model.training
    model.eval()
    if reference:
        with model.reference() as ref:
            out = ref.generate(input_ids=query, attention_mask=query_mask, **kwargs)
    else:
        out = model.policy.generate(input_ids=query, attention_mask=query_mask, **kwargs)
    model.train(was_training)
    response, response_mask, has_eos = truncate_at_eos(out[:, query.shape[1]:], tokenizer.eos_token_id,
                                                       tokenizer.pad_token_id)
    texts = tokenizer.batch_decode([r[m.bool()] for r, m in zip(response, response_mask)], skip_special_tokens=True)
    return Rollout(query, query_mask, response, response_mask, has_eos, [t.strip() for t in texts])


class RewardFunction:
    """Scores (prompt, response text) with an exported RM (ser.reward.export.RewardScorer)."""

    def __init__(self, rm_dir: str | Path, policy_tokenizer: PreTrainedTokenizerBase | None = None,
                 normalize: bool = True, batch_size: int = 64, name: str = "RM", device: str | torch.device = "cpu"
                 ) -> None:
        from ser.reward.export import RewardScorer

        self.scorer = RewardScorer.from_pretrained(rm_dir, batch_size=batch_size, device=device)
        self.normalize = normalize
        self.rm_dir = str(rm_dir)
        if policy_tokenizer is not None:
            same = tokenizers_match(policy_tokenizer, self.scorer.tokenizer)
            log.info("%s %s: tokenizer %s the policy's (vocab %d vs %d)%s", name, rm_dir,
                     "matches" if same else "differs from", len(self.scorer.tokenizer), len(policy_tokenizer),
                     "" if same else ": responses are decoded to text and re-encoded with the RM's tokenizer")
            self.same_tokenizer = same

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        return self.scorer.score(list(zip(prompts, responses)), normalize=self.normalize)


def tokenizers_match(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    return len(a) == len(b) and a.get_vocab() == b.get_vocab()
