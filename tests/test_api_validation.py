"""Request checks against the settings (`api.validation`), and the API's layering."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from fastapi.exceptions import RequestValidationError

from api.schemas import DocumentIn
from api.settings import Settings
from api.validation import check_documents, check_k, check_queries, check_query, clean_text

SETTINGS = Settings(index_dir=Path("unused"), max_k=5, max_query_chars=10, max_batch_queries=2)


def error(exc: pytest.ExceptionInfo[RequestValidationError]) -> dict:
    (only,) = exc.value.errors()
    return dict(only)


def test_query_is_stripped_or_refused() -> None:
    assert check_query("  cats ", SETTINGS, ("body", "query")) == "cats"
    assert "cats" in check_query("\u200bcats\u2060", SETTINGS, ("body", "query"))  # words
    for bad, words in (
        (" \t", "whitespace"),
        ("\u200b\u200c\u2060", "invisible characters"),
        (" \u200d\ufeff\n", "invisible characters"),
        ("\x00\u00ad", "invisible characters"),
        ("x" * 11, "limit is 10"),
        ("a\ud800", "surrogate"),
    ):
        with pytest.raises(RequestValidationError) as exc:
            check_query(bad, SETTINGS, ("query", "q"))
        assert error(exc)["loc"] == ("query", "q") and words in error(exc)["msg"]


def test_k_defaults_and_limit() -> None:
    assert check_k(None, SETTINGS, ("body", "k")) == 5  # the default 10, capped at max_k
    assert check_k(3, SETTINGS, ("body", "k")) == 3
    with pytest.raises(RequestValidationError, match="over the limit 5"):
        check_k(6, SETTINGS, ("body", "k"))


def test_batches_and_documents() -> None:
    assert check_queries([" a", "b "], SETTINGS) == ["a", "b"]
    with pytest.raises(RequestValidationError) as exc:
        check_queries(["a", "b", "c"], SETTINGS)
    assert error(exc)["loc"] == ("body", "queries")
    with pytest.raises(RequestValidationError) as exc:
        check_queries(["a", "\u2060"], SETTINGS)
    assert error(exc)["loc"] == ("body", "queries", 1)
    docs = [DocumentIn(id="d1", title="", text="t")]
    assert check_documents(docs, SETTINGS) == [("d1", "", "t")]
    with pytest.raises(RequestValidationError) as exc:
        check_documents([DocumentIn(id="d1", title="\udc00", text="t")], SETTINGS)
    assert error(exc)["loc"] == ("body", "documents", 0, "title")
    assert clean_text("a\ud800") == "a\ufffd"


def test_routes_import_only_the_service_schemas_and_deps() -> None:
    allowed = {"api.deps", "api.schemas", "api.service"}
    routes = Path(__file__).parents[1] / "api" / "routes"
    for path in sorted(routes.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            ours = [n for n in names if n.split(".")[0] in {"api", "search", "indexer", "distill"}]
            assert set(ours) <= allowed, f"{path.name} imports {ours}"
