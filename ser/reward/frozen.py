"""Train only the top of the backbone, and compute the frozen bottom once per text.

`rm.freeze_layers=k` freezes the input embeddings and the first k transformer blocks. Their output
for a text never changes (not across epochs, not across SER loops that restart from the base), so
it is computed once per distinct token sequence, kept in memory, and replayed: every later forward
pass (training, pool scoring, evaluation) runs only the blocks above k. On MiniLM (6 blocks) with
k=4 a training step does about a third of the work.

Generic over architectures whose blocks sit in one ModuleList (`layer`, `layers`, `h`, `block`) and
take the hidden states as their first argument. Needs right padding (the collator's default).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ser.locks import fill_once
from ser.reward.backbone import unwrapped

log = logging.getLogger(__name__)

BLOCK_LIST_NAMES = ("layer", "layers", "h", "block")
ATTRIBUTE = "ser_frozen_prefix"  # set on the model passed to compute_rewards


class _Stop(Exception):
    """Raised by a hook after the last frozen block: nothing above it needs to run."""


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    lists = [(name, m) for name, m in model.named_modules()
             if isinstance(m, nn.ModuleList) and name.rsplit(".", 1)[-1] in BLOCK_LIST_NAMES and len(m) > 0]
    if len(lists) != 1:
        raise ValueError(f"rm.freeze_layers: expected one list of transformer blocks, found {[n for n, _ in lists]}")
    return lists[0][1]


def _input_embeddings(model: nn.Module) -> nn.Module:
    inner = unwrapped(model)
    embeddings = getattr(inner.base_model, "embeddings", None)  # BERT family: word + position + type + norm
    return embeddings if embeddings is not None else inner.get_input_embeddings()


class FrozenPrefix:
    """Freezes the bottom of `model` and replays its cached output; attach with `attach`."""

    def __init__(self, model: nn.Module, layers: int, pad_id: int, batch_size: int = 64) -> None:
        self.model, self.blocks, self.k = model, transformer_blocks(model), layers
        self.pad_id, self.batch_size = pad_id, batch_size
        if not 0 < layers < len(self.blocks):
            raise ValueError(f"rm.freeze_layers must be in [1, {len(self.blocks) - 1}] for this model "
                             f"({len(self.blocks)} blocks), got {layers}")
        for module in (_input_embeddings(model), *self.blocks[:layers]):
            for p in module.parameters():
                p.requires_grad_(False)
        self.cache: dict[tuple[int, ...], torch.Tensor] = {}
        self.replay: torch.Tensor | None = None
        self.tuple_output = False
        for i, block in enumerate(self.blocks[:layers]):
            block.forward = self._replaying_forward(block, i)  # instance attribute: parameter names unchanged

    def attach(self) -> "FrozenPrefix":
        setattr(self.model, ATTRIBUTE, self)
        return self

    def _replaying_forward(self, block: nn.Module, index: int):
        original = type(block).forward.__get__(block)

        def forward(hidden_states, *args, **kwargs):
            if self.replay is None:
                return original(hidden_states, *args, **kwargs)
            out = self.replay if index == self.k - 1 else hidden_states  # lower blocks: pass through
            return (out,) if self.tuple_output else out
        return forward

    # ---- the cache ---------------------------------------------------------------------------------
    def build(self, sequences: Sequence[Sequence[int]]) -> int:
        """Compute and keep the frozen output of every distinct sequence not cached yet; returns how many."""
        missing = list(dict.fromkeys(tuple(s) for s in sequences if tuple(s) not in self.cache))
        missing.sort(key=len)  # fixed order and batches: the same cache whatever order texts arrive in
        from ser.reward.collator import pad_batch

        device = next(self.model.parameters()).device
        captured: list = []

        def hook(_module, _inputs, output):
            captured.append(output)
            raise _Stop

        handle = self.blocks[self.k - 1].register_forward_hook(hook)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
                starts = range(0, len(missing), self.batch_size)
                for start in tqdm(starts, desc=f"frozen blocks 0-{self.k - 1}", disable=None if len(starts) > 4 else True,
                                  leave=False):
                    chunk = missing[start:start + self.batch_size]
                    batch = pad_batch(chunk, self.pad_id)
                    captured.clear()
                    try:
                        self.model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
                    except _Stop:
                        pass
                    out = captured[0]
                    self.tuple_output = isinstance(out, tuple)
                    hidden = (out[0] if self.tuple_output else out).float()
                    for row, seq in enumerate(chunk):
                        self.cache[seq] = hidden[row, :len(seq)].clone()
        finally:
            handle.remove()
            self.model.train(was_training)
        return len(missing)

    @contextmanager
    def replaying(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Iterator[None]:
        """Within: the model's forward on this batch starts from the cached frozen output."""
        lengths = attention_mask.sum(1)
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        if not torch.equal(attention_mask.bool(), positions[None, :] < lengths[:, None]):
            raise ValueError("rm.freeze_layers replays cached states with right padding only")
        seqs = [tuple(row[:n].tolist()) for row, n in zip(input_ids, lengths.tolist())]
        self.build(seqs)
        width, hidden = attention_mask.shape[1], self.cache[seqs[0]].shape[-1]
        replay = torch.zeros(len(seqs), width, hidden, device=input_ids.device)
        for row, seq in enumerate(seqs):
            replay[row, :len(seq)] = self.cache[seq].to(input_ids.device)
        self.replay = replay
        try:
            yield
        finally:
            self.replay = None


    # ---- on disk: every run over the same texts and base model shares one cache file ------------------
    def fingerprint(self, sequences: Sequence[Sequence[int]]) -> str:
        """Hash of the frozen weights, k and the distinct sequences: equal hashes mean equal states."""
        digest = hashlib.sha256(f"k={self.k}".encode())
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                digest.update(name.encode())
                digest.update(param.detach().cpu().float().numpy().tobytes())
        for seq in sorted(set(map(tuple, sequences))):
            digest.update(torch.tensor(seq, dtype=torch.int32).numpy().tobytes() + b"|")
        return digest.hexdigest()[:24]

    def build_with_disk_cache(self, sequences: Sequence[Sequence[int]], cache_dir: str | Path | None) -> str:
        """`build`, loading the states from `cache_dir` when a run already computed them (else saving them).

        Parallel jobs of a sweep over the same texts compute the file once: the first fills it under a
        lock (ser/locks.py), the others wait and load it.
        """
        if not cache_dir:
            self.build(sequences)
            return "computed"
        path = Path(cache_dir).expanduser() / f"frozen-{self.fingerprint(sequences)}.safetensors"
        filled = fill_once(path, path.exists, lambda: self._compute_and_save(sequences, path))
        if filled is not None:
            return filled
        stored = load_file(str(path))
        ids, lengths, states = stored["ids"].tolist(), stored["lengths"].tolist(), stored["states"]
        self.tuple_output = bool(stored["tuple_output"].item())
        start = 0
        for n, hidden in zip(lengths, states.split(lengths)):
            self.cache[tuple(ids[start:start + n])] = hidden
            start += n
        return f"loaded from {path}"

    def _compute_and_save(self, sequences: Sequence[Sequence[int]], path: Path) -> str:
        self.build(sequences)
        seqs = sorted(set(map(tuple, sequences)))
        tensors = {"ids": torch.tensor([t for s in seqs for t in s], dtype=torch.int64),
                   "lengths": torch.tensor([len(s) for s in seqs], dtype=torch.int64),
                   "states": torch.cat([self.cache[s] for s in seqs]).contiguous(),
                   "tuple_output": torch.tensor(int(self.tuple_output))}
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        save_file(tensors, str(tmp))
        tmp.replace(path)  # atomic: a killed run never leaves a torn cache file
        return f"computed and saved to {path}"


def frozen_prefix(model: nn.Module) -> FrozenPrefix | None:
    return getattr(model, ATTRIBUTE, None)
