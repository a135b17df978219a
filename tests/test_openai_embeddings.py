"""`POST /v1/embeddings` and `GET /v1/models` as OpenAI's own Python client uses them,
against a real `distilsearch serve` process on 127.0.0.1 (with an index, and with the
encoder alone); vectors are compared with the same encoder loaded in this process.
"""

from __future__ import annotations

import base64
import re
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from conftest import SERVE_KEY, SMALL_DOCS, Server, poll_ready, serving, serving_model
from typer.testing import CliRunner

from api.cli import app
from search.encoder import Encoder, TorchEncoder, load_encoder

MODEL = "tiny-model"  # the tiny model's folder name: its id as the server serves it
MAX_INPUTS = 4
MAX_CHARS = 300
LIMITS = {
    "DISTILSEARCH_MAX_EMBEDDING_INPUTS": str(MAX_INPUTS),
    "DISTILSEARCH_MAX_EMBEDDING_CHARS": str(MAX_CHARS),
    "DISTILSEARCH_MAX_BODY_BYTES": "8192",
}
TEXTS = [
    "Cats are small domesticated felines.",
    "Rust is a systems programming language.",
    "x " * 140,  # 140 tokens: more than the model's 64-token window
]
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def encoder(tiny_model: Path) -> Encoder:
    return load_encoder(tiny_model)


