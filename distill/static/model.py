"""Static students: model2vec's distillation of a teacher, adapted to a corpus.

1. **Plain** (`plain_model`): `model2vec.distill.distill_from_model` over the teacher:
   one forward pass per token of the teacher's vocabulary, PCA to ``dims``, Zipf-law
   SIF weighting. It depends on the teacher and those options only, so it is cached
   under ``cache_dir()/static``.
2. **Adapt** (`adapt`, tokenlearn's recipe): the teacher's embeddings of the training
   texts, reduced to ``dims`` by PCA and rotated onto the plain model's space
   (`distill.targets.fit_target_map`), are the targets of model2vec's trainer (cosine
   or MSE, no head): the token vectors learn what the teacher makes of this corpus.
   Early stopping on the held-out texts.
3. **Re-weight** (`reweight`) by the corpus's own token frequencies,
   ``a / (a + p(token))``.

The job that makes, gates and saves them is `distill.static.job`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from distill.static_options import StaticOptions
from search.assets import cache_dir
from search.atomic import staged_folder
from search.encoder import TorchEncoder
from search.static_encoder import StaticEncoder


def plain_cache_folder(teacher_hash: str, options: StaticOptions) -> Path:
    """Where the plain distillation of a teacher with these options is cached."""
    import model2vec

    key = json.dumps(
        [teacher_hash, options.dims, options.sif, model2vec.__version__], sort_keys=True
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / "static" / f"{teacher_hash}-{digest}"


def plain_model(teacher: TorchEncoder, options: StaticOptions, device: str) -> tuple[Any, bool]:
    """model2vec's distillation of `teacher` (float32 vectors), from the cache when
    there; returns (StaticModel, whether it came from the cache)."""
    from model2vec import StaticModel

    folder = plain_cache_folder(teacher.model_hash, options)
    if (folder / "model.safetensors").is_file():
        return _windowed(StaticModel.from_pretrained(folder, force_download=False), options), True
    model = distil(teacher.model, options, device)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with staged_folder(folder) as tmp:
        model.save_pretrained(tmp)
    return _windowed(model, options), False


def distil(st_model: Any, options: StaticOptions, device: str = "cpu") -> Any:
    """model2vec's distillation of a loaded sentence-transformers model.

    Token vectors are the teacher's mean-pooled output for each token of its own
    tokenizer's vocabulary (``[unused]`` tokens dropped), reduced by PCA to
    ``options.dims`` (no reduction when the teacher is narrower) and weighted by
    model2vec's Zipf-law SIF weights (``options.sif``; 0: none). float32.

    Args:
        st_model: A `SentenceTransformer` whose first module is a transformer.
        options: The static options.
        device: Torch device of the forward passes.
    """
    from model2vec.distill import distill_from_model

    transformer = st_model[0]
    backbone = getattr(transformer, "auto_model", None)
    if backbone is None:
        raise ValueError(
            f"the teacher's first module is {type(transformer).__name__}, not a transformer; "
            "distil a static student from a transformer sentence-transformers model"
        )
    width = int(backbone.config.hidden_size)
    return distill_from_model(
        model=backbone,
        tokenizer=st_model.tokenizer,
        device=device,
        pca_dims=min(options.dims, width),
        sif_coefficient=options.sif or None,
        quantize_to="float32",
    )


def _windowed(model: Any, options: StaticOptions) -> Any:
    return _rebuild(model, np.asarray(model.embedding, dtype=np.float32), options.max_tokens)


def _rebuild(model: Any, vectors: np.ndarray, max_length: int | None) -> Any:
    """A new `StaticModel` with `model`'s tokenizer and config and these vectors."""
    from model2vec import StaticModel

    config = {k: v for k, v in model.config.items() if k not in ("max_length", "normalize")}
    return StaticModel(
        vectors=vectors,
        tokenizer=model.tokenizer,
        config=config,
        normalize=True,
        base_model_name=model.base_model_name,
        language=model.language,
        max_length=max_length,
    )


def encode(model: Any, texts: list[str]) -> np.ndarray:
    """Embeddings of `texts` by a StaticModel, float32 ``(len(texts), dim)``, normalised."""
    return StaticEncoder.from_model(model, "static").encode(texts)


def adapt(
    plain: Any,
    texts: list[str],
    targets: np.ndarray,
    held: list[str],
    held_targets: np.ndarray,
    options: StaticOptions,
    device: str = "cpu",
    *,
    seed: int = 42,
) -> Any:
    """Train the token vectors of `plain` so each text's mean vector matches its target.

    Args:
        plain: The StaticModel to start from (not modified).
        texts: Training texts.
        targets: float32 (len(texts), plain.dim), unit rows: the teacher's embeddings in
            the plain model's space.
        held: Held-out texts for early stopping; held_targets their targets.
        options: ``loss`` (cosine: `StaticModelForSimilarity`, mse:
            `StaticModelForRegression`), ``lr``, ``batch``, ``epochs``, ``patience``.

    Returns:
        A new StaticModel with the trained vectors (float32), normalising its output.
    """
    import torch
    from model2vec.train import StaticModelForRegression, StaticModelForSimilarity

    if targets.shape != (len(texts), plain.dim):
        raise ValueError(f"targets {targets.shape} != ({len(texts)}, {plain.dim})")
    kind = StaticModelForSimilarity if options.loss == "cosine" else StaticModelForRegression
    trainer = kind.from_static_model(
        model=plain, n_layers=0, out_dim=plain.dim, max_length=options.max_tokens
    )
    trainer.fit(
        texts,
        torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32)),
        X_val=held,
        y_val=torch.from_numpy(np.ascontiguousarray(held_targets, dtype=np.float32)),
        learning_rate=options.lr,
        batch_size=options.batch,
        max_epochs=options.epochs,
        early_stopping_patience=options.patience,
        device=device,
        random_seed=seed,
    )
    trained = trainer.to_static_model()
    return _rebuild(plain, np.asarray(trained.embedding, dtype=np.float32), options.max_tokens)


def token_frequencies(model: Any, texts: list[str]) -> np.ndarray:
    """Smoothed probability of each token id in `texts`: (count + 1) / (total + vocab).

    Returns:
        float64 array of shape (len(model.tokens),).
    """
    ids = model.tokenize(texts)
    flat = np.fromiter((i for row in ids for i in row), dtype=np.int64)
    counts = np.bincount(flat, minlength=len(model.tokens)).astype(np.float64)
    return (counts + 1) / (counts.sum() + len(counts))


def reweight(model: Any, texts: list[str], alpha: float) -> Any:
    """`model` with each token vector scaled by ``alpha / (alpha + p(token))``, p its
    frequency in `texts` (tokenlearn's re-weighting by the corpus's own frequencies).

    Returns:
        A new StaticModel; `model` is not modified.
    """
    if model.token_mapping is not None:
        raise ValueError("re-weighting a vocabulary-quantized static model is not supported")
    weights = alpha / (alpha + token_frequencies(model, texts))
    vectors = np.asarray(model.embedding, dtype=np.float32) * weights[:, None].astype(np.float32)
    return _rebuild(model, vectors, model.max_length)


def with_dtype(model: Any, dtype: str) -> Any:
    """`model` with its vectors stored as `dtype` (``float16`` or ``float32``)."""
    from model2vec.quantization import DType, quantize_embeddings

    if np.dtype(model.embedding.dtype).name == dtype:
        return model
    return _rebuild(model, quantize_embeddings(model.embedding, DType(dtype)), model.max_length)
