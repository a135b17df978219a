"""Token-bounded batches: every text once, longest first, caps held; encoders keep order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from search.batching import token_batches
from search.encoder import TorchEncoder


def test_batches_cover_every_text_once_longest_first() -> None:
    lengths = [5, 300, 12, 384, 7, 40, 384, 3, 90]
    batches = token_batches(lengths, batch_size=4, max_tokens=512)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    for rows in batches:
        assert len(rows) <= 4
        assert len(rows) == 1 or len(rows) * max(lengths[i] for i in rows) <= 512
    # the two 384-token texts cannot share 512 tokens; the short ones fill a batch of 4
    assert [len(rows) for rows in batches] == [1, 1, 1, 4, 2]


def test_count_only_and_a_text_longer_than_the_budget() -> None:
    assert [len(b) for b in token_batches([9, 9, 9, 9, 9], 2, None)] == [2, 2, 1]
    assert [len(b) for b in token_batches([1000, 1], 8, 256)] == [1, 1]
    assert token_batches([], 8) == []


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"batch_size": 2, "max_tokens": 0}])
def test_bad_sizes_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        token_batches([3, 4], **kwargs)


def test_torch_encoder_token_batches_match_one_big_batch(tiny_model: Path) -> None:
    texts = ["cell " * n for n in (1, 60, 3, 200, 8, 30)] + ["", "What causes cancer?"]
    encoder = TorchEncoder(tiny_model, batch_tokens=64)
    lengths = encoder._lengths(texts)
    assert lengths is not None and max(lengths) == 64  # truncated to the model's window
    assert [len(b) for b in token_batches(lengths, 32, 64)][:2] == [1, 1]
    bounded = encoder.encode(texts, batch_size=32)
    encoder.batch_tokens = None
    whole = encoder.encode(texts, batch_size=32)
    np.testing.assert_allclose(bounded, whole, atol=1e-5)
    assert bounded.dtype == np.float32 and bounded.shape == (len(texts), encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(bounded, axis=1), 1.0, atol=1e-5)
    assert encoder.encode([]).shape == (0, encoder.dim)
