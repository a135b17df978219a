"""The BM25 side of an index folder: written from docs.sqlite, loaded, searched."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from indexer.update import write_bm25
from search.bm25_index import BM25_DIR, has_bm25, load_bm25, make_stemmer
from search.docstore import DocStore
from search.index_folder import DOCSTORE_FILE, MANIFEST, verify_folder
from search.types import DataError

DOCS = [
    ("d1", "Cats", "Cats are small domesticated felines that purr."),
    ("d2", "Dogs", "Dogs are loyal animals kept as pets and for herding."),
    ("d3", "Kittens", "A kitten is a young cat; kittens play a lot."),
    ("d4", "Python", "Python is a programming language with dynamic typing."),
    ("d5", "Rust", "Rust is a systems programming language with ownership."),
]


@pytest.fixture(scope="module")
def folder(tiny_index: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_index(DOCS, tmp_path_factory.mktemp("bm25") / "idx", bm25=True)


def test_writes_and_finds_by_keywords(folder: Path) -> None:
    assert has_bm25(folder)
    index = load_bm25(folder)
    assert index.count == len(DOCS)
    rows, scores = index.search("programming language", 10)
    store = DocStore(folder / DOCSTORE_FILE)
    try:
        ids = [store.by_rows([int(r)])[int(r)][0] for r in rows]
    finally:
        store.close()
    assert set(ids) == {"d4", "d5"}  # only documents sharing a term come back
    assert rows.dtype == np.int64 and scores.dtype == np.float32
    assert np.all(np.diff(scores) <= 0) and np.all(scores > 0)


def test_stemming_matches_inflections(folder: Path) -> None:
    if make_stemmer() is None:
        pytest.skip("PyStemmer is not installed")
    rows, _ = load_bm25(folder).search("kitten", 3)
    assert len(rows) == 1  # "kittens" and "kitten" share the stem


def test_no_known_terms_and_large_k(folder: Path) -> None:
    index = load_bm25(folder)
    rows, scores = index.search("the and of", 5)  # stopwords only
    assert rows.shape == (0,) and scores.shape == (0,)
    rows, _ = index.search("zzzz unknownword", 5)
    assert rows.shape == (0,)
    rows, _ = index.search("cats dogs python rust kitten", 1000)  # k over the corpus size
    assert len(rows) == len(DOCS)
    with pytest.raises(ValueError, match="at least 1"):
        index.search("cats", 0)


def test_manifest_lists_bm25_files(folder: Path) -> None:
    files = json.loads((folder / MANIFEST).read_text())["files"]
    listed = {f for f in files if f.startswith(f"{BM25_DIR}/")}
    actual = {p.relative_to(folder).as_posix() for p in (folder / BM25_DIR).rglob("*")}
    assert listed == {a for a in actual if (folder / a).is_file()} and listed


def test_stale_bm25_is_refused(folder: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "idx"
    shutil.copytree(folder, copy)
    store = DocStore(copy / DOCSTORE_FILE, readonly=False)
    store.add([(99, "d99", "New", "a brand new document about ferrets")])
    store.close()
    with pytest.raises(DataError, match="write_bm25"):
        load_bm25(copy)
    write_bm25(copy)  # a rebuild picks the new document up
    rows, _ = load_bm25(copy).search("ferrets", 5)
    assert rows.tolist() == [99]


def test_missing_bm25_says_how_to_build(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="write_bm25"):
        load_bm25(tmp_path)
    with pytest.raises(DataError, match=r"docs\.sqlite"):
        write_bm25(tmp_path)


def test_adding_bm25_publishes_a_new_folder(
    tiny_index: Callable[..., Path], tmp_path: Path
) -> None:
    out = tiny_index(DOCS, tmp_path / "idx", bm25=False)
    before = json.loads((out / MANIFEST).read_text())
    inode = out.stat().st_ino
    with open(out / DOCSTORE_FILE, "rb") as held:  # a reader of the old version
        write_bm25(out)
        assert held.read(16) == b"SQLite format 3\x00"
    assert has_bm25(out) and load_bm25(out).count == len(DOCS)
    assert out.stat().st_ino != inode  # swapped in, not edited in place
    verify_folder(out)  # the manifest lists the bm25/ files
    after = json.loads((out / MANIFEST).read_text())
    assert {k: v for k, v in after.items() if k != "files"} == {
        k: v for k, v in before.items() if k != "files"
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no temp folder left


def test_the_bm25_writer_does_not_import_the_publisher() -> None:
    code = "import sys, indexer.bm25; assert 'indexer.publish' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
