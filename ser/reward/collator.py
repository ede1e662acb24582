"""Stack chosen then rejected into one padded batch (one forward pass scores both sides)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch



def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, side: str = "right") -> dict[str, torch.Tensor]:
    """Pad to the longest sequence in the batch (dynamic padding) with an explicit attention mask."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(0, len(seq)) if side == "right" else slice(width - len(seq), width)
        ids[row, span] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, span] = 1
    return {"input_ids": ids, "attention_mask": mask}


@dataclass
class PairCollator:
    """Batch of pairs -> one tensor batch: rows [0, B) are chosen, rows [B, 2B) rejected.

    One forward pass scores both sides. Each feature is {"chosen_ids", "rejected_ids", "weight"}.
    """

    pad_id: int
    side: str = "right"

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch = pad_batch([f["chosen_ids"] for f in features] + [f["rejected_ids"] for f in features],
                          self.pad_id, self.side)
        batch["weight"] = torch.tensor([float(f.get("weight", 1.0)) for f in features])
        return batch
