"""Incremental updates: upsert and delete, tombstones, compaction, atomic publishing."""

import json
import random
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli import app
from indexer.build import build_index
from indexer.update import delete_documents, upsert_documents
from search.encoder import Encoder, load_encoder
from search.index_folder import load_index_folder, read_index_manifest, verify_folder
from search.retriever import Retriever
from search.types import DataError, IndexMismatchError

WORDS = (  # noqa: SIM905
    "apple banana cherry grape lemon mango olive peach pear plum quince river stone cloud "
    "forest engine signal market garden winter summer copper silver planet orbit"
).split()


def docs(n: int, start: int = 0, seed: int = 0) -> list[tuple[str, str, str]]:
    rng = random.Random(seed + start)
    return [
        (f"d{i}", f"t{i}", " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 20))))
        for i in range(start, start + n)
    ]


@pytest.fixture(scope="module")
def enc(tiny_model: Path) -> Encoder:
    return load_encoder(tiny_model)


def _build(enc: Encoder, out: Path, factory: str, n: int = 120) -> None:
    build_index(enc, docs(n), out, factory=factory, progress=False, recall_queries=50)


def _ids(retriever: Retriever, query: str, k: int) -> list[str]:
    return [h.id for h in retriever.search(query, k)]


@pytest.mark.parametrize("factory", ["Flat", "IVF4,Flat"])
def test_upsert_adds_and_replaces_in_indexes_that_delete(
    enc: Encoder, tmp_path: Path, factory: str
) -> None:
    out = tmp_path / "idx"
    _build(enc, out, factory)
    new = [("d5", "t5", "completely rewritten text about quince"), *docs(3, start=500)]
    new.append(("d501", "again", "the last copy of an id wins"))
    got = upsert_documents(out, new, enc)
    assert got == {"added": 3, "replaced": 1, "count": 123}
    m = read_index_manifest(out)
    assert m["count"] == m["ntotal"] == 123 and m["tombstones"] == 0 and "updated" in m
    verify_folder(out)
    folder = load_index_folder(out)
    assert folder.store.by_id("d5")[2] == "completely rewritten text about quince"
    assert folder.store.by_id("d501")[1] == "again"
    r = Retriever(enc, folder)
    assert _ids(r, "t5 completely rewritten text about quince", 1) == ["d5"]
    assert _ids(r, "again the last copy of an id wins", 1) == ["d501"]


def test_deletes_on_hnsw_leave_tombstones_that_search_skips_then_compacts(
    enc: Encoder, tmp_path: Path
) -> None:
    out = tmp_path / "idx"
    _build(enc, out, "HNSW8")
    all_docs = dict((i, f"{t} {x}") for i, t, x in docs(120))
    gone = [f"d{i}" for i in range(10)]
    got = delete_documents(out, [*gone, "nope", "d0"])
    assert got == {"deleted": 10, "missing": ["nope"], "count": 110}
    m = read_index_manifest(out)
    assert (m["count"], m["ntotal"], m["tombstones"]) == (110, 120, 10)
    r = Retriever.open(out)
    assert len(r.folder.tombstones) == 10
    for doc_id in gone[:4]:
        hits = _ids(r, all_docs[doc_id], 20)
        assert len(hits) == 20 and not set(hits) & set(gone)
    assert len(_ids(r, "river", 500)) == 110  # every live document, none dead
    # Replacing on HNSW tombstones the old vector too.
    upsert_documents(out, [("d50", "t50", "new words for fifty")], enc)
    assert read_index_manifest(out)["tombstones"] == 11
    # Past a quarter of the index, the update compacts: no tombstones left.
    delete_documents(out, [f"d{i}" for i in range(10, 40)])
    m = read_index_manifest(out)
    assert (m["count"], m["ntotal"], m["tombstones"]) == (80, 80, 0)
    r = Retriever.open(out)
    assert len(r.folder.tombstones) == 0
    assert _ids(r, "t50 new words for fifty", 1) == ["d50"]
    assert _ids(r, all_docs["d77"], 1) == ["d77"]


def test_nothing_to_do_publishes_nothing_and_a_wrong_model_is_refused(
    enc: Encoder, tiny_model_64: Path, tmp_path: Path
) -> None:
    out = tmp_path / "idx"
    _build(enc, out, "Flat", n=20)
    before = (out / "manifest.json").read_text()
    assert delete_documents(out, ["zzz"]) == {"deleted": 0, "missing": ["zzz"], "count": 20}
    assert upsert_documents(out, [], enc) == {"added": 0, "replaced": 0, "count": 20}
    assert (out / "manifest.json").read_text() == before
    with pytest.raises(IndexMismatchError, match="update it with the index's own model"):
        upsert_documents(out, docs(2, start=100), load_encoder(tiny_model_64))
    with pytest.raises(DataError, match="not an index folder"):
        delete_documents(tmp_path, ["d1"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no temp leftovers


def test_readers_never_see_a_half_updated_folder(enc: Encoder, tmp_path: Path) -> None:
    out = tmp_path / "idx"
    _build(enc, out, "Flat", n=40)
    old = Retriever.open(out)
    stop = threading.Event()
    seen: list[int] = []
    errors: list[str] = []

    def read() -> None:
        for _ in range(2000):  # bounded
            if stop.is_set():
                return
            folder = load_index_folder(out)
            counts = {folder.count, folder.index.ntotal, len(folder.store)}
            folder.close()
            if len(counts) != 1:
                errors.append(f"mixed versions: {counts}")
            seen.append(counts.pop())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for step in range(6):
            upsert_documents(out, docs(5, start=1000 + 5 * step), enc)
    finally:
        stop.set()
        reader.join(timeout=60)
    assert not errors and seen and set(seen) <= {40 + 5 * s for s in range(7)}
    assert read_index_manifest(out)["count"] == 70
    # A retriever opened before the updates still answers from its version.
    assert len(old.search("river", 100)) == 40


def test_cli_update_upserts_a_file(tiny_model: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"_id": i, "text": x}) + "\n" for i, _, x in docs(30)))
    out = tmp_path / "idx"
    runner = CliRunner()
    args = ["index", "--model", str(tiny_model), "--out", str(out), "--no-bm25"]
    r = runner.invoke(app, [*args, "--data", str(corpus)])
    assert r.exit_code == 0, r.output
    more = tmp_path / "more.jsonl"
    more.write_text(
        json.dumps({"_id": "d3", "text": "replaced"})
        + "\n"
        + json.dumps({"_id": "x", "text": "new"})
    )
    r = runner.invoke(app, [*args, "--data", str(more), "--update"])
    assert r.exit_code == 0, r.output
    assert "1 added, 1 replaced, 31 documents" in r.stdout
    assert load_index_folder(out).store.by_id("d3")[2] == "replaced"


def test_refine_indexes_cannot_skip_tombstones_inside_faiss_so_search_over_fetches(
    enc: Encoder, tmp_path: Path
) -> None:
    out = tmp_path / "idx"
    _build(enc, out, "IVF4,PQ8x4fs,RFlat")
    texts = {i: f"{t} {x}" for i, t, x in docs(120)}
    gone = [f"d{i}" for i in range(0, 40, 2)]  # 20 of 120: under the compaction threshold
    assert delete_documents(out, gone)["count"] == 100
    r = Retriever.open(out)
    assert len(r.folder.tombstones) == 20
    for doc_id in gone[:5]:
        hits = _ids(r, texts[doc_id], 15)
        assert len(hits) == 15 and not set(hits) & set(gone)
