"""A cold ``make demo``: empty cache, no earlier demo output, until the page answers.

    python bench/cold_demo.py [--timeout 1800] [--out bench/out/cold-demo]

Runs ``make demo`` (``.venv`` already set up; a fresh machine adds ``make setup``'s
downloads) with ``DISTILSEARCH_CACHE`` pointing at a new, empty folder and
``runs/demo/quick`` removed, reads its output until it prints that the search page
answers, then stops it. Records the wall time from the start of ``make demo`` (the
demo prints its own count too), each step line with its time since the start, and the
comparison table the demo printed. Writes ``results.json`` (command, commit, date,
whether the machine was idle) and ``table.md``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from provenance import Provenance, write

ROOT = Path(__file__).resolve().parents[1]
ANSWERS = "the search page answers"


def run(timeout: float) -> tuple[float, list[tuple[float, str]], list[str]]:
    """Run the cold demo; return (seconds until the page answered, timed step lines,
    every line)."""
    shutil.rmtree(ROOT / "runs" / "demo" / "quick", ignore_errors=True)
    cache = tempfile.mkdtemp(prefix="cold-demo-cache-")
    env = {**os.environ, "DISTILSEARCH_CACHE": cache}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        ["make", "demo"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    steps: list[tuple[float, str]] = []
    lines: list[str] = []
    answered = None
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            lines.append(line.rstrip())
            now = time.perf_counter() - t0
            if re.match(r"\s*\[\d/\d\]|\s+\w+ed in ", line):
                steps.append((round(now, 1), line.strip()))
            if ANSWERS in line:
                answered = now
                break
            if now > timeout:
                break
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
        shutil.rmtree(cache, ignore_errors=True)
    if answered is None:
        raise SystemExit("the demo did not answer:\n" + "\n".join(lines[-30:]))
    return answered, steps, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--out", type=Path, default=Path("bench/out/cold-demo"))
    args = parser.parse_args()
    prov = Provenance()
    seconds, steps, lines = run(args.timeout)
    table = [x for x in lines if x.startswith("|")]
    caption = next((x for x in lines if "test, a slice:" in x), "")  # the table's caption
    record = prov.finish()
    write(
        args.out,
        "results.json",
        {
            "provenance": record,
            "seconds_until_answering": round(seconds, 1),
            "steps": [{"at_seconds": t, "line": x} for t, x in steps],
            "table": table,
            "caption": caption,
        },
    )
    heading = (
        f"cold `make demo` answered after {seconds / 60:.1f} min; `{record['command']}`; "
        f"commit {record['commit']}, {record['date']}; machine "
        f"{'idle' if record['idle'] else 'NOT idle'} (others' CPU share "
        f"{record['others_cpu_share']})"
    )
    timed = [f"- {t / 60:.1f} min: {x}" for t, x in steps]
    body = [heading, "", *timed, "", caption, "", *table]
    (args.out / "table.md").write_text("\n".join(body) + "\n")
    print("\n".join(body))
    print(f"wrote {args.out}/results.json, table.md")


if __name__ == "__main__":
    main()
