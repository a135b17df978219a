"""Teacher vs student encoding throughput on the same SciFact passages, in one run.

    python bench/encode.py [--student all-MiniLM-L6-v2|PATH] [--n 128] [--backend auto]
        [--out bench/out/encode]

Prints docs/s of each and the ratio student / teacher. Passages are a fixed random
sample of the corpus (title + " " + text), encoded longest first in batches of at most
32 texts and 512 padded tokens (`search.batching`). Writes ``results.json`` (with the
run's provenance: command, commit, date, machine and whether it was idle) and
``table.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

from provenance import Provenance, write

from search.batching import DEFAULT_BATCH_TOKENS
from search.corpus import iter_documents
from search.encoder import load_encoder
from search.types import document_text

DEFAULT_DATA = Path(os.environ.get("DISTILSEARCH_DATA", "../shared/data/beir")) / "scifact"
OUT = Path(__file__).resolve().parent / "out" / "encode"


def throughput(model: str, texts: list[str], backend: str, batch_size: int) -> tuple[float, str]:
    """(docs/s, backend used) of one encoder over `texts`, after one warm-up batch."""
    encoder = load_encoder(model, backend=backend)  # type: ignore[arg-type]
    encoder.encode(texts[:batch_size], batch_size=batch_size)
    t0 = time.perf_counter()
    encoder.encode(texts, batch_size=batch_size)
    return len(texts) / (time.perf_counter() - t0), encoder.backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="all-mpnet-base-v2")
    parser.add_argument("--student", default="all-MiniLM-L6-v2")
    parser.add_argument(
        "--backend", default="auto", help="student backend: auto|torch|onnx|onnx-int8"
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=128, help="passages to encode")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=OUT, help="results folder")
    args = parser.parse_args()
    prov = Provenance()

    docs = [document_text(t, x) for _, t, x in iter_documents(args.data)]
    texts = sorted(random.Random(0).sample(docs, min(args.n, len(docs))), key=len, reverse=True)
    t_rate, t_backend = throughput(args.teacher, texts, "torch", args.batch_size)
    s_rate, s_backend = throughput(args.student, texts, args.backend, args.batch_size)
    setting = (
        f"{len(texts)} {args.data.name} passages, batches of at most {args.batch_size} texts "
        f"and {DEFAULT_BATCH_TOKENS} tokens, {os.cpu_count()} CPUs"
    )
    print(setting)
    print(f"teacher {args.teacher} [{t_backend}]: {t_rate:8.2f} docs/s")
    print(f"student {args.student} [{s_backend}]: {s_rate:8.2f} docs/s")
    print(f"speed ratio student/teacher: {s_rate / t_rate:.1f}x")

    record = prov.finish()
    rows = [
        {"role": "teacher", "model": args.teacher, "backend": t_backend, "docs_per_s": t_rate},
        {"role": "student", "model": args.student, "backend": s_backend, "docs_per_s": s_rate},
    ]
    results = {
        "provenance": record,
        "settings": {
            "data": str(args.data),
            "passages": len(texts),
            "batch_size": args.batch_size,
            "batch_tokens": DEFAULT_BATCH_TOKENS,
            "cpus": os.cpu_count(),
        },
        "rows": rows,
        "student_over_teacher": s_rate / t_rate,
    }
    write(args.out, "results.json", results)
    lines = [
        f"{setting}; `{record['command']}`; commit {record['commit']}, {record['date']}; "
        f"machine {'idle' if record['idle'] else 'NOT idle'} "
        f"(others' CPU share {record['others_cpu_share']})",
        "",
        "| role | model | backend | docs/s | x teacher |",
        "| --- | --- | --- | ---: | ---: |",
        *(
            f"| {r['role']} | {r['model']} | {r['backend']} | {r['docs_per_s']:.2f} "
            f"| {r['docs_per_s'] / t_rate:.1f} |"
            for r in rows
        ),
    ]
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}/results.json, table.md")


if __name__ == "__main__":
    main()
