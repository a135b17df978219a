"""One `distilsearch distill` run as a user runs it: wall time, peak memory, the report.

    python bench/distill_run.py --out bench/out/distill-run -- \
        --data ../shared/data/beir/scifact --out runs/student [more distill options]

Everything after ``--`` goes to ``distilsearch distill`` unchanged. The command runs in
a child process; its wall time and the child's peak resident memory (``getrusage``)
are measured here, and the run's ``distill_report.json`` is copied beside them. Writes
``results.json`` (with the command, commit, date and whether the machine was idle) and
``table.md`` (the candidates the run measured and the one it emitted).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from provenance import Provenance, write


def _student_out(args: list[str]) -> Path:
    """The ``--out`` among distill's arguments."""
    for i, arg in enumerate(args):
        if arg == "--out" and i + 1 < len(args):
            return Path(args[i + 1])
        if arg.startswith("--out="):
            return Path(arg.split("=", 1)[1])
    raise SystemExit("error: give distill an --out after --")


def table(report: dict[str, Any]) -> str:
    """The candidates of a transformer run as Markdown (a static run has one row)."""
    choice = report.get("choice")
    if not choice:  # a static run: its gate's variants
        gate = report["gate"]
        rows = [f"| {name} | {score:.4f} |" for name, score in gate["candidates"].items()]
        head = f"emitted: {gate['emitted']}\n\n| variant | validation nDCG@10 |\n| --- | ---: |"
        return "\n".join([head, *rows]) + "\n"
    lines = [
        f"emitted: {choice['emitted']} ({choice['reason']})",
        "",
        "| candidate | select nDCG@10 | tune nDCG@10 | docs/s | x fp32 teacher "
        "| x fastest teacher | vs baseline (gain, p) | verdict |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for c in choice["candidates"]:
        base = c.get("vs_baseline")
        vs = f"{base['gain']:+.4f}, {base['p']:.3f}" if base else "–"
        lines.append(
            f"| {c['name']} | {c['ndcg10']:.4f} | {c['tune_ndcg10']:.4f} | "
            f"{c['docs_per_s']:,.1f} | {c['x_teacher']:,.1f} | {c['x_fastest_teacher']:,.1f} | "
            f"{vs} | {c['verdict']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/out/distill-run"))
    parser.add_argument("distill_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    given = [a for a in args.distill_args if a != "--"]
    student = _student_out(given)
    prov = Provenance()
    t0 = time.perf_counter()
    cmd = [str(Path(sys.executable).with_name("distilsearch")), "distill", *given]
    rc = subprocess.run(cmd, check=False).returncode
    wall = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: kB
    if rc != 0:
        raise SystemExit(f"distill exited {rc}")
    report = json.loads((student / "distill_report.json").read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(student / "distill_report.json", args.out / "distill_report.json")
    results = {
        "provenance": prov.finish(),
        "distill_command": " ".join(["distilsearch", "distill", *given]),
        "wall_seconds": round(wall, 1),
        "peak_rss_gib": round(peak_kb / 2**20, 2),
        "train_seconds": report.get("train_seconds"),
        "teacher_labelled_now": report["texts"]["teacher_labelled_now"],
        "texts": report["texts"]["total"],
        "emitted": (report.get("choice") or {}).get("emitted", report["kind"]),
    }
    write(args.out, "results.json", results)
    record = results["provenance"]
    heading = (
        f"`{results['distill_command']}`: {wall / 60:.1f} min wall, peak RSS "
        f"{results['peak_rss_gib']} GiB, the teacher labelled {results['teacher_labelled_now']:,}"
        f" of {results['texts']:,} texts in this run; `{record['command']}`; commit "
        f"{record['commit']}, {record['date']}; machine "
        f"{'idle' if record['idle'] else 'NOT idle'} (others' CPU share "
        f"{record['others_cpu_share']})"
    )
    (args.out / "table.md").write_text(f"{heading}\n\n{table(report)}")
    print(json.dumps(results, indent=2))
    print(f"wrote {args.out}/results.json, table.md")


if __name__ == "__main__":
    main()
