"""The `distilsearch` command line: distill, index, search, eval, serve, demo.

Errors a user can fix exit with code 2 and one line on stderr saying what and how.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from api.options import with_options
from distill.config import DistillConfig
from indexer.options import BuildOptions
from search.corpus import Fields, ReadReport, Record
from search.encoder import BACKENDS
from search.hybrid import DEFAULT_FUSION, DEFAULT_WEIGHT, RRF_C
from search.types import DistilsearchError

if TYPE_CHECKING:
    from api.demo import DemoResult
    from api.settings import Settings
    from indexer.executor import Executor
    from search.embed_cache import EmbeddingCache
    from search.encoder import Encoder

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Semantic search with distilled encoders: distill, index, search, eval, serve.",
)

Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")]
BackendOpt = Annotated[str, typer.Option(help="|".join(BACKENDS))]
EncodeBatch = Annotated[int, typer.Option(help="Encoding batch size.")]
DeviceOpt = Annotated[
    str | None,
    typer.Option(help="Torch device of a torch model: cuda, cpu (default: cuda when present)."),
]


def fail(message: str) -> NoReturn:
    """Print one error line and exit 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _setup(verbose: bool) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    level = logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler()
    handler.setLevel(level)  # `_show_steps` lines reach the root logger too
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=[handler]
    )
    for noisy in ("sentence_transformers", "transformers", "httpx", "faiss", "bm25s"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not verbose else logging.INFO)


def _data_path(data: str) -> Path:
    path = Path(data).expanduser()
    if not path.exists():
        fail(f"--data {data}: no such file or folder; pass a BEIR folder or a JSONL file")
    return path


DISTILL_OPTIONS = (
    "data",
    "out",
    "student",
    "teacher",
    "max_minutes",
    "max_texts",
    "extra_texts",
    "epochs",
    "batch_size",
    "lr",
    "seed",
    "loss",
    "temperature",
    "max_seq_length",
    "compress",
    "int8_min_cosine",
    "layerwise_epochs",
    "layerwise_lr",
    "layerwise_share",
    "top_layers",
    "end_to_end",
    "device",
    "precision",
    "min_speedup",
    "static_candidate",
    "emit",
)
"""The `DistillConfig` fields the ``distill`` command sets."""


@app.command()
@with_options(DistillConfig, DISTILL_OPTIONS, into="settings", flags={"extra_texts": "--texts"})
def distill(settings: dict[str, Any], verbose: Verbose = False) -> None:
    """Distill the teacher into a student on your corpus, and emit the best candidate:
    the shipped model untrained (at its own token window and the teacher's), the
    trained student, a static student, each measured as it would be served (nDCG@10 on
    validation queries training never saw, docs/s against the fp32 teacher). A trained
    one is emitted only where it beats the untrained model significantly."""
    _setup(verbose)
    _show_steps("distill", verbose)
    from distill.run import distill as run_distill

    try:
        report = run_distill(DistillConfig(**settings))
    except (DistilsearchError, ValueError) as exc:
        fail(str(exc))
    keys = {"out", "gate", "stages", "choice", "train_seconds", "wall_seconds"}
    typer.echo(report.model_dump_json(by_alias=True, include=keys))


