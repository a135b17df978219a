"""Export a sentence-transformers folder to one ONNX graph: tokens in, unit vectors out.

The graph holds transformer, pooling (as the folder's ``Pooling`` config says), any
``Dense`` heads and L2 normalisation, so `search.onnx_encoder.OnnxEncoder` only
tokenises. It is written to ``<folder>/onnx/model.onnx`` after its embeddings are
checked against torch's on real texts; an export that disagrees is refused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from search.assets import model_hash
from search.atomic import atomic_write_json
from search.onnx_encoder import (
    FP32_FILE,
    INPUT_NAMES,
    INT8_FILE,
    MANIFEST,
    ONNX_DIR,
    OnnxEncoder,
    read_onnx_manifest,
)
from search.types import DistilsearchError

logger = logging.getLogger(__name__)

__all__ = ["CompressionError", "export_onnx"]

MIN_EXPORT_COSINE = 0.999
POOLING_MODES = ("cls", "mean", "max", "mean_sqrt_len_tokens")
_HEADS = ("Dense", "Normalize", "Dropout", "LayerNorm")  # allowed after pooling
_OPSET = 17


class CompressionError(DistilsearchError):
    """An export, quantization or reduction failed its quality check or cannot be made."""


def pool_tokens(hidden: Any, mask: Any, modes: Sequence[str]) -> Any:
    """Pool token embeddings into one vector per text, as sentence-transformers does.

    Args:
        hidden: float tensor (batch, seq, hidden), the transformer's last hidden state.
        mask: int tensor (batch, seq), 1 for real tokens and 0 for padding.
        modes: Pooling modes, concatenated in this order (``cls``, ``mean``, ``max``,
            ``mean_sqrt_len_tokens``).

    Returns:
        float tensor (batch, hidden * len(modes)), not normalised.
    """
    import torch

    weights = mask.unsqueeze(-1).to(hidden.dtype)
    counts = weights.sum(dim=1).clamp(min=1e-9)
    parts = []
    for mode in modes:
        if mode == "cls":
            parts.append(hidden[:, 0])
        elif mode == "mean":
            parts.append((hidden * weights).sum(dim=1) / counts)
        elif mode == "mean_sqrt_len_tokens":
            parts.append((hidden * weights).sum(dim=1) / counts.sqrt())
        elif mode == "max":
            masked = torch.where(weights > 0, hidden, torch.full_like(hidden, -1e9))
            parts.append(masked.max(dim=1).values)
        else:
            raise CompressionError(
                f"pooling mode {mode!r} has no ONNX export here; supported: "
                f"{', '.join(POOLING_MODES)}"
            )
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def _check_modules(modules: list[Any], kinds: list[str]) -> list[str]:
    """Raise CompressionError unless the modules are Transformer, Pooling, then heads
    on the pooled vector that the export supports; return the pooling modes."""
    if len(modules) < 2 or kinds[0] != "Transformer" or kinds[1] != "Pooling":
        raise CompressionError(
            f"cannot export modules {kinds}: expected Transformer, Pooling, then any of "
            f"{', '.join(_HEADS)}; use the torch backend for this model"
        )
    odd = [k for k in kinds[2:] if k not in _HEADS]
    if odd:
        raise CompressionError(
            f"cannot export modules {odd} after pooling (supported: {', '.join(_HEADS)}); "
            "use the torch backend for this model"
        )
    rewired = [
        k
        for m, k in zip(modules[2:], kinds[2:], strict=True)
        if getattr(m, "module_input_name", "sentence_embedding") != "sentence_embedding"
        or getattr(m, "module_output_name", "sentence_embedding") != "sentence_embedding"
    ]
    if rewired:
        raise CompressionError(
            f"modules {rewired} read or write features other than sentence_embedding; "
            "the ONNX export supports only heads on the pooled vector — use the torch backend"
        )
    pooling = modules[1].pooling_mode
    modes = [pooling] if isinstance(pooling, str) else list(pooling)
    bad = [m for m in modes if m not in POOLING_MODES]
    if bad:
        raise CompressionError(
            f"pooling mode {bad} has no ONNX export here; supported: {', '.join(POOLING_MODES)}"
        )
    return modes


def _sentence_graph(model: Any) -> tuple[Any, list[str], dict[str, Any]]:
    """Wrap a loaded `SentenceTransformer` as a module mapping token tensors to unit vectors.

    Returns:
        (torch module taking the input names in order, those names, facts for the manifest).
    """
    import inspect

    import torch

    modules = list(model)
    kinds = [type(m).__name__ for m in modules]
    modes = _check_modules(modules, kinds)
    transformer = modules[0].auto_model
    accepted = inspect.signature(transformer.forward).parameters
    wanted = getattr(model.tokenizer, "model_input_names", list(INPUT_NAMES))
    names = [n for n in INPUT_NAMES if n in accepted and (n in wanted or n == "attention_mask")]
    # Dropout is the identity at inference; a Normalize before a Dense matters.
    heads = [(m, k) for m, k in zip(modules[2:], kinds[2:], strict=True) if k != "Dropout"]

    class SentenceGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer
            self.heads = torch.nn.ModuleList([m for m, _ in heads])
            self.kinds = [k for _, k in heads]

        def forward(self, *tensors: Any) -> Any:
            inputs = dict(zip(names, tensors, strict=True))
            hidden = self.transformer(**inputs, return_dict=True).last_hidden_state
            emb = pool_tokens(hidden, inputs["attention_mask"], modes)
            for head, kind in zip(self.heads, self.kinds, strict=True):
                if kind == "Normalize":
                    emb = torch.nn.functional.normalize(emb, p=2.0, dim=-1)
                else:
                    emb = head({"sentence_embedding": emb})["sentence_embedding"]
            return torch.nn.functional.normalize(emb, p=2.0, dim=-1)

    facts = {"pooling": modes, "heads": kinds[2:], "inputs": names}
    return SentenceGraph().eval(), names, facts


@contextlib.contextmanager
def eager_attention(transformer: Any) -> Iterator[str]:
    """Trace `transformer` (a Hugging Face model) with plain matmul-softmax attention,
    restoring its own attention afterwards.

    Traced through torch's SDPA, each layer's attention carries extra masking ops
    (IsNaN, Where) that onnxruntime neither fuses nor runs fast, so the eager graph
    encodes faster (docs/compression.md); both give the same vectors (the export
    check compares with torch).

    Yields:
        The attention implementation the graph is traced with.
    """
    config = transformer.config
    before = getattr(config, "_attn_implementation", None)
    try:
        transformer.set_attn_implementation("eager")
    except (AttributeError, ValueError) as exc:  # no eager attention, or older transformers
        logger.warning(
            "exporting with the model's own attention (%s), maybe slower: %s", before, exc
        )
    try:
        yield str(getattr(config, "_attn_implementation", None) or "default")
    finally:
        if before and getattr(config, "_attn_implementation", None) != before:
            transformer.set_attn_implementation(before)


def _export(model: Any, path: Path, opset: int) -> dict[str, Any]:
    import torch

    graph, names, facts = _sentence_graph(model)  # checks the modules first
    # A padded batch of two lengths, so the trace keeps the attention mask.
    sample = model.tokenizer(
        ["a", "an example sentence, long enough to need padding"],
        padding=True,
        return_tensors="pt",
    )
    args = tuple(sample[n] for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["sentence_embedding"] = {0: "batch"}
    with (
        eager_attention(graph.transformer) as attention,
        warnings.catch_warnings(),
        torch.no_grad(),
    ):
        # The TorchScript exporter is deprecated but needs no onnxscript and traces
        # transformers 5 models cleanly; its tracer warnings are about shape checks.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            args,
            str(path),
            input_names=names,
            output_names=["sentence_embedding"],
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    facts["attention"] = attention
    _consolidate(path)
    return facts


def _consolidate(path: Path) -> None:
    """Gather weights the exporter wrote as many external files (models > 2 GB) into one."""
    extra = [p for p in path.parent.iterdir() if p != path]
    if not extra:
        return
    import onnx

    proto = onnx.load(str(path), load_external_data=True)
    for p in extra:
        p.unlink()
    onnx.save_model(
        proto,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=path.name + ".data",
    )


def files_mb(paths: Sequence[Path]) -> float:
    """Total size of existing files, in MiB."""
    return sum(p.stat().st_size for p in paths if p.is_file()) / 2**20


def onnx_files(folder: Path, file_name: str) -> list[Path]:
    """An ONNX model file and its external-data file, where there is one."""
    base = folder / ONNX_DIR / file_name
    return [base, base.with_name(base.name + ".data")]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (n, d) arrays."""
    na = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(na, 1e-12)


