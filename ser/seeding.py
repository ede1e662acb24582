"""Random streams derived from (run seed, loop, purpose): no two of them coincide.

`seed + loop` would make seed 0's loop 1 replay seed 1's loop 0. A hash of all three parts gives each
(seed, loop, purpose) its own stream, the same on every rank and after every resume.
"""

from __future__ import annotations

import hashlib

STREAMS = ("shuffle", "torch", "dropout_agreement", "prompts", "sampling", "policy")


def derive_seed(seed: int, loop: int, purpose: str) -> int:
    """A 31-bit seed for one stream; `purpose` names what draws from it (one of STREAMS)."""
    if purpose not in STREAMS:
        raise ValueError(f"unknown random stream {purpose!r}; known: {STREAMS}")
    digest = hashlib.sha256(f"ser:{int(seed)}:{int(loop)}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFF_FFFF
