import json
from pathlib import Path

import numpy as np
import pytest

from indexer.build import build_index, make_index
from search.corpus import iter_documents, load_corpus
from search.encoder import load_encoder
from search.index_folder import load_index_folder, read_index_manifest
from search.retriever import Retriever
from search.types import DataError, IndexMismatchError


def test_index_folder_holds_what_the_manifest_says(
    tiny_model: Path, small_jsonl: Path, tmp_path: Path
) -> None:
    enc = load_encoder(tiny_model)
    out = tmp_path / "idx"
    manifest = build_index(
        enc, iter_documents(small_jsonl), out, model_path=str(tiny_model), progress=False
    )
    assert manifest["count"] == 8 and manifest["dim"] == enc.dim
    assert manifest["model"]["hash"] == enc.model_hash and manifest["metric"] == "inner_product"
    assert read_index_manifest(out) == manifest
    folder = load_index_folder(out)
    assert folder.index.ntotal == 8 and len(folder.store) == 8
    assert folder.store.ids() == [f"d{i}" for i in range(1, 9)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl", "idx"]  # no temp leftovers


def test_each_document_finds_itself_first(
    tiny_model: Path, small_jsonl: Path, tmp_path: Path
) -> None:
    enc = load_encoder(tiny_model)
    build_index(
        enc,
        iter_documents(small_jsonl),
        tmp_path / "idx",
        model_path=str(tiny_model),
        progress=False,
    )
    retriever = Retriever.open(tmp_path / "idx")
    corpus = load_corpus(small_jsonl)
    texts = [f"{d['title']} {d['text']}".strip() for d in corpus.values()]
    results = retriever.search_many(texts, k=3)
    assert [hits[0].id for hits in results] == list(corpus)
    top = results[0][0]
    assert top.title == "Cats" and top.score == pytest.approx(1.0, abs=1e-4)
    assert all(a.score >= b.score for a, b in zip(results[0], results[0][1:], strict=False))
    assert len(retriever.search("cats", k=100)) == 8  # k is capped at the corpus size


def test_hnsw_and_ivf_factories_agree_with_flat_on_a_tiny_corpus(
    tiny_model: Path, small_jsonl: Path, tmp_path: Path
) -> None:
    enc = load_encoder(tiny_model)
    tops = {}
    for factory in ("Flat", "HNSW16", "IVF2,Flat"):
        out = tmp_path / factory.replace(",", "_")
        build_index(
            enc,
            iter_documents(small_jsonl),
            out,
            factory=factory,
            progress=False,
            model_path=str(tiny_model),
        )
        folder = load_index_folder(out)
        if hasattr(folder.index, "nprobe"):
            folder.index.nprobe = 2
        tops[factory] = [h[0].id for h in Retriever(enc, folder).search_many(["cat", "code"], 1)]
    assert tops["HNSW16"] == tops["Flat"] == tops["IVF2,Flat"]


def test_model_mismatch_is_refused(
    tiny_model: Path, tiny_model_64: Path, small_jsonl: Path, tmp_path: Path
) -> None:
    build_index(
        load_encoder(tiny_model), iter_documents(small_jsonl), tmp_path / "idx", progress=False
    )
    with pytest.raises(IndexMismatchError, match="rebuild the index"):
        Retriever.open(tmp_path / "idx", model=str(tiny_model_64))


def test_rebuild_replaces_atomically(tiny_model: Path, small_jsonl: Path, tmp_path: Path) -> None:
    enc = load_encoder(tiny_model)
    out = tmp_path / "idx"
    build_index(enc, iter_documents(small_jsonl), out, progress=False)
    fewer = tmp_path / "fewer.jsonl"
    fewer.write_text("".join(small_jsonl.read_text().splitlines(keepends=True)[:3]))
    build_index(enc, iter_documents(fewer), out, progress=False)
    assert read_index_manifest(out)["count"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl", "fewer.jsonl", "idx"]


def test_bad_input_fails_cleanly_and_leaves_the_old_index(
    tiny_model: Path, small_jsonl: Path, tmp_path: Path
) -> None:
    enc = load_encoder(tiny_model)
    out = tmp_path / "idx"
    build_index(enc, iter_documents(small_jsonl), out, progress=False)
    dup = tmp_path / "dup.jsonl"
    dup.write_text(small_jsonl.read_text() + json.dumps({"_id": "d1", "text": "again"}) + "\n")
    with pytest.raises(DataError, match="duplicate document id 'd1'"):
        build_index(enc, iter_documents(dup), out, progress=False)
    assert read_index_manifest(out)["count"] == 8
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"_id": "x", "text": "fine"}\n{"_id": "y"}\n')
    with pytest.raises(DataError, match=r"broken.jsonl:2: not a document"):
        list(iter_documents(broken))
    with pytest.raises(ValueError, match="FAISS cannot build"):
        make_index("NoSuchIndex", 8)


def test_search_vectors_shapes(tiny_model: Path, small_jsonl: Path, tmp_path: Path) -> None:
    enc = load_encoder(tiny_model)
    build_index(enc, iter_documents(small_jsonl), tmp_path / "i", progress=False)
    r = Retriever(enc, load_index_folder(tmp_path / "i"))
    hits = r.search_vectors(np.zeros((2, enc.dim), dtype=np.float32) + 0.1, 2)
    assert len(hits) == 2 and all(len(h) == 2 for h in hits)


def test_queries_use_the_artifact_that_encoded_the_documents(
    tiny_model: Path, small_jsonl: Path, tmp_path: Path
) -> None:
    import shutil

    from distill.compress.export import export_onnx

    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    export_onnx(model, ["a few words", "cats and dogs", "compilers translate code"])
    assert load_encoder(model).backend == "onnx"  # auto alone would pick ONNX
    build_index(
        load_encoder(model, backend="torch"),
        iter_documents(small_jsonl),
        tmp_path / "i",
        model_path=str(model),
        progress=False,
    )
    assert Retriever.open(tmp_path / "i").encoder.backend == "torch"
    assert Retriever.open(tmp_path / "i", backend="onnx").encoder.backend == "onnx"