def timed_encode(
    encode: Callable[[list[str]], Any], texts: list[str], repeats: int = 3
) -> tuple[np.ndarray, float]:
    """(vectors, texts per second) of the fastest of `repeats` calls after a warm-up.

    The warm-up runs the same batches, so whatever an encoder makes on first use
    (an ONNX encoder's one-thread session for parallel batches) is not timed; the best
    of several calls damps the noise of a few seconds' measurement on a shared CPU.
    """
    encode(texts)
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        vecs = encode(texts)
        best = min(best, time.perf_counter() - t0)
    return np.asarray(vecs, dtype=np.float32), len(texts) / best


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write ``onnx/manifest.json`` atomically, readable by all like the model files."""
    path = folder / ONNX_DIR / MANIFEST
    atomic_write_json(path, manifest)
    path.chmod(0o644)


def update_manifest(folder: Path, **entries: Any) -> dict[str, Any]:
    """Merge `entries` into ``onnx/manifest.json``; return the result."""
    manifest = read_onnx_manifest(folder)
    manifest.update(entries)
    write_manifest(folder, manifest)
    return manifest


def check_texts(texts: Sequence[str], what: str) -> list[str]:
    """The non-empty texts of `texts`; `ValueError` when there are none."""
    if isinstance(texts, str):
        raise ValueError(f"{what} needs a list of texts, got one string")
    kept = [t for t in texts if t.strip()]
    if not kept:
        raise ValueError(f"{what} needs at least one non-empty text to check the result on")
    return kept


def export_onnx(
    folder: Path,
    texts: Sequence[str],
    *,
    min_cosine: float = MIN_EXPORT_COSINE,
    opset: int = _OPSET,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Export a sentence-transformers folder to ``<folder>/onnx/model.onnx``.

    The graph maps ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the
    model takes them), int64 (batch, sequence) with both axes dynamic, to
    ``sentence_embedding``, float32 (batch, dim), L2-normalised. Before it is published
    it is run with onnxruntime on `texts` and compared with torch. A previous
    ``model_int8.onnx`` is removed (it was made from the previous graph).

    Args:
        folder: A saved sentence-transformers model folder (written into).
        texts: Texts to check the export on (a few dozen real ones are plenty).
        min_cosine: Refuse the export when the mean cosine between ONNX and torch
            embeddings of `texts` is below this.
        opset: ONNX opset version.
        batch_size: Batch size for both encoders in the check.

    Returns:
        Report: ``cosine_mean``/``cosine_min`` to torch, ``size_mb``, ``torch_docs_per_s``,
        ``onnx_docs_per_s``, ``speedup``, ``export_seconds``, ``path`` and graph facts.

    Raises:
        CompressionError: the model has modules that cannot be exported, or the export
            disagrees with torch (the message gives the cosines); nothing is written then.
    """
    checked = check_texts(texts, "export_onnx")
    from sentence_transformers import SentenceTransformer

    t0 = time.perf_counter()
    model = SentenceTransformer(str(folder), device="cpu", local_files_only=True).eval()
    report, window = _export_checked(model, folder, checked, opset, batch_size, min_cosine, t0)
    _record_export(folder, report, window)
    logger.info(
        "exported %s: cosine %.6f, %.1f MB, %.1fx torch speed",
        report["path"],
        report["cosine_mean"],
        report["size_mb"],
        report["speedup"],
    )
    return report


