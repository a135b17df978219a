"""The settings of an index build (`indexer.build.build_index`), with their defaults.

This module imports nothing heavy, so the command line can read the defaults for its
``--help`` without loading FAISS; the values are checked by `indexer.build`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["BuildOptions"]


@dataclass(frozen=True)
class BuildOptions:
    """How to build an index folder.

    Attributes:
        factory: FAISS factory string, or ``auto`` (`indexer.factory.AUTO`: chosen by
            corpus size and memory budget, see `indexer.factory.choose_factory`).
        batch_size: Texts per forward pass.
        shard_size: Documents per checkpointed shard.
        model_path: Where the model lives, recorded so `Retriever.open` can find it
            (default: the encoder's folder).
        total: Number of documents, when known, for the progress bar's ETA.
        progress: Show progress bars.
        max_memory: RAM budget in bytes for the index (``auto``); default half the RAM.
        on_error: ``fail`` on the first duplicate id, or ``skip`` duplicates and count
            them in the read report (bad records are handled by the reader, see
            `search.corpus`).
        resume_key: Identity of the input (e.g. `search.corpus.fingerprint`); when
            given, checkpoints of an interrupted job with the same key and settings are
            reused, else the job starts over.
        work_dir: Checkpoint folder (default ``.<out>.work`` beside the index folder);
            on a cluster it must be shared with the workers.
        target_recall: recall@10 the tuned search parameters must reach on the sample
            (its 95% lower confidence bound, see `indexer.quality.tune`).
        search_params: Search parameters to store instead of tuning them.
        recall_queries: Sampled vectors the recall is measured on.
        ondisk: Keep an IVF index's inverted lists in ``index.ivfdata``, memory-mapped
            when the folder is loaded (serving needs little RAM); ignored for other types.
        bm25: Also write the lexical index (`indexer.publish.refresh_bm25`).
        seed: Seed of the training and recall samples.
        vectors_out: Also write every document's id and vector to this Parquet file
            (columns id, string, and vector, fixed-size list of float32), atomically,
            from the checkpoints when the index is published (`indexer.vectors_out`).
    """

    factory: str = "auto"
    batch_size: int = 32
    shard_size: int = 1024
    model_path: str | None = None
    total: int | None = None
    progress: bool = True
    max_memory: int | None = None
    on_error: str = "fail"
    resume_key: str | None = None
    work_dir: Path | None = None
    target_recall: float = 0.95
    search_params: dict[str, float] | None = None
    recall_queries: int = 300
    ondisk: bool = False
    bm25: bool = True
    seed: int = 0
    vectors_out: Path | None = None
