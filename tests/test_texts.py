from pathlib import Path

import pytest

from distill.config import StudentSpec
from distill.texts import collect_texts, split_sentences


def test_training_texts_never_include_test_queries(scifact: Path) -> None:
    from search.corpus import load_beir

    _, test_queries, _ = load_beir(scifact, "test")
    texts = collect_texts(scifact, max_texts=3000, generic=None)
    assert not set(texts.all) & set(test_queries.values())
    counts = texts.counts()
    assert counts["documents"] == 1800 and counts["train_queries"] == 300
    assert len(texts.all) == len(set(texts.all))


def test_generic_text_fills_the_rest(small_jsonl: Path, tmp_path: Path) -> None:
    generic = tmp_path / "g.txt"
    generic.write_text("\n".join(f"query {i}" for i in range(100)))
    texts = collect_texts(small_jsonl, max_texts=40, generic=generic)
    assert texts.counts()["documents"] == 8
    assert len(texts.all) == 40


def test_sentences() -> None:
    got = split_sentences(
        "First sentence is long enough here. Second one too, and it goes on. x.", 20
    )
    assert got == ["First sentence is long enough here.", "Second one too, and it goes on. x."]


def test_student_spec() -> None:
    assert StudentSpec.parse("mpnet:layers=0,4,8,11") == StudentSpec(None, (0, 4, 8, 11))
    assert StudentSpec.parse("teacher:layers=3,1") == StudentSpec(None, (1, 3))
    cut = StudentSpec.parse("all-MiniLM-L6-v2:layers=0,1,3,5")
    assert cut == StudentSpec("all-MiniLM-L6-v2", (0, 1, 3, 5))
    assert StudentSpec.parse("all-MiniLM-L6-v2").model == "all-MiniLM-L6-v2"
    with pytest.raises(ValueError, match="comma-separated integers"):
        StudentSpec.parse("mpnet:layers=a,b")
    with pytest.raises(ValueError, match="distinct"):
        StudentSpec.parse("mpnet:layers=1,1")
