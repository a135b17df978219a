"""bf16 is used exactly where the CPU has bf16 units and the model passes its check
against fp32 (`search.devices`, `search.precision`), forced each way: the CPU flags are
set in the test, the models and the check are real."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import search.devices as devices
import search.precision as precision
from search.devices import bf16_units, resolve_precision
from search.encoder import TorchEncoder, load_encoder

WITH_UNITS = frozenset({"avx2", "avx512f", "avx512_bf16"})
WITHOUT = frozenset({"avx2", "avx512f"})


def test_units_and_precision_follow_the_flags() -> None:
    assert bf16_units(WITH_UNITS) == "avx512_bf16"
    assert bf16_units(WITHOUT | {"amx_bf16", "amx_tile"}) == "amx_bf16"
    assert bf16_units(WITHOUT) is None
    assert resolve_precision("auto", "cpu", WITH_UNITS) == "bf16"
    assert resolve_precision("auto", "cpu", WITHOUT) == "fp32"
    assert resolve_precision("fp32", "cpu", WITH_UNITS) == "fp32"
    assert resolve_precision("bf16", "cpu", WITHOUT) == "bf16"  # asked for: given
    with pytest.raises(ValueError, match="choose one of auto, fp32, bf16"):
        resolve_precision("fp16", "cpu", WITH_UNITS)


@pytest.fixture
def flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """Each test sets the CPU flags it wants; checks are cached in a fresh folder."""
    monkeypatch.setenv("DISTILSEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DISTILSEARCH_PRECISION", raising=False)
    return monkeypatch


def _dtype(model: torch.nn.Module) -> torch.dtype:
    return next(iter(model.parameters())).dtype


def test_the_encoder_takes_bf16_only_with_units_and_a_passed_check(
    flags: pytest.MonkeyPatch, tiny_model: Path
) -> None:
    flags.setattr(devices, "cpu_flags", lambda: WITHOUT)
    encoder = load_encoder(tiny_model, backend="torch")
    assert isinstance(encoder, TorchEncoder) and encoder.precision == "fp32"
    assert _dtype(encoder.model) == torch.float32
    flags.setattr(devices, "cpu_flags", lambda: WITH_UNITS)
    encoder = load_encoder(tiny_model, backend="torch")
    assert isinstance(encoder, TorchEncoder) and encoder.precision == "bf16"
    assert _dtype(encoder.model) == torch.bfloat16
    vecs = encoder.encode(["a short text", "another one, a little longer than the first"])
    assert vecs.dtype.name == "float32"
    assert abs(float((vecs**2).sum(axis=1).max()) - 1) < 1e-5  # unit rows in float32
    # asked for fp32 (the setting users have): fp32 whatever the CPU has
    flags.setenv("DISTILSEARCH_PRECISION", "fp32")
    assert load_encoder(tiny_model, backend="torch").precision == "fp32"  # type: ignore[attr-defined]


def test_a_failed_check_keeps_fp32_unless_bf16_is_asked_for(
    flags: pytest.MonkeyPatch, tiny_model: Path
) -> None:
    flags.setattr(devices, "cpu_flags", lambda: WITH_UNITS)
    flags.setattr(precision, "MIN_COSINE_MEAN", 1.01)  # no model can pass this
    model = TorchEncoder(tiny_model).model
    check, bf16 = precision.choose_precision(model, "tiny", requested="auto")
    assert check.precision == "fp32" and bf16 is None
    assert check.reason.startswith("failed:") and check.cosine_mean is not None
    assert _dtype(model) == torch.float32  # the model checked is not touched
    check, bf16 = precision.choose_precision(model, "tiny", requested="bf16")
    assert check.precision == "bf16" and bf16 is not None and _dtype(bf16) == torch.bfloat16
    # the verdict is cached: the same check again does not encode anything
    flags.setattr(precision, "measure_bf16", None)
    again, _ = precision.choose_precision(model, "tiny", requested="auto")
    assert again == check or again.precision == "fp32"


def test_a_retrieval_check_can_refuse_bf16(flags: pytest.MonkeyPatch, tiny_model: Path) -> None:
    flags.setattr(devices, "cpu_flags", lambda: WITH_UNITS)
    model = TorchEncoder(tiny_model).model
    calls: list[str] = []

    def judge(encoder: object) -> float:  # bf16 loses 0.01 nDCG@10: more than allowed
        precision_name = getattr(encoder, "precision", "fp32")
        calls.append(precision_name)
        return 0.80 if precision_name == "fp32" else 0.79

    check, bf16 = precision.choose_precision(model, "tiny", judge=judge, key="judged")
    assert calls == ["fp32", "bf16"]
    assert check.precision == "fp32" and bf16 is None
    assert (check.ndcg_fp32, check.ndcg_bf16) == (0.8, 0.79)
