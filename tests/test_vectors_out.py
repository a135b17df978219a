"""Vectors out: `--vectors-out` writes each document's id and vector as Parquet, equal to
the index folder's own vectors, also after an interrupted build is resumed."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SMALL_DOCS
from typer.testing import CliRunner

from api.cli import app
from indexer.build import build_index
from indexer.vectors_out import METADATA_KEY
from search.encoder import Encoder, load_encoder
from search.index_folder import load_index_folder
from search.types import document_text

WORDS = [
    "river",
    "stone",
    "cloud",
    "forest",
    "engine",
    "signal",
    "market",
    "garden",
    "winter",
    "copper",
]
SHARD = 50


def corpus(n: int) -> list[tuple[str, str, str]]:
    rng = random.Random(3)
    return [
        (f"doc-{i}", f"title {i}", " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))))
        for i in range(n)
    ]


class Interrupted(Exception):
    """Stands in for a crash midway through encoding."""


class FailingEncoder:
    """A real encoder that raises after `calls` encode calls (one per shard)."""

    def __init__(self, inner: Encoder, calls: int) -> None:
        self.inner, self.left = inner, calls
        self.name, self.model_hash, self.dim = inner.name, inner.model_hash, inner.dim
        self.backend = inner.backend

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 32, show_progress: bool = False
    ) -> np.ndarray:
        if self.left == 0:
            raise Interrupted
        self.left -= 1
        return self.inner.encode(texts, batch_size=batch_size)


def index_vectors(folder_path: Path) -> dict[str, np.ndarray]:
    """Each document's vector, reconstructed from the index folder's FAISS index."""
    folder = load_index_folder(folder_path)
    index = faiss.downcast_index(folder.index)
    rows = faiss.vector_to_array(index.id_map)
    vecs = index.index.reconstruct_n(0, folder.index.ntotal)
    ids = folder.store.by_rows([int(r) for r in rows])
    folder.close()
    return {ids[int(r)][0]: v for r, v in zip(rows, vecs, strict=True)}


def read_vectors(path: Path) -> tuple[list[str], np.ndarray, pa.Schema]:
    table = pq.read_table(path)
    vecs = np.stack(table.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)
    return table.column("id").to_pylist(), vecs, table.schema


def test_a_resumed_build_writes_the_index_vectors_and_ids(tiny_model: Path, tmp_path: Path) -> None:
    encoder = load_encoder(tiny_model)
    docs = corpus(180)  # shards of 50, 50, 50, 30
    out, vectors = tmp_path / "idx", tmp_path / "out" / "vectors.parquet"
    build = {"factory": "Flat", "shard_size": SHARD, "resume_key": "v1", "progress": False}
    with pytest.raises(Interrupted):
        build_index(FailingEncoder(encoder, 2), docs, out, vectors_out=vectors, **build)
    assert not vectors.exists() and not out.exists()

    manifest = build_index(encoder, docs, out, vectors_out=vectors, **build)

    assert manifest["build"]["resumed_docs"] == 2 * SHARD  # the two shards before the crash
    ids, vecs, schema = read_vectors(vectors)
    assert ids == [d[0] for d in docs]  # every document once, in input order
    assert schema.field("id").type == pa.string()
    assert schema.field("vector").type == pa.list_(pa.float32(), encoder.dim)
    from_index = index_vectors(out)
    assert np.array_equal(vecs, np.stack([from_index[i] for i in ids]))
    fresh = encoder.encode([document_text(t, x) for _, t, x in docs])  # other padding
    assert np.min(np.sum(vecs * fresh, axis=1)) >= 0.9999
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    about = json.loads(schema.metadata[METADATA_KEY])
    assert about["model"]["hash"] == encoder.model_hash and about["count"] == len(docs)
    assert about["dim"] == encoder.dim and about["normalized"] is True
    assert sorted(p.name for p in vectors.parent.iterdir()) == ["vectors.parquet"]  # no temps


def test_a_failed_write_keeps_the_old_file(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder = load_encoder(tiny_model)
    out, vectors = tmp_path / "idx", tmp_path / "vectors.parquet"
    build = {"factory": "Flat", "shard_size": SHARD, "resume_key": "v1", "progress": False}
    build_index(encoder, corpus(60), out, vectors_out=vectors, **build)
    before = vectors.read_bytes()

    def broken(*args: object, **kwargs: object) -> pa.Table:
        raise Interrupted

    monkeypatch.setattr("indexer.vectors_out._shard_table", broken)
    with pytest.raises(Interrupted):
        build_index(encoder, corpus(120), out, vectors_out=vectors, **build)
    assert vectors.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if "vectors" in p.name) == [vectors.name]
    monkeypatch.undo()
    build_index(encoder, corpus(120), out, vectors_out=vectors, **build)  # resumes
    ids, _, _ = read_vectors(vectors)
    assert ids == [d[0] for d in corpus(120)]


runner = CliRunner()


def test_the_index_command_writes_vectors_and_refuses_bad_paths(
    tiny_model: Path, small_jsonl: Path, tmp_path: Path
) -> None:
    common = ["index", "--model", str(tiny_model), "--data", str(small_jsonl)]
    vectors = tmp_path / "vectors.parquet"
    r = runner.invoke(app, [*common, "--out", str(tmp_path / "idx"), "--vectors-out", str(vectors)])
    assert r.exit_code == 0, r.output
    ids, vecs, _ = read_vectors(vectors)
    assert ids == [d[0] for d in SMALL_DOCS] and vecs.shape == (len(SMALL_DOCS), 32)
    assert index_vectors(tmp_path / "idx").keys() == set(ids)

    bad = {
        "a folder": (["--out", str(tmp_path / "i2"), "--vectors-out", str(tmp_path)], "folder"),
        "inside": (
            ["--out", str(tmp_path / "idx"), "--vectors-out", str(tmp_path / "idx" / "v.pq")],
            "inside the index folder",
        ),
        "update": (
            ["--out", str(tmp_path / "idx"), "--update", "--vectors-out", str(vectors)],
            "drop --update",
        ),
    }
    for name, (args, fragment) in bad.items():
        r = runner.invoke(app, [*common, *args])
        assert r.exit_code == 2 and fragment in r.stderr, (name, r.output)
        assert len(r.stderr.strip().splitlines()) == 1, (name, r.stderr)
