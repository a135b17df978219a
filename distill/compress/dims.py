"""Fewer dimensions: append a PCA projection to a student and save it as a new folder.

The projection is a sentence-transformers ``Dense`` module (identity activation)
followed by ``Normalize``, so the reduced model loads and exports (ONNX) like any
other. It is fitted on the model's own unit embeddings of sample texts.

PCA is uncentred by default (truncated SVD of the unit vectors): that is the best
rank-``dim`` approximation of their Gram matrix, i.e. of the inner products that
retrieval ranks by. Centring instead drops the direction all embeddings share,
which carries little ranking signal but a lot of energy; it is an option
(``center=True``, folded into the Dense bias) and measured in ``bench/compress.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distill.compress.export import check_texts, cosines
from distill.compress.quantize import Evaluation
from search.assets import model_hash
from search.atomic import staged_folder

logger = logging.getLogger(__name__)

__all__ = ["append_pca", "pca_projection", "reduce_dims", "similarity_agreement"]

_NEIGHBOURS = 10


def pca_projection(
    vecs: np.ndarray, dim: int, *, center: bool = False
) -> tuple[np.ndarray, np.ndarray | None, float]:
    """The top-`dim` principal directions of embeddings.

    Args:
        vecs: float (n, d) embeddings, n >= dim (normalised, as models output them).
        dim: Output dimension, 1 <= dim < d.
        center: Subtract the mean first (its projection becomes a bias).

    Returns:
        (weight float32 (dim, d) with orthonormal rows, sign-fixed so each row's
        largest coefficient is positive; bias float32 (dim,) = -weight @ mean, or None
        when uncentred; share of the (centred) energy kept, in [0, 1]).

    Raises:
        ValueError: `dim` is out of range or there are fewer rows than `dim`.
    """
    n, d = vecs.shape
    if not 1 <= dim < d:
        raise ValueError(f"dim must be in [1, {d - 1}] for {d}-d embeddings, got {dim}")
    if n < dim:
        raise ValueError(f"PCA to {dim} dims needs at least {dim} texts, got {n}; pass more texts")
    x = vecs.astype(np.float64)
    mean = x.mean(axis=0) if center else np.zeros(d)
    _, sing, vt = np.linalg.svd(x - mean, full_matrices=False)
    weight = vt[:dim]
    signs = np.sign(weight[np.arange(dim), np.abs(weight).argmax(axis=1)])
    weight = weight * signs[:, None]
    energy = float((sing[:dim] ** 2).sum() / max((sing**2).sum(), 1e-300))
    bias = (-weight @ mean).astype(np.float32) if center else None
    return weight.astype(np.float32), bias, energy


def similarity_agreement(before: np.ndarray, after: np.ndarray) -> dict[str, float]:
    """How well reduced embeddings keep the similarity structure of the originals.

    Args:
        before: float (n, d) unit embeddings from the source model.
        after: float (n, k) unit embeddings of the same texts from the reduced model.

    Returns:
        ``pairwise_cosine_corr`` (Pearson, over pairs i < j), ``pairwise_cosine_mae``
        and, when n > 10, ``neighbour_overlap@10`` (mean share of each text's 10
        nearest neighbours kept).
    """
    a, b = before @ before.T, after @ after.T
    upper = np.triu_indices(len(a), k=1)
    out = {
        "pairwise_cosine_corr": float(np.corrcoef(a[upper], b[upper])[0, 1]),
        "pairwise_cosine_mae": float(np.abs(a[upper] - b[upper]).mean()),
    }
    if len(a) > _NEIGHBOURS:
        np.fill_diagonal(a, -np.inf)
        np.fill_diagonal(b, -np.inf)
        top_a = np.argsort(-a, axis=1)[:, :_NEIGHBOURS]
        top_b = np.argsort(-b, axis=1)[:, :_NEIGHBOURS]
        kept = [len(set(x) & set(y)) / _NEIGHBOURS for x, y in zip(top_a, top_b, strict=True)]
        out[f"neighbour_overlap@{_NEIGHBOURS}"] = float(np.mean(kept))
    return out


def reduce_dims(
    folder: Path,
    out: Path,
    dim: int,
    texts: Sequence[str],
    *,
    center: bool = False,
    heldout: float = 0.2,
    evaluate: Evaluation | None = None,
    overwrite: bool = False,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Save a copy of the model in `folder` whose output is PCA-reduced to `dim`.

    The new folder's modules are the source's, then ``Normalize`` (unless already
    last), ``Dense(d -> dim, identity)`` and ``Normalize``: it outputs unit vectors of
    length `dim`.

    Args:
        folder: Source sentence-transformers folder (not modified).
        out: New folder to write (atomically: temp folder + rename).
        dim: Output dimension, smaller than the model's.
        texts: Sample texts; the first ``1 - heldout`` share fits the PCA (at least
            `dim` of them), the rest measures how similarities change.
        center: Centre before PCA (see the module doc); the default keeps inner products.
        heldout: Share of `texts` kept out of the fit for the check.
        evaluate: Optional retrieval evaluation (e.g. `distill.compress.quantize.retrieval_metric`)
            run on the source and the reduced model with the torch backend.
        overwrite: Replace `out` when it exists.
        batch_size: Encoding batch size.

    Returns:
        Report: ``path``, ``dim``, ``source_dim``, ``center``, ``energy_kept``,
        ``num_fit_texts``, ``num_heldout_texts``, similarity agreement on the held-out
        texts (`similarity_agreement`), ``fit_cosine`` (reduced model vs the projection
        applied by hand, a self-check), ``model_hash`` and, with `evaluate`,
        ``source_score``/``reduced_score``/``relative_drop``.

    Raises:
        ValueError: bad `dim`, too few texts, or `out` exists without `overwrite`.
    """
    checked = check_texts(texts, "reduce_dims")
    n_fit = _validate(folder, out, dim, len(checked), heldout=heldout, overwrite=overwrite)
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" bars are noise here
    t0 = time.perf_counter()
    model = SentenceTransformer(str(folder), device="cpu", local_files_only=True).eval()
    report = {"path": str(out), **append_pca(model, checked, dim, n_fit, center, batch_size)}
    _save(model, out)
    report["model_hash"] = model_hash(out)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    if evaluate is not None:
        report.update(_scores(evaluate, folder, out))
    logger.info(
        "reduced %s to %d dims in %s: energy kept %.3f", folder, dim, out, report["energy_kept"]
    )
    return report


