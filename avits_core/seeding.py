"""Deterministic seeds.

The seed of candidate ``i`` of prompt ``prompt_id`` in a run with seed ``run_seed`` is a 63-bit
integer taken from BLAKE2b over the three values. Two prompts never share a seed list, and a seed
does not depend on how many candidates or prompts a run has (so BoN@k is a prefix of BoN@N).
"""

from __future__ import annotations

import hashlib


def derive_seed(run_seed: int, prompt_id: str, index: int, salt: str = "noise") -> int:
    """63-bit seed for candidate ``index`` of ``prompt_id`` (``salt`` separates independent streams)."""
    h = hashlib.blake2b(f"{salt}|{int(run_seed)}|{prompt_id}|{int(index)}".encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)


def candidate_seeds(run_seed: int, prompt_id: str, n: int, start: int = 0) -> list[int]:
    return [derive_seed(run_seed, prompt_id, i) for i in range(start, start + n)]
