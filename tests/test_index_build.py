"""Batch builds: manifest and checksums, recall and search parameters, resuming, errors."""

import json
import os
import random
import stat
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np
import pytest

from indexer.build import build_index
from indexer.factory import AUTO
from indexer.options import BuildOptions
from indexer.publish import write_manifest
from indexer.shards import complete_shards
from search.corpus import ON_ERROR, ReadReport, iter_records
from search.encoder import Encoder, load_encoder
from search.index_folder import folder_files, load_index_folder, read_index_manifest, verify_folder
from search.retriever import Retriever
from search.types import DataError

WORDS = (  # noqa: SIM905
    "alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega river stone cloud "
    "forest engine signal market garden winter summer copper silver planet orbit"
).split()


def synthetic_docs(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    return [
        (f"doc{i}", f"title {i}", " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 24))))
        for i in range(n)
    ]


class CountingEncoder:
    """A real encoder that counts texts encoded, and can fail after some calls."""

    def __init__(self, inner: Encoder, fail_after: int | None = None) -> None:
        self.inner = inner
        self.name, self.model_hash, self.dim = inner.name, inner.model_hash, inner.dim
        self.backend = inner.backend
        self.calls = 0
        self.texts = 0
        self.fail_after = fail_after

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 32, show_progress: bool = False
    ) -> np.ndarray:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        self.texts += len(texts)
        return self.inner.encode(texts, batch_size=batch_size)


def _vectors(folder_path: Path) -> dict[str, np.ndarray]:
    folder = load_index_folder(folder_path)
    index = folder.index
    ids = faiss.vector_to_array(faiss.downcast_index(index).id_map)
    vecs = faiss.downcast_index(index).index.reconstruct_n(0, index.ntotal)
    rows = folder.store.by_rows([int(i) for i in ids])
    folder.close()
    return {rows[int(r)][0]: v for r, v in zip(ids, vecs, strict=True)}


def test_manifest_lists_every_file_and_a_tampered_folder_fails(
    tiny_model: Path, tmp_path: Path
) -> None:
    enc = load_encoder(tiny_model)
    out = tmp_path / "idx"
    manifest = build_index(enc, synthetic_docs(60), out, progress=False)
    assert set(manifest["files"]) == set(folder_files(out)) >= {"index.faiss", "docs.sqlite"}
    assert manifest["factory"] == "Flat" and manifest["factory_requested"] == "auto"
    assert manifest["recall_at_10"] == 1.0 and manifest["recall"]["method"] == "exact search"
    assert {"faiss-cpu", "numpy", "distilsearch"} <= set(manifest["versions"])
    verify_folder(out)
    assert stat.S_IMODE(out.stat().st_mode) & 0o055 == 0o055  # readable by the server's user
    # Checksums cover nested folders, whatever wrote them.
    (out / "extra" / "deep").mkdir(parents=True)
    (out / "extra" / "deep" / "x.bin").write_bytes(b"one")
    written = write_manifest(out, read_index_manifest(out))
    assert "extra/deep/x.bin" in written["files"]
    verify_folder(out)
    (out / "extra" / "deep" / "x.bin").write_bytes(b"two")
    with pytest.raises(DataError, match=r"extra/deep/x.bin changed.*rebuild it"):
        verify_folder(out)


def test_hnsw_build_stores_tuned_params_and_queries_can_override_them(
    tiny_model: Path, tmp_path: Path
) -> None:
    enc = load_encoder(tiny_model)
    out = tmp_path / "idx"
    docs = synthetic_docs(400)
    manifest = build_index(enc, docs, out, factory="HNSW8", progress=False, recall_queries=100)
    assert set(manifest["search_params"]) == {"efSearch"}
    assert manifest["recall_at_10"] >= 0.95 and manifest["recall"]["queries"] == 100
    assert manifest["recall"]["tried"][-1]["recall"] == manifest["recall_at_10"]
    retriever = Retriever(enc, load_index_folder(out))
    assert retriever.folder.search_params == manifest["search_params"]
    query = docs[3][1] + " " + docs[3][2]
    hits = retriever.search(query, k=5, params={"efSearch": 400})
    assert hits[0].id == "doc3" and len(hits) == 5
    exact = Retriever(enc, load_index_folder(out))
    exact.folder.manifest["search_params"] = {"efSearch": 400}
    assert [h.id for h in exact.search(query, k=5)] == [h.id for h in hits]
    with pytest.raises(ValueError, match="does not take 'nprobe'"):
        retriever.search(query, params={"nprobe": 3})


def test_ivf_build_with_explicit_params_and_memory_mapped_flat(
    tiny_model: Path, tmp_path: Path
) -> None:
    enc = load_encoder(tiny_model)
    docs = synthetic_docs(300)
    m = build_index(
        enc,
        docs,
        tmp_path / "ivf",
        factory="IVF4,Flat",
        search_params={"nprobe": 4},
        progress=False,
    )
    assert m["search_params"] == {"nprobe": 4} and m["recall_at_10"] >= 0.99  # all lists
    build_index(enc, docs, tmp_path / "flat", factory="Flat", progress=False)
    in_ram = Retriever.open(tmp_path / "flat")
    mapped = Retriever.open(tmp_path / "flat", mmap=True)
    queries = [d[2] for d in docs[:5]]
    assert [[h.id for h in r] for r in mapped.search_many(queries, 4)] == [
        [h.id for h in r] for r in in_ram.search_many(queries, 4)
    ]
    with pytest.raises(ValueError, match="has 512 lists but the corpus holds only 300"):
        build_index(enc, docs, tmp_path / "big", factory="IVF512,Flat", progress=False)


def test_skip_mode_reports_bad_records_and_duplicates_in_the_manifest(
    tiny_model: Path, tmp_path: Path
) -> None:
    path = tmp_path / "c.jsonl"
    rows = [{"_id": d, "title": t, "text": x} for d, t, x in synthetic_docs(30)]
    lines = [json.dumps(r) for r in rows]
    lines.insert(10, json.dumps({"_id": "doc2", "text": "duplicate"}))  # line 11
    lines.insert(20, "{oops")  # line 21
    path.write_text("\n".join(lines) + "\n")
    enc = load_encoder(tiny_model)
    report = ReadReport()
    records = iter_records(path, on_error="skip", report=report)
    m = build_index(enc, records, tmp_path / "idx", on_error="skip", report=report, progress=False)
    assert m["count"] == 30
    assert m["input"]["skipped"] == {"duplicate id": 1, "invalid JSON": 1}
    assert m["input"]["first_lines"] == {"duplicate id": [11], "invalid JSON": [21]}
    folder = load_index_folder(tmp_path / "idx")
    assert folder.store.by_id("doc2")[2] != "duplicate"  # the first one is kept
    with pytest.raises(DataError, match=r"c.jsonl:11: not a document: duplicate id"):
        build_index(enc, iter_records(path, on_error="skip"), tmp_path / "idx2", progress=False)


def test_an_interrupted_build_resumes_without_re_encoding_finished_shards(
    tiny_model: Path, tmp_path: Path
) -> None:
    real = load_encoder(tiny_model)
    docs = synthetic_docs(250)
    out = tmp_path / "idx"
    key = "corpus-v1"
    first = CountingEncoder(real, fail_after=3)
    with pytest.raises(KeyboardInterrupt):
        build_index(first, docs, out, shard_size=50, resume_key=key, progress=False)
    work = tmp_path / ".idx.work"
    assert complete_shards(work / "shards") == [0, 1, 2] and not out.exists()
    again = CountingEncoder(real)
    m = build_index(again, docs, out, shard_size=50, resume_key=key, progress=False)
    assert again.texts == 100 and again.calls == 2  # only shards 3 and 4
    assert m["build"]["resumed_docs"] == 150 and m["build"]["encoded_docs"] == 100
    assert m["count"] == 250 and not work.exists()
    fresh = tmp_path / "fresh"
    build_index(real, docs, fresh, shard_size=50, progress=False)
    got, want = _vectors(out), _vectors(fresh)
    assert sorted(got) == sorted(want) == sorted(d[0] for d in docs)
    assert all(np.allclose(got[i], want[i], atol=1e-5) for i in want)
    # Another key (the input changed): the checkpoints are discarded, not mixed in.
    CountingEncoder(real, fail_after=1)
    with pytest.raises(KeyboardInterrupt):
        build_index(
            CountingEncoder(real, fail_after=1),
            docs,
            out,
            shard_size=50,
            resume_key=key,
            progress=False,
        )
    other = CountingEncoder(real)
    build_index(other, docs[:100], out, shard_size=50, resume_key="corpus-v2", progress=False)
    assert other.texts == 100 and read_index_manifest(out)["count"] == 100


def test_out_must_be_an_index_folder_or_new(tiny_model: Path, tmp_path: Path) -> None:
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(DataError, match="exists and is not an index folder"):
        build_index(load_encoder(tiny_model), synthetic_docs(5), precious, progress=False)
    assert (precious / "thesis.tex").read_text() == "years of work"
    assert sorted(os.listdir(tmp_path)) == ["home"]


def test_on_disk_ivf_lists_are_mapped_from_beside_the_index_wherever_it_moves(
    tiny_model: Path, tmp_path: Path
) -> None:
    enc = load_encoder(tiny_model)
    docs = synthetic_docs(200)
    m = build_index(enc, docs, tmp_path / "a", factory="IVF4,Flat", ondisk=True, progress=False)
    assert m["ondisk"] and "index.ivfdata" in m["files"]
    assert m["index_mb"] * 1e6 > (tmp_path / "a" / "index.faiss").stat().st_size
    (tmp_path / "a").rename(tmp_path / "b")  # the lists file is found beside the index
    verify_folder(tmp_path / "b")
    r = Retriever.open(tmp_path / "b", mmap=True)
    assert [h.id for h in r.search(f"{docs[7][1]} {docs[7][2]}", 1)] == ["doc7"]
    from indexer.update import upsert_documents

    upsert_documents(tmp_path / "b", [("new", "", "a brand new document")], enc)
    verify_folder(tmp_path / "b")
    again = Retriever.open(tmp_path / "b", mmap=True)
    assert again.folder.count == 201 and again.search("a brand new document", 1)[0].id == "new"
    assert [h.id for h in r.search(f"{docs[7][1]} {docs[7][2]}", 1)] == ["doc7"]  # old reader


def test_options_object_with_keyword_overrides(tiny_model: Path, tmp_path: Path) -> None:
    assert BuildOptions().factory == AUTO and BuildOptions().on_error in ON_ERROR
    enc = load_encoder(tiny_model)
    options = BuildOptions(factory="Flat", shard_size=7, progress=False)
    m = build_index(enc, synthetic_docs(20), tmp_path / "idx", options, shard_size=9)
    assert m["factory"] == "Flat" and m["build"]["shard_size"] == 9
    assert options.shard_size == 7  # the caller's options are not changed
    with pytest.raises(TypeError, match="shard_sise"):
        build_index(enc, synthetic_docs(20), tmp_path / "other", options, shard_sise=9)
    assert not (tmp_path / "other").exists()