@pytest.fixture(scope="module")
def server(
    distilsearch_cmd: list[str],
    tiny_index: Callable[..., Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("openai")
    index = tiny_index(SMALL_DOCS, root / "idx")
    with serving(distilsearch_cmd, index, root / "serve.log", **LIMITS) as running:
        poll_ready(running)
        yield running


def client_of(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def cosine(a: Any, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def tokens_read(encoder: Encoder, texts: list[str]) -> list[int]:
    """Tokens of each text as the model reads it: its own tokenizer, cut to its window."""
    assert isinstance(encoder, TorchEncoder)
    model = encoder.model
    ids = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]
    return [len(row) for row in ids]


def test_one_text_as_floats_and_base64_matches_the_encoder_in_process(
    server: Server, encoder: Encoder
) -> None:
    want = encoder.encode(TEXTS[:1])[0]
    client = client_of(server)
    floats = client.embeddings.create(input=TEXTS[0], model=MODEL, encoding_format="float")
    raw = client.embeddings.create(input=TEXTS[0], model=MODEL, encoding_format="base64")
    decoded = client.embeddings.create(input=TEXTS[0], model=MODEL)  # the client asks base64
    as_b64 = raw.data[0].embedding
    assert isinstance(as_b64, str)
    from_b64 = np.frombuffer(base64.b64decode(as_b64), dtype="<f4")
    for got in (floats.data[0].embedding, from_b64, decoded.data[0].embedding):
        assert len(got) == encoder.dim and cosine(got, want) >= 0.9999
    assert floats.model == MODEL and floats.object == "list"
    assert (
        floats.usage.prompt_tokens
        == floats.usage.total_tokens
        == tokens_read(encoder, TEXTS[:1])[0]
    )


def test_a_batch_keeps_its_order_and_counts_the_tokens_the_model_reads(
    server: Server, encoder: Encoder
) -> None:
    got = client_of(server).embeddings.create(input=TEXTS, model=MODEL, dimensions=encoder.dim)
    want = encoder.encode(TEXTS)
    assert [d.index for d in got.data] == [0, 1, 2]
    assert all(cosine(d.embedding, w) >= 0.9999 for d, w in zip(got.data, want, strict=True))
    counts = tokens_read(encoder, TEXTS)
    assert counts[2] == encoder.model.max_seq_length  # type: ignore[attr-defined]  # cut
    assert got.usage.prompt_tokens == got.usage.total_tokens == sum(counts)


def test_the_wire_format_is_openais(server: Server) -> None:
    with server.client() as http:
        body = http.post("/v1/embeddings", json={"input": ["a", "b"], "model": MODEL}).json()
        models = http.get("/v1/models").json()
    assert set(body) == {"object", "data", "model", "usage"} and body["object"] == "list"
    assert [set(d) for d in body["data"]] == [{"object", "index", "embedding"}] * 2
    assert {d["object"] for d in body["data"]} == {"embedding"}
    assert set(body["usage"]) == {"prompt_tokens", "total_tokens"}
    (entry,) = models["data"]
    assert models["object"] == "list" and entry["id"] == MODEL and entry["object"] == "model"
    assert entry["owned_by"] == "distilsearch" and isinstance(entry["created"], int)
    assert [m.id for m in client_of(server).models.list()] == [MODEL]


GOOD: dict[str, Any] = {"model": MODEL}


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        ({**GOOD, "input": ""}, 422, "empty"),
        ({**GOOD, "input": " \u200b "}, 422, "invisible"),
        ({**GOOD, "input": []}, 422, "at least one text"),
        ({**GOOD, "input": ["cats", ""]}, 422, "empty"),
        ({**GOOD, "input": ["cats"] * (MAX_INPUTS + 1)}, 422, f"limit is {MAX_INPUTS}"),
        ({**GOOD, "input": "y" * (MAX_CHARS + 1)}, 422, f"limit is {MAX_CHARS}"),
        ({**GOOD, "input": [101, 2023, 102]}, 422, "token ids"),
        ({**GOOD, "input": [[101, 102]]}, 422, "token ids"),
        ({**GOOD, "input": 7}, 422, "valid string"),
        ({**GOOD, "input": {"text": "cats"}}, 422, "valid string"),
        ({"input": "cats"}, 422, "Field required"),
        ({"input": "cats", "model": 3}, 422, "valid string"),
        ({**GOOD, "input": "cats", "encoding_format": "int8"}, 422, "'float' or 'base64'"),
        ({**GOOD, "input": "cats", "dimensions": 16}, 422, "does not shorten them"),
        ({**GOOD, "input": "cats", "dimensions": "32"}, 422, "valid integer"),
        ({**GOOD, "input": "cats", "temperature": 1}, 422, "xtra"),
        ({"input": "cats", "model": "text-embedding-3-small"}, 404, f"serves '{MODEL}'"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_json_detail(
    server: Server, body: dict[str, Any], status: int, fragment: str
) -> None:
    with server.client() as http:
        r = http.post("/v1/embeddings", json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json()["detail"] and fragment in str(r.json()["detail"]), r.text
    error = r.json()["error"]  # OpenAI's shape, which its clients show
    assert fragment in error["message"] and error["type"] == "invalid_request_error", r.text


@pytest.mark.parametrize(
    "raw, status, fragment",
    [
        (b'{"input": "cats", "model": "tiny-model", "dimensions": NaN}', 422, "NaN"),
        (b'{"input": ["cats", Infinity], "model": "tiny-model"}', 422, "Infinity"),
        (b'{"input": "cats", "model": "tiny-model", "dimensions": 1e309}', 422, "1e309"),
        (b'{"input": "cats", "model": ', 422, "JSON decode error"),
        (b'{"input": ["cats", "\\ud800"], "model": "tiny-model"}', 422, "surrogate"),
        (b'{"input": "' + b"z" * 9000 + b'", "model": "tiny-model"}', 413, "limit is 8192"),
    ],
)
def test_bodies_no_json_encoder_writes_get_a_4xx(
    server: Server, raw: bytes, status: int, fragment: str
) -> None:
    with server.client() as http:
        r = http.post("/v1/embeddings", content=raw, headers=JSON)
        plain = http.post("/v1/embeddings", content=b"cats", headers={"content-type": "text/plain"})
    assert r.status_code == status and fragment in str(r.json()["detail"]), r.text
    assert fragment in r.json()["error"]["message"], r.text
    assert plain.status_code == 415 and plain.json()["detail"] and plain.json()["error"]


def test_the_openai_client_raises_its_own_errors_saying_what_to_fix(server: Server) -> None:
    client = client_of(server)
    with pytest.raises(openai.NotFoundError, match=f"serves '{MODEL}'"):
        client.embeddings.create(input="cats", model="text-embedding-3-small")
    with pytest.raises(openai.UnprocessableEntityError, match="input: input is an empty list"):
        client.embeddings.create(input=[], model=MODEL)
    with pytest.raises(openai.UnprocessableEntityError, match=r"input\.1: text is empty") as bad:
        client.embeddings.create(input=["cats", "\t"], model=MODEL)
    assert bad.value.param == "input.1"
    with pytest.raises(openai.UnprocessableEntityError, match="token ids"):
        client.embeddings.create(input=[[101, 102]], model=MODEL)
    with server.client() as http:  # routes outside /v1/ keep their own shape
        assert "error" not in http.post("/search", json={"query": ""}).json()


def _metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_embeddings_are_micro_batched_and_counted_beside_searches(server: Server) -> None:
    """Concurrent embedding and search requests all pass through the micro-batcher:
    its batch-size histogram grows by exactly the texts and queries sent."""
    texts = [f"text {i} about pets and programs" for i in range(MAX_INPUTS)]
    with server.client() as http:
        before = http.get("/metrics").text

        def embed(_: int) -> int:
            return http.post("/v1/embeddings", json={"input": texts, "model": MODEL}).status_code

        def search(i: int) -> int:
            return http.post("/search", json={"query": f"cats {i}", "mode": "dense"}).status_code

        with ThreadPoolExecutor(8) as pool:
            embeds = list(pool.map(embed, range(12)))
            searches = list(pool.map(search, range(12)))
        after = http.get("/metrics").text
    assert embeds == [200] * 12 and searches == [200] * 12
    grown = {
        name: _metric(after, name) - _metric(before, name)
        for name in (
            "distilsearch_encode_batch_size_sum",
            "distilsearch_embedding_inputs_total",
        )
    }
    assert grown == {
        "distilsearch_encode_batch_size_sum": 12 * MAX_INPUTS + 12,
        "distilsearch_embedding_inputs_total": 12 * MAX_INPUTS,
    }
    assert _metric(after, "distilsearch_embedding_tokens_total") > 0
    route = 'distilsearch_http_requests_total{method="POST",route="/v1/embeddings",status="200"}'
    assert _metric(after, route) >= 12


def test_the_encoder_alone_embeds_and_says_search_needs_an_index(
    distilsearch_cmd: list[str], tiny_model: Path, encoder: Encoder, tmp_path: Path
) -> None:
    env = {**LIMITS, "DISTILSEARCH_API_KEY": SERVE_KEY}
    with serving_model(distilsearch_cmd, tiny_model, tmp_path / "serve.log", **env) as server:
        poll_ready(server)
        got = client_of(server).embeddings.create(input=TEXTS[:2], model=MODEL)
        by_path = client_of(server).embeddings.create(input=TEXTS[0], model=str(tiny_model))
        with server.client() as http:
            ready = http.get("/ready").json()
            models = http.get("/v1/models").json()
            refused = [
                http.post("/search", json={"query": "cats"}),
                http.get("/search", params={"q": "cats"}),
                http.get("/documents/d1"),
                http.get("/info"),
                http.post("/admin/reload", headers={"X-API-Key": SERVE_KEY}),
            ]
            metrics = http.get("/metrics")
    want = encoder.encode(TEXTS[:2])
    assert all(cosine(d.embedding, w) >= 0.9999 for d, w in zip(got.data, want, strict=True))
    assert cosine(by_path.data[0].embedding, want[0]) >= 0.9999
    assert ready["index"] is False and [m["id"] for m in models["data"]] == [MODEL]
    for r in refused:
        assert r.status_code == 503 and "no index is loaded" in r.json()["detail"], r.text
    assert metrics.status_code == 200 and "distilsearch_embedding_inputs_total 3.0" in metrics.text


def test_token_counts_are_what_each_kind_of_encoder_reads(
    tiny_model: Path, encoder: Encoder, tmp_path: Path
) -> None:
    """Torch and ONNX: the model's tokenizer with special tokens, cut to the window;
    static: the known tokens it averages."""
    from model2vec import StaticModel
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    from api.embeddings import token_counter
    from distill.compress.export import export_onnx
    from search.onnx_encoder import OnnxEncoder
    from search.static_encoder import StaticEncoder

    texts = [*TEXTS, "Ünïcode and CamelCase, punctuation!!"]
    want = tokens_read(encoder, texts)
    assert token_counter(encoder)(texts) == want and want[2] == 64
    onnx_folder = Path(shutil.copytree(tiny_model, tmp_path / "onnx-model"))
    export_onnx(onnx_folder, texts)
    assert token_counter(OnnxEncoder(onnx_folder))(texts) == want

    words = ["[UNK]", "cat", "dog", "runs"]
    tokenizer = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()  # type: ignore[assignment]
    vectors = np.random.default_rng(0).normal(size=(len(words), 4)).astype(np.float32)
    static = StaticEncoder.from_model(StaticModel(vectors=vectors, tokenizer=tokenizer), "s")
    assert token_counter(static)(["cat runs", "dog and cat", "zebra"]) == [2, 2, 0]


runner = CliRunner()


@pytest.mark.parametrize(
    "args, fragment",
    [
        ([], "nothing to serve"),
        (["--model", "/no/such/model"], "/no/such/model"),
        (["--index", "/no/such/index"], "/no/such/index"),
    ],
)
def test_serve_without_an_index_or_a_model_exits_2(
    args: list[str], fragment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DISTILSEARCH_INDEX_DIR", "DISTILSEARCH_MODEL"):
        monkeypatch.delenv(name, raising=False)
    r = runner.invoke(app, ["serve", *args])
    assert r.exit_code == 2 and fragment in r.stderr, r.output
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output


def test_a_served_model_that_cannot_load_exits_2(
    distilsearch_cmd: list[str], tmp_path: Path
) -> None:
    """A folder that looks like a model (config.json) but is not one: the load fails on
    the worker thread and the server stops with one line."""
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    with serving_model(distilsearch_cmd, broken, tmp_path / "serve.log") as server:
        code = server.process.wait(180)
    log = server.log_text()
    assert code == 2 and "error: cannot serve" in log and "Traceback" not in log, log
