"""Batches of texts bounded by tokens as well as by count.

A transformer's activations grow with batch × tokens (its attention scores with
batch × tokens²), so a batch of 32 long documents works far outside the CPU caches
and encodes fewer documents per second than smaller batches of them do, even
without padding. Short texts still go in full batches: a batch of 32 queries is a
few hundred tokens, and small calls cost more in per-call overhead than they save.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_BATCH_TOKENS = 512
"""Default token budget of one batch (rows × longest row); see `token_batches`."""


def token_batches(
    lengths: Sequence[int], batch_size: int, max_tokens: int | None = DEFAULT_BATCH_TOKENS
) -> list[np.ndarray]:
    """Split texts into batches, longest first, for padded encoding.

    Args:
        lengths: Length of each text in tokens (after truncation).
        batch_size: Most texts in one batch.
        max_tokens: Most padded tokens in one batch (texts × its longest text); a
            text longer than this gets a batch of its own. None: count only.

    Returns:
        Index arrays (int64) into `lengths`, covering each index once; texts in a
        batch are sorted by length, longest first, so padding stays small.

    Raises:
        ValueError: batch_size or max_tokens below 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1 or None, got {max_tokens}")
    order = np.argsort([-n for n in lengths], kind="stable")
    batches, start = [], 0
    while start < len(order):
        longest = max(1, int(lengths[order[start]]))
        size = batch_size if max_tokens is None else min(batch_size, max(1, max_tokens // longest))
        batches.append(order[start : start + size])
        start += size
    return batches