def _export_checked(
    model: Any,
    folder: Path,
    texts: list[str],
    opset: int,
    batch_size: int,
    min_cosine: float,
    t0: float,
) -> tuple[dict[str, Any], int]:
    """Export into a scratch folder, compare with torch, and move the files in only
    when they agree; return the report and the model's token window."""
    tmp = folder / ONNX_DIR / f".export-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        facts = _export(model, tmp / FP32_FILE, opset)
        export_seconds = round(time.perf_counter() - t0, 1)
        candidate = OnnxEncoder(folder, model_file=tmp / FP32_FILE)
        report: dict[str, Any] = {
            "path": str(folder / ONNX_DIR / FP32_FILE),
            **compare_with_torch(model, candidate, texts, batch_size),
            "size_mb": round(files_mb(list(tmp.iterdir())), 1),
            "export_seconds": export_seconds,
            "opset": opset,
            "dim": candidate.dim,
            **facts,
        }
        _check_agreement(report, folder, min_cosine)
        _move_in(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report, int(model.max_seq_length or candidate.max_seq_length)


def compare_with_torch(
    model: Any, candidate: OnnxEncoder, texts: list[str], batch_size: int
) -> dict[str, Any]:
    """How an ONNX export agrees with its `SentenceTransformer` on `texts`, and their speeds.

    Returns:
        ``cosine_mean``/``cosine_min`` between the two models' embeddings,
        ``num_texts``, ``torch_docs_per_s``, ``onnx_docs_per_s`` and ``speedup``.
    """
    ref, torch_speed = timed_encode(
        lambda t: model.encode(
            t,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        ),
        texts,
    )
    vecs, onnx_speed = timed_encode(lambda t: candidate.encode(t, batch_size=batch_size), texts)
    cos = cosines(vecs, ref)
    return {
        "cosine_mean": round(float(cos.mean()), 6),
        "cosine_min": round(float(cos.min()), 6),
        "num_texts": len(texts),
        "torch_docs_per_s": round(torch_speed, 1),
        "onnx_docs_per_s": round(onnx_speed, 1),
        "speedup": round(onnx_speed / torch_speed, 2),
    }


def _check_agreement(report: dict[str, Any], folder: Path, min_cosine: float) -> None:
    if report["cosine_mean"] < min_cosine:
        raise CompressionError(
            f"ONNX export of {folder} disagrees with torch: mean cosine "
            f"{report['cosine_mean']:.6f} (min {report['cosine_min']:.6f}) over "
            f"{report['num_texts']} texts, need >= {min_cosine}; nothing was written. "
            "Check the model's modules or export with another opset"
        )


def _move_in(tmp: Path, folder: Path) -> None:
    """Replace the fp32 model by the export in `tmp`; the int8 one made from the old
    graph goes. The data file moves first and the graph last, so the graph never
    points at data that is not there yet."""
    for stale in onnx_files(folder, FP32_FILE) + onnx_files(folder, INT8_FILE):
        stale.unlink(missing_ok=True)
    for path in sorted(tmp.iterdir(), key=lambda p: p.suffix == ".onnx"):
        os.replace(path, folder / ONNX_DIR / path.name)


def _record_export(folder: Path, report: dict[str, Any], max_seq_length: int) -> None:
    """Write what the fp32 export is into ``onnx/manifest.json``, dropping the int8 entry."""
    manifest = read_onnx_manifest(folder)
    manifest.pop(INT8_FILE, None)
    manifest.update(
        model_hash=model_hash(folder),
        dim=report["dim"],
        max_seq_length=max_seq_length,
        inputs=report["inputs"],
        pooling=report["pooling"],
        heads=report["heads"],
        attention=report["attention"],
        opset=report["opset"],
        versions=_versions(),
    )
    manifest[FP32_FILE] = {"cosine_to_torch": report["cosine_mean"], "size_mb": report["size_mb"]}
    write_manifest(folder, manifest)


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
