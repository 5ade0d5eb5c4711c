"""Padding and prefix rules shared by the sampler, the collator and the learner.

Every jitted program compiles once per distinct shape, so lengths are rounded up to
buckets (`bucket`) and shared-prefix lengths rounded down to multiples
(`shared_prefix`): a run then sees a few distinct shapes, hence a few compilations.

Imports: numpy only; never jax.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bucket(n: int, rule: int | str = "pow2", *, minimum: int = 1) -> int:
    """Padded size for `n`: the next multiple of `rule` (at least `rule`), or with
    "pow2" the next power of two, doubling up from `minimum` (the sampler uses 16 for
    lengths, 1 for rows). Bucketing bounds how many distinct shapes (hence jit
    compilations) a run sees."""
    if n < 0:
        raise ValueError(f"length must be >= 0, got {n}")
    if rule == "pow2":
        b = minimum
        while b < n:
            b *= 2
        return b
    if isinstance(rule, int) and not isinstance(rule, bool) and rule > 0:
        return max(rule, -(-n // rule) * rule)
    raise ValueError(f"bucket must be a positive int or 'pow2', got {rule!r}")


def leading_rows(tokens: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    """Each non-empty row's leading run of real tokens (right-padded [B, T] arrays);
    all-padding rows (dropped episodes) are left out."""
    tokens, mask = np.asarray(tokens), np.asarray(mask)
    out = []
    for t, m in zip(tokens, mask):
        if m.any():
            out.append(t[: m.shape[0] if m.all() else int(np.argmin(m))])
    return out


def shared_prefix(seqs: Sequence[Sequence[int]], multiple: int = 32, *, min_rows: int = 2,
                  width: int | None = None) -> int:
    """Length of the prefix all `seqs` share, rounded down to `multiple` (few distinct
    lengths, hence few compilations), leaving each at least one token of its own; 0
    when shorter than `multiple`, for fewer than `min_rows` sequences, or `multiple` < 2.

    "Of its own" is bounded by the shortest sequence (the sampler: every row must
    prefill at least one token after the prefix), or with `width` by the padded width
    of the rows (the learner, `shared_prefix(leading_rows(tokens, mask), min_rows=1,
    width=T)`: a row may end on the prefix, its own part being padding).

    A shared system prompt, tool descriptions, few-shot examples or one GRPO group's
    question are then computed once instead of once per row."""
    if len(seqs) < max(min_rows, 1) or multiple < 2:
        return 0
    first = np.asarray(seqs[0])
    shortest = min(len(s) for s in seqs)
    n = shortest
    for s in seqs[1:]:
        diff = np.flatnonzero(np.asarray(s[:n]) != first[:n])
        if diff.size:
            n = int(diff[0])
    cap = shortest - 1 if width is None else width - 1
    return min(n, cap) // multiple * multiple