def _validate(
    folder: Path, out: Path, dim: int, n_texts: int, *, heldout: float, overwrite: bool
) -> int:
    """Check `reduce_dims`' arguments; return how many texts fit the PCA."""
    if not 0 <= heldout < 1:
        raise ValueError(f"heldout must be in [0, 1), got {heldout}")
    if out.exists() and not overwrite:
        raise ValueError(f"{out} exists; pass overwrite=True or choose another folder")
    if out.resolve() == folder.resolve():
        raise ValueError(f"out must be a new folder, not the source {folder}")
    n_fit = n_texts - int(heldout * n_texts)
    if n_fit < dim:
        raise ValueError(
            f"PCA to {dim} dims needs at least {dim} fitting texts, got {n_fit} "
            f"({n_texts} texts, {heldout:.0%} held out); pass more texts"
        )
    if n_fit < 4 * dim:
        logger.warning(
            "PCA to %d dims from %d texts may fit noise; %d or more texts are safer",
            dim,
            n_fit,
            4 * dim,
        )
    return n_fit


def append_pca(
    model: Any, texts: list[str], dim: int, n_fit: int, center: bool, batch_size: int
) -> dict[str, Any]:
    """Fit a PCA to `model`'s embeddings of ``texts[:n_fit]`` and append it to `model`.

    `model` (a `SentenceTransformer`) is changed in place: ``Normalize`` (unless
    already last), ``Dense(d -> dim, identity)`` and ``Normalize`` are appended.

    Returns:
        The report entries of `reduce_dims` that describe the projection: ``dim``,
        ``source_dim``, ``center``, ``energy_kept``, ``num_fit_texts``,
        ``num_heldout_texts``, ``fit_cosine`` and the held-out similarity agreement.
    """
    import torch
    from sentence_transformers.sentence_transformer import modules

    vecs = _encode(model, texts, batch_size)
    source_dim = vecs.shape[1]
    weight, bias, energy = pca_projection(vecs[:n_fit], dim, center=center)
    if type(model[-1]).__name__ != "Normalize":
        model.append(modules.Normalize())
    model.append(
        modules.Dense(
            source_dim,
            dim,
            bias=center,
            activation_function=torch.nn.Identity(),
            init_weight=torch.from_numpy(weight),
            init_bias=None if bias is None else torch.from_numpy(bias),
        )
    )
    model.append(modules.Normalize())
    reduced = _encode(model, texts, batch_size)
    by_hand = vecs @ weight.T + (0 if bias is None else bias)
    entries: dict[str, Any] = {
        "dim": dim,
        "source_dim": source_dim,
        "center": center,
        "energy_kept": round(energy, 5),
        "num_fit_texts": n_fit,
        "num_heldout_texts": len(texts) - n_fit,
        "fit_cosine": round(float(cosines(reduced, by_hand).mean()), 6),
    }
    if len(texts) - n_fit >= 2:
        agreement = similarity_agreement(vecs[n_fit:], reduced[n_fit:])
        entries.update({k: round(v, 5) for k, v in agreement.items()})
    return entries


def _encode(model: Any, texts: list[str], batch_size: int) -> np.ndarray:
    """float32 (n, d) unit embeddings of `texts` by a `SentenceTransformer`."""
    vecs = model.encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.asarray(vecs, dtype=np.float32)


def _save(model: Any, out: Path) -> None:
    """Save `model` as folder `out`, replacing it whole and atomically."""
    with staged_folder(out) as tmp:
        model.save(str(tmp))


def _scores(evaluate: Evaluation, folder: Path, out: Path) -> dict[str, float]:
    """`evaluate` of the source and the reduced model (torch backend), and the drop."""
    from search.encoder import TorchEncoder

    source_score = evaluate(TorchEncoder(folder))
    reduced_score = evaluate(TorchEncoder(out))
    return {
        "source_score": round(source_score, 5),
        "reduced_score": round(reduced_score, 5),
        "relative_drop": round((source_score - reduced_score) / max(source_score, 1e-12), 5),
    }
