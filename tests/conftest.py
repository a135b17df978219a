"""Shared fixtures: a tiny random transformer, a small real SciFact slice, a temp cache."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SCIFACT = Path(os.environ.get("DISTILSEARCH_DATA", SHARED / "beir")) / "scifact"
MSMARCO = SHARED / "text" / "msmarco-queries.txt"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Under ``CI=true`` a skip is a failure: CI must provide every prerequisite
    (SciFact, Chromium, ...), or a green run would hide tests that never ran."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.skipped and _in_ci() and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = (
            f"skipped, and CI=true fails a skip: {_skip_reason(report)}. CI must provide "
            "this prerequisite (.ci/run installs Chromium and fetches SciFact)"
        )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """How many tests skipped, and why (grouped by reason)."""
    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = _skip_reason(report)
        reasons[reason] = reasons.get(reason, 0) + 1
    total = sum(reasons.values())
    note = " (CI=true: a skip fails, see the errors)" if _in_ci() else ""
    terminalreporter.write_sep("-", f"{total} test{'' if total == 1 else 's'} skipped{note}")
    for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{n:4d} x {reason}")


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test session gets its own embedding cache; model assets stay shared.

    The reassembled teacher lives in the user's cache (reassembling 440 MB per test
    would be slow), so only the embeddings cache is redirected.
    """
    monkeypatch.setenv("DISTILSEARCH_EMBED_CACHE", str(tmp_path_factory.getbasetemp() / "emb"))


