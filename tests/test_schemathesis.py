"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis).

Each operation gets a bounded number of generated requests that fit the schema and
as many that do not; none may end in a server error, and every response must match
the documented status codes, content types and schemas. Every operation the app
publishes is run in both modes, but those named in `NO_INVALID_REQUEST` (with the
reason) in the negative one; an operation that generates nothing and is not named
fails the test. (schemathesis's pytest plugin cannot load a schema from a fixture
under pytest 9, so the test drives its Hypothesis strategies directly.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig

from api.app import create_app
from api.settings import Settings

KEY = "fuzz-key-0123456789abcdef"
EXAMPLES = 30  # per operation and mode
REJECTED = [400, 401, 403, 404, 405, 406, 409, 415, 422, 428, 429, "5XX"]
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
# Operations for which no invalid request exists, so that Hypothesis cannot generate
# one (Unsatisfiable): no body, no API key (admin operations get requests with wrong
# headers), and no parameter or only one that takes any string. Their valid requests
# are tested.
NO_INVALID_REQUEST = {
    "GET /health": "no parameters and no body",
    "GET /ready": "no parameters and no body",
    "GET /info": "no parameters and no body",
    "GET /metrics": "no parameters and no body",
    "GET /v1/models": "no parameters and no body",
    "GET /documents/{doc_id}": "its only input, the id in the path, may be any string",
}
DOCS = [
    ("a1", "Cells", "Stem cells differentiate into many tissue types."),
    ("a2", "Genes", "Gene expression is regulated by transcription factors."),
    ("a3", "Viruses", "Viruses replicate inside host cells."),
    ("a4", "", "Vaccines train the immune system to recognise pathogens."),
]


@pytest.fixture(scope="module")
def app(tiny_index: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    idx = tiny_index(DOCS, tmp_path_factory.mktemp("fuzz") / "idx")
    return create_app(
        Settings(
            index_dir=idx,
            api_key=KEY,
            max_k=20,
            max_upsert_docs=3,
            max_doc_chars=2000,
            max_batch_queries=4,
        )
    )


@pytest.fixture(scope="module")
def api_schema(app: FastAPI) -> Any:
    # 413 (body over the size limit) is a right answer to invalid data too.
    config = SchemathesisConfig.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": [*REJECTED, 413]}}}
    )
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


def test_every_published_operation_is_fuzzed(app: FastAPI, api_schema: Any) -> None:
    """schemathesis loads every operation of the app's OpenAPI schema: none is dropped."""
    published = {
        f"{method.upper()} {path}"
        for path, item in app.openapi()["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    loaded = {result.ok().label for result in api_schema.get_all_operations()}
    assert loaded == published, f"not loaded: {published - loaded}; unknown: {loaded - published}"
    assert set(NO_INVALID_REQUEST) <= published, set(NO_INVALID_REQUEST) - published


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_never_fail(api_schema: Any, mode: GenerationMode) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10
    tested: dict[str, int] = {}  # label: requests sent
    skipped: list[str] = []
    for operation in operations:
        sent = 0

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            nonlocal sent
            sent += 1
            case.call_and_validate(headers={"X-API-Key": KEY})

        try:
            check()
        except Unsatisfiable:
            if mode is not GenerationMode.NEGATIVE or operation.label not in NO_INVALID_REQUEST:
                pytest.fail(
                    f"{operation.label}: Hypothesis generated no {mode.value} request. Give "
                    "the operation inputs to test, or, if it has none to get wrong, name it "
                    "in NO_INVALID_REQUEST with the reason"
                )
            skipped.append(operation.label)
            continue
        tested[operation.label] = sent
    assert all(tested.values()), f"operations run without a request: {tested}"
    if mode is GenerationMode.NEGATIVE:
        # The list names exactly what is skipped: an operation that gains inputs leaves it.
        stale = set(NO_INVALID_REQUEST) - set(skipped)
        assert not stale, f"{stale} generated invalid requests: remove them from NO_INVALID_REQUEST"
    else:
        assert not skipped