class _EchoHandler(logging.Handler):
    """Log lines to whatever stderr is when they are written (a test runner swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        typer.echo(self.format(record), err=True)


def _show_steps(package: str, verbose: bool) -> None:
    """Print `package`'s INFO lines (its steps) on stderr without ``--verbose`` too: a
    job that runs for many minutes says what it is doing."""
    log = logging.getLogger(package)
    if verbose or log.handlers:  # --verbose shows them anyway; once per process
        return
    handler = _EchoHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    handler.addFilter(lambda record: record.levelno < logging.WARNING)  # root shows those
    log.setLevel(logging.INFO)
    log.addHandler(handler)


INDEX_OPTIONS = (
    "factory",
    "on_error",
    "batch_size",
    "shard_size",
    "target_recall",
    "work_dir",
    "ondisk",
    "bm25",
    "vectors_out",
)
"""The `BuildOptions` fields the ``index`` command sets."""


@app.command()
@with_options(BuildOptions, INDEX_OPTIONS, into="build", flags={"ondisk": "--on-disk"})
@with_options(
    Fields,
    ("id", "title", "text"),
    into="fields",
    flags={"id": "--id-field", "title": "--title-field", "text": "--text-field"},
)
def index(
    model: Annotated[str, typer.Option(help="Model name or folder to encode with.")],
    data: Annotated[
        str, typer.Option(help="BEIR folder, JSONL(.gz) or Parquet file, or folder of Parquet.")
    ],
    out: Annotated[Path, typer.Option(help="Index folder to write (replaced atomically).")],
    build: dict[str, Any],
    fields: dict[str, Any],
    max_memory: Annotated[
        str | None, typer.Option(help="RAM budget of the auto index, e.g. 4GB (default: half).")
    ] = None,
    update: Annotated[
        bool, typer.Option("--update", help="Upsert the documents into the existing --out.")
    ] = False,
    backend: BackendOpt = "auto",
    engine: Annotated[str, typer.Option(help="local, or dask (with --scheduler).")] = "local",
    scheduler: Annotated[
        str | None, typer.Option(help="Dask scheduler address, e.g. tcp://10.0.0.5:8786.")
    ] = None,
    cache: Annotated[
        bool, typer.Option(help="Also reuse/fill the embedding cache (holds it all in RAM).")
    ] = False,
    device: DeviceOpt = None,
    verbose: Verbose = False,
) -> None:
    """Encode a corpus and write a FAISS index folder (resumable: rerun to continue)."""
    _setup(verbose)
    from indexer.factory import parse_memory
    from search.assets import resolve_model
    from search.corpus import count_documents, fingerprint, iter_records
    from search.encoder import load_encoder

    path = _data_path(data)
    if engine not in ("local", "dask") or (engine == "dask") != (scheduler is not None):
        fail("--engine dask needs --scheduler ADDRESS, and --scheduler needs --engine dask")
    if update and build["vectors_out"] is not None:
        fail("--vectors-out writes the vectors of a full build; drop --update, or rebuild")
    report, on_error, read_as = ReadReport(), build["on_error"], Fields(**fields)
    try:
        budget = parse_memory(max_memory) if max_memory else None
        records = iter_records(path, fields=read_as, on_error=on_error, report=report)
        encoder = load_encoder(model, backend=backend, device=device)  # type: ignore[arg-type]
        if update:
            _upsert(out, records, encoder, report)
            return
        key = [fingerprint(path), read_as.id, read_as.title, read_as.text, on_error]
        options = BuildOptions(
            **build,
            model_path=str(resolve_model(model)),
            total=count_documents(path),
            max_memory=budget,
            resume_key=json.dumps(key),
        )
        _build(encoder, records, out, options, scheduler=scheduler, cache=cache, report=report)
    except (DistilsearchError, ValueError, OSError) as exc:
        fail(str(exc))


def _build(
    encoder: Encoder,
    records: Iterable[Record],
    out: Path,
    options: BuildOptions,
    *,
    scheduler: str | None,
    cache: bool,
    report: ReadReport,
) -> None:
    """``index``: build the index folder `out` (on Dask with a `scheduler`) and say so."""
    from indexer.build import build_index, summary
    from search.assets import embeddings_dir
    from search.embed_cache import cache_for

    model_path = options.model_path or ""
    with _dask_executor(scheduler, model_path, encoder.backend, options.batch_size) as executor:
        emb = cache_for(encoder, embeddings_dir()) if cache else None
        manifest = build_index(
            encoder, records, out, options, cache=emb, report=report, engine=executor
        )
    typer.echo(f"indexed into {out}: {summary(manifest)}")
    if report.skipped:
        typer.echo(report.summary())


def _upsert(out: Path, records: Iterable[Record], encoder: Encoder, report: ReadReport) -> None:
    """``index --update``: upsert `records` into the index folder `out` and say so."""
    from indexer.update import upsert_documents

    result = upsert_documents(out, ((r.id, r.title, r.text) for r in records), encoder)
    typer.echo(
        f"updated {out}: {result['added']} added, {result['replaced']} replaced, "
        f"{result['count']} documents"
    )
    if report.skipped:
        typer.echo(report.summary())


@contextmanager
def _dask_executor(
    scheduler: str | None, model_path: str, backend: str, batch_size: int
) -> Iterator[Executor | None]:
    """The Dask executor of ``--scheduler``, closed on exit; None (local) without one."""
    if scheduler is None:
        yield None
        return
    from indexer.dask_engine import DaskEngine

    dask = DaskEngine(scheduler, model=model_path, backend=backend, batch_size=batch_size)
    try:
        yield dask
    finally:
        dask.close()


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="The query text.")],
    index: Annotated[Path, typer.Option(help="Index folder.")],
    k: Annotated[int, typer.Option("-k", help="Number of hits.")] = 10,
    mode: Annotated[
        str | None,
        typer.Option(
            help="dense|bm25|hybrid; default: hybrid where the index has BM25, else dense."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    verbose: Verbose = False,
) -> None:
    """Search an index folder."""
    _setup(verbose)
    from search.bm25_index import bm25_hits, has_bm25, load_bm25
    from search.hybrid import DEFAULT_DEPTH, default_mode, fuse_hits
    from search.retriever import Retriever

    if not query.strip():
        fail("the query is empty; pass some text to search for")
    if k < 1:
        fail(f"-k must be at least 1, got {k}")
    if mode not in (None, "dense", "bm25", "hybrid"):
        fail(f"--mode {mode!r} is not one of dense, bm25, hybrid")
    try:
        mode = mode or default_mode(has_bm25(index))
        retriever = Retriever.open(index)
        if mode == "dense":
            hits = retriever.search(query, k)
        else:
            depth = max(k, DEFAULT_DEPTH)  # as the service fuses
            sparse = bm25_hits(load_bm25(index), retriever.folder.store, query, depth)
            hits = sparse[:k]
            if mode == "hybrid":
                hits = fuse_hits(retriever.search(query, depth), sparse, k=k)
    except DistilsearchError as exc:
        fail(str(exc))
    if as_json:
        rows = [
            {"id": h.id, "score": h.score, "title": h.title, "snippet": h.snippet()} for h in hits
        ]
        typer.echo(json.dumps({"query": query, "mode": mode, "hits": rows}))
        return
    for rank, h in enumerate(hits, 1):
        typer.echo(f"{rank:>3}. {h.score:.4f}  [{h.id}] {h.title or h.snippet(80)}")


@app.command("eval")
def eval_(
    data: Annotated[str, typer.Option(help="BEIR folder.")],
    model: Annotated[
        str | None, typer.Option(help="Model name or folder (or bm25); not needed for --mode bm25.")
    ] = None,
    mode: Annotated[str, typer.Option(help="dense|bm25|hybrid (dense + bm25 fused).")] = "dense",
    split: Annotated[str, typer.Option(help="Qrels split to evaluate on.")] = "test",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    batch_size: EncodeBatch = 32,
    backend: BackendOpt = "auto",
    cache: Annotated[bool, typer.Option(help="Reuse and fill the embedding cache.")] = True,
    fusion: Annotated[str, typer.Option(help="hybrid: rrf|convex.")] = DEFAULT_FUSION.value,
    weight: Annotated[float, typer.Option(help="hybrid: dense share in [0, 1].")] = DEFAULT_WEIGHT,
    rrf_c: Annotated[int, typer.Option(help="hybrid: RRF constant c.")] = RRF_C,
    device: DeviceOpt = None,
    verbose: Verbose = False,
) -> None:
    """Evaluate dense, bm25 or hybrid search on a BEIR dataset: nDCG@10, Recall@100, MAP, MRR."""
    _setup(verbose)
    from search.assets import embeddings_dir
    from search.embed_cache import cache_for
    from search.encoder import load_encoder

    if model is not None and model.lower() == "bm25":
        mode = "bm25"
    if mode not in ("dense", "bm25", "hybrid"):
        fail(f"--mode {mode!r} is not one of dense, bm25, hybrid")
    if mode != "bm25" and model is None:
        fail(f"--mode {mode} needs --model (a model name or folder)")
    path = _data_path(data)
    progress = not as_json or sys.stderr.isatty()
    try:
        # The model first: a bad model name fails before the corpus is read.
        encoder = (
            None if mode == "bm25" else load_encoder(model or "", backend=backend, device=device)  # type: ignore[arg-type]
        )
        emb = cache_for(encoder, embeddings_dir()) if cache and encoder is not None else None
        hybrid = HybridSettings(fusion, weight, rrf_c) if mode == "hybrid" else None
        report = _evaluate(path, split, encoder, emb, hybrid, batch_size, progress)
    except (DistilsearchError, ValueError) as exc:
        fail(str(exc))
    report.pop("per_query_ndcg@10")
    label = {"bm25": "bm25", "dense": str(model)}.get(mode, f"hybrid({model}+bm25)")
    report["model"], report["mode"] = label, mode
    report["dataset"], report["split"] = path.name, split
    if as_json:
        typer.echo(json.dumps(report))
    else:
        _print_table([report])


@dataclasses.dataclass(frozen=True)
class HybridSettings:
    """How ``eval --mode hybrid`` fuses dense and BM25 results (`search.hybrid`)."""

    method: str
    weight: float
    rrf_c: int


def _evaluate(
    path: Path,
    split: str,
    encoder: Encoder | None,
    cache: EmbeddingCache | None,
    hybrid: HybridSettings | None,
    batch_size: int,
    progress: bool,
) -> dict[str, Any]:
    """``eval``'s report on `split` of the BEIR folder `path`: `encoder` dense, fused
    with BM25 when `hybrid` is given, or BM25 alone without an encoder."""
    from search.corpus import load_beir
    from search.evaluate import evaluate, evaluate_hybrid

    corpus, queries, qrels = load_beir(path, split)
    if hybrid is None or encoder is None:
        return evaluate(
            encoder, corpus, queries, qrels, cache=cache, batch_size=batch_size, progress=progress
        )
    return evaluate_hybrid(
        encoder,
        corpus,
        queries,
        qrels,
        cache=cache,
        batch_size=batch_size,
        progress=progress,
        method=hybrid.method,
        weight=hybrid.weight,
        rrf_c=hybrid.rrf_c,
    )


def _print_table(reports: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    cached = [r.get("docs_per_s_source") == "cache" for r in reports]
    caption = (
        "* docs/s from the embedding cache: measured when the corpus was first encoded, "
        "not in this run (--no-cache measures it)"
        if any(cached)
        else None
    )
    table = Table(title="BEIR evaluation", caption=caption)
    for col in ("model", "nDCG@10", "Recall@100", "docs/s", "query ms", "size MB"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r, from_cache in zip(reports, cached, strict=True):
        size = r.get("size_mb")
        table.add_row(
            str(r["model"]),
            f"{r['ndcg@10']:.4f}",
            f"{r['recall@100']:.4f}",
            f"{r['docs_per_s']:.1f}" + ("*" if from_cache else ""),
            f"{r.get('query_ms', float('nan')):.1f}",
            "-" if size is None else f"{size:.0f}",
        )
    Console().print(table)


@app.command()
def serve(
    index: Annotated[
        Path | None,
        typer.Option(
            help="Index folder to serve; without it, --model is served alone "
            "(POST /v1/embeddings, GET /v1/models)."
        ),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(help="Address to bind; default DISTILSEARCH_HOST or 127.0.0.1 (loopback)."),
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port; default DISTILSEARCH_PORT or 8000.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Query encoder; default: the index's model. Without --index: the model "
            "to serve alone."
        ),
    ] = None,
    backend: Annotated[str | None, typer.Option(help="|".join(BACKENDS))] = None,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log every request.")
    ] = False,
    verbose: Verbose = False,
) -> None:
    """Serve an index over HTTP: search page at /, OpenAPI docs at /docs, and
    OpenAI-compatible embeddings at /v1/embeddings; or, with --model and no --index,
    the encoder alone (/v1/embeddings, /v1/models).

    Every other setting comes from DISTILSEARCH_* environment variables (see README),
    including DISTILSEARCH_API_KEY, which turns the admin endpoints on. The server
    answers /health at once and /ready once the index (or model) is loaded; SIGTERM or
    Ctrl-C lets requests in flight finish and exits 0; one that fails to load exits 2.
    """
    _setup(verbose)
    given = {"index_dir": index, "host": host, "port": port, "model": model, "backend": backend}
    _serve_app(_serve_settings({k: v for k, v in given.items() if v is not None}), access_log)


def _serve_app(settings: Settings, access_log: bool) -> None:
    """Run the app of `settings` under uvicorn until stopped; exit 2 with one line when
    the index (or model) fails to load."""
    import uvicorn

    from api.app import create_app

    logging.getLogger("api").setLevel(logging.INFO)
    failed: list[BaseException] = []
    server: uvicorn.Server | None = None

    def stop(exc: BaseException) -> None:
        failed.append(exc)
        if server is not None:
            server.should_exit = True

    served = create_app(settings, load_in_background=True, on_load_error=stop)
    config = uvicorn.Config(
        served, host=settings.host, port=settings.port, log_level="info", access_log=access_log
    )
    server = uvicorn.Server(config)
    with _stops_exit_cleanly():
        server.run()
    if failed:
        fail(f"cannot serve {settings.index_dir or settings.model}: {failed[0]}")


def _serve_settings(given: dict[str, Any]) -> Settings:
    """``serve``'s settings: the options `given`, the rest from the environment; exit 2
    with one line when they are bad, or name an index or a model that is not there
    (checked before the slow load, which then fails only on a broken folder)."""
    from pydantic import ValidationError

    from api.settings import Settings
    from search.assets import resolve_model
    from search.index_folder import read_index_manifest

    try:
        settings = Settings(**given)
    except ValidationError as exc:
        fail("bad setting: " + "; ".join(_setting_error(e) for e in exc.errors()))
    try:
        if settings.index_dir is not None:
            read_index_manifest(settings.index_dir)
        elif settings.model is not None:
            resolve_model(settings.model)
    except DistilsearchError as exc:
        fail(str(exc))
    return settings


def _setting_error(error: Any) -> str:
    """One pydantic error of `Settings` as ``field: message`` (no field: the message)."""
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{error['loc'][0]}: {message}" if error["loc"] else message


@contextmanager
def _stops_exit_cleanly() -> Iterator[None]:
    """SIGINT and SIGTERM end `serve` with status 0. uvicorn shuts down gracefully on
    either, then raises it again for the handler it found; Python's own would end the
    process by the signal (SIGTERM: status 143) or print a KeyboardInterrupt. These
    take the repeated signal and return."""

    def stopped(signum: int, frame: Any) -> None:
        logging.getLogger(__name__).debug("stopped by signal %d", signum)

    previous = {sig: signal.signal(sig, stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


DemoFull = Annotated[
    bool,
    typer.Option(
        "--full",
        help="Distill DistillConfig's default student and evaluate on the whole test "
        "split (over an hour cold on 2 cores) instead of the quick demo.",
    ),
]
DemoModel = Annotated[
    str | None,
    typer.Option(
        help="Quick demo: the shipped model the table compares with (default all-MiniLM-L6-v2)."
    ),
]
DemoTexts = Annotated[
    int | None,
    typer.Option(
        help="Quick demo: training texts the teacher labels for the static student "
        "(default 1500, sized for a cold demo within 10 minutes on 2 cores)."
    ),
]
DemoServe = Annotated[bool, typer.Option("--serve/--no-serve", help="Serve at the end.")]


@app.command()
@with_options(DistillConfig, ("teacher", "max_minutes"), into="distilling")
def demo(
    distilling: dict[str, Any],
    data: Annotated[str | None, typer.Option(help="BEIR SciFact folder.")] = None,
    out: Annotated[Path, typer.Option(help="Where the student, index and results go.")] = Path(
        "runs/demo"
    ),
    full: DemoFull = False,
    model: DemoModel = None,
    max_texts: DemoTexts = None,
    serve_after: DemoServe = True,
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8000,
    verbose: Verbose = False,
) -> None:
    """SciFact end to end. Quick (default, minutes cold): distil a static student from
    the teacher on a sample of the corpus, index with it (and BM25), compare teacher,
    shipped MiniLM, the student and student + BM25 on a slice of the test split, serve
    the hybrid index. --full: distill the default transformer student, index, evaluate
    on the whole split, serve.

    The total wall time counts from DISTILSEARCH_DEMO_T0 (Unix time; set by make demo).
    """
    started, since = _demo_clock()
    _setup(verbose)
    from api.demo import QUICK_TEXTS, format_duration, run_demo
    from search.assets import MINILM_NAME
    from search.corpus import find_dataset

    if full and (model is not None or max_texts is not None):
        fail(
            "--model and --max-texts are for the quick demo; --full distills "
            "DistillConfig's default student"
        )
    try:
        path = _data_path(data) if data else find_dataset("scifact")
        result = run_demo(
            path,
            out,
            full=full,
            model=model or MINILM_NAME,
            teacher=distilling["teacher"],
            max_minutes=distilling["max_minutes"],
            max_texts=QUICK_TEXTS if max_texts is None else max_texts,
            say=lambda line: typer.echo(line),
        )
    except (DistilsearchError, ValueError) as exc:
        fail(str(exc))
    typer.echo(result.table)
    if not serve_after:
        typer.echo(f"total wall time {format_duration(time.time() - started)} since {since}")
        return
    _serve_demo(result, port, "[4/4]", since, started)


def _demo_clock() -> tuple[float, str]:
    """When the demo's wall time counts from (Unix time), and what happened then:
    ``DISTILSEARCH_DEMO_T0`` when make demo set it, else now."""

    if "DISTILSEARCH_DEMO_T0" in os.environ:
        return float(os.environ["DISTILSEARCH_DEMO_T0"]), "`make demo` started"
    return time.time(), "the demo started"


def _serve_demo(result: DemoResult, port: int, step: str, since: str, started: float) -> None:
    """Serve the demo's index on `port` with the settings it chose (`DemoResult.serve`);
    once a test search answers, print the total wall time from `started` (Unix time)."""
    import threading

    from api.demo import format_duration, wait_until_answering

    url = f"http://127.0.0.1:{port}"

    def announce() -> None:
        try:
            hits = wait_until_answering(url, result.example_query)
        except TimeoutError as exc:
            typer.echo(f"warning: {exc}", err=True)
            return
        typer.echo(
            f"{step} the search page answers at {url} (a test search found {hits} hits); "
            f"total wall time {format_duration(time.time() - started)} since {since}. Ctrl-C stops."
        )

    chosen = ", ".join(f"{k}={v}" for k, v in result.serve.items())
    typer.echo(
        f"{step} serving {result.index_dir} on {url} (OpenAPI docs at /docs)"
        + (f"; {chosen}" if chosen else "")
    )
    threading.Thread(target=announce, daemon=True).start()
    given = {"index_dir": result.index_dir, "host": "127.0.0.1", "port": port, **result.serve}
    _serve_app(_serve_settings(given), access_log=False)


def main() -> None:
    """Entry point of the `distilsearch` script."""
    app()