def _build_tiny(folder: Path, dim: int = 32, layers: int = 2) -> Path:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models
    from transformers import AutoTokenizer, BertConfig, BertModel

    from search.assets import resolve_model

    tok = AutoTokenizer.from_pretrained(str(resolve_model("all-MiniLM-L6-v2")))
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=dim,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * dim,
        max_position_embeddings=128,
    )
    import torch

    torch.manual_seed(0)
    raw = folder / "raw"
    BertModel(config).save_pretrained(raw)
    tok.save_pretrained(raw)
    word = models.Transformer(str(raw), max_seq_length=64)
    st = SentenceTransformer(
        modules=[word, models.Pooling(dim, "mean"), models.Normalize()], device="cpu"
    )
    out = folder / "tiny-model"
    st.save(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved sentence-transformers folder: random 2-layer BERT, 32-d, mean pooling."""
    return _build_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_model_64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like `tiny_model` but 64-d (a 'teacher' whose dim differs from the student's)."""
    return _build_tiny(tmp_path_factory.mktemp("tiny64"), dim=64)


@pytest.fixture(scope="session")
def tiny_model_3l(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like `tiny_model` but with 3 layers (a model with a block of two to cut)."""
    return _build_tiny(tmp_path_factory.mktemp("tiny3l"), layers=3)


@pytest.fixture(scope="session")
def distilsearch_cmd() -> list[str]:
    """The `distilsearch` command as a user runs it (the console script of this venv)."""
    script = Path(sys.executable).with_name("distilsearch")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from api.cli import main; main()"]


@pytest.fixture(scope="session")
def tiny_index(tiny_model: Path) -> Callable[..., Path]:
    """Build an index folder of `(id, title, text)` documents with the tiny model.

    Call as ``tiny_index(docs, out, bm25=True)``; returns ``out``.
    """
    from indexer.build import build_index
    from search.encoder import load_encoder

    def make(docs: Sequence[tuple[str, str, str]], out: Path, *, bm25: bool = True) -> Path:
        encoder = load_encoder(tiny_model)
        build_index(encoder, docs, out, model_path=str(tiny_model), progress=False, bm25=bm25)
        return out

    return make


@pytest.fixture(scope="session")
def scifact() -> Path:
    if not (SCIFACT / "corpus.jsonl").is_file():
        pytest.skip(f"SciFact not found at {SCIFACT}")
    return SCIFACT


@pytest.fixture(scope="session")
def scifact_slice(tmp_path_factory: pytest.TempPathFactory, scifact: Path) -> Path:
    """A BEIR folder: 20 test queries, their relevant documents plus 60 others."""
    out = tmp_path_factory.mktemp("scifact-slice")
    (out / "qrels").mkdir()
    qrels_lines = (scifact / "qrels" / "test.tsv").read_text().splitlines()
    header, rows = qrels_lines[0], [r.split("\t") for r in qrels_lines[1:]]
    qids = list(dict.fromkeys(r[0] for r in rows))[:20]
    keep_rows = [r for r in rows if r[0] in qids]
    rel_docs = {r[1] for r in keep_rows}
    docs = []
    with open(scifact / "corpus.jsonl") as fh:
        for line in fh:
            doc = json.loads(line)
            if doc["_id"] in rel_docs or len(docs) < len(rel_docs) + 60:
                docs.append(doc)
    (out / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    queries = [json.loads(x) for x in (scifact / "queries.jsonl").read_text().splitlines()]
    (out / "queries.jsonl").write_text(
        "".join(json.dumps(q) + "\n" for q in queries if q["_id"] in qids)
    )
    (out / "qrels" / "test.tsv").write_text(
        "\n".join([header, *("\t".join(r) for r in keep_rows)]) + "\n"
    )
    return out


SMALL_DOCS = [
    ("d1", "Cats", "Cats are small domesticated felines that purr."),
    ("d2", "Dogs", "Dogs are loyal animals kept as pets and for herding."),
    ("d3", "Kittens", "A kitten is a young cat; kittens play a lot."),
    ("d4", "Puppies", "A puppy is a young dog that needs training."),
    ("d5", "Python", "Python is a programming language with dynamic typing."),
    ("d6", "Rust", "Rust is a systems programming language with ownership."),
    ("d7", "Compilers", "A compiler translates source code into machine code."),
    ("d8", "", "Interpreters execute programs line by line."),
]
"""Eight short (id, title, text) documents on two topics, pets and programming (d8 has
no title); test modules import it from here."""


@pytest.fixture
def small_jsonl(tmp_path: Path) -> Path:
    """Eight short documents as JSONL, two topics."""
    path = tmp_path / "docs.jsonl"
    path.write_text(
        "".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in SMALL_DOCS)
    )
    return path


# --- `distilsearch serve` as a process ------------------------------------------------

SERVE_KEY = "process-key-0123456789abcdef"
"""The API key of every server `serving` starts."""
START_S = 180  # a cold start imports torch: slow on a busy 2-core machine


@dataclass
class Server:
    """A running `distilsearch serve` process, its base URL and its log file."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("http://").split(":")
        return host, int(port)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(cmd: list[str], index: Path, log: Path, **env: str) -> Iterator[Server]:
    """`distilsearch serve --index INDEX` on a free loopback port, with the API key
    `SERVE_KEY` and the settings in `env` (``DISTILSEARCH_*``); killed if still up."""
    port = free_port()
    environ = {**os.environ, "DISTILSEARCH_API_KEY": SERVE_KEY, **env}
    args = [*cmd, "serve", "--index", str(index), "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=environ)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)


def poll_ready(server: Server, timeout: float = START_S) -> list[tuple[int, int, str]]:
    """Ask /health and /ready every 20 ms until /ready answers 200.

    Returns:
        ``(health status, ready status, ready detail)`` of every answer; connections
        refused before the port is bound are not listed.
    """
    seen: list[tuple[int, int, str]] = []
    deadline = time.monotonic() + timeout
    with server.client() as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                pytest.fail(f"serve exited with {server.process.returncode}:\n{server.log_text()}")
            try:
                health = client.get("/health").status_code
                ready = client.get("/ready")
            except httpx.TransportError:
                time.sleep(0.02)
                continue
            seen.append((health, ready.status_code, str(ready.json().get("detail", ""))))
            if ready.status_code == 200:
                return seen
            time.sleep(0.02)
    pytest.fail(f"/ready did not answer 200 within {timeout} s:\n{server.log_text()}")


@contextmanager
def serving_model(cmd: list[str], model: Path, log: Path, **env: str) -> Iterator[Server]:
    """`distilsearch serve --model MODEL` without an index (the encoder served alone), on
    a free loopback port with the settings in `env`; killed if still up. As `serving`."""
    port = free_port()
    environ = {**os.environ, **env}
    args = [*cmd, "serve", "--model", str(model), "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=environ)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
