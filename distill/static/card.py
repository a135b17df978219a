"""The model card of a static student: a README.md for its folder, from its report."""

from __future__ import annotations

from distill.report import StaticReport


def model_card(report: StaticReport) -> str:
    """A model card (README.md) for a static student folder, from its report."""
    gate, hybrid, speed, opts = report.gate, report.hybrid, report.speed, report.static
    scores = ", ".join(f"{k} {v:.4f}" for k, v in (gate.candidates or {}).items())
    teacher = f", teacher {gate.teacher:.4f}" if gate.teacher is not None else ""
    rows = [
        ("teacher", f"{report.teacher} ({report.teacher_hash})"),
        ("vectors", f"{report.vocabulary:,} tokens x {report.dim} ({opts['dtype']})"),
        ("options", ", ".join(f"{k}={v}" for k, v in opts.items())),
        ("training texts", f"{report.texts.total} ({report.texts.heldout} held out)"),
        ("validation nDCG@10", f"{scores}{teacher}; emitted {gate.emitted}"),
        (
            "hybrid with BM25",
            f"convex, dense weight {hybrid.weight}: nDCG@10 {hybrid.ndcg10:.4f} "
            f"(dense {hybrid.dense:.4f}, BM25 {hybrid.bm25:.4f}; {hybrid.chosen_on})",
        ),
        (
            "texts/s",
            f"{speed.docs_per_s:,.0f} (x{speed.ratio or 0:.0f} the teacher in "
            f"{speed.teacher_form or 'torch fp32'})",
        ),
        ("ms a query", f"{speed.query_ms:.3f}"),
    ]
    lines = [
        "---",  # model card metadata, read by model2vec when it loads the folder
        "library_name: model2vec",
        f"base_model: {report.teacher}",
        "tags: [static-embeddings, distilsearch]",
        "---",
        "",
        f"# Static student of {report.teacher}",
        "",
        "Made by `distilsearch distill --student static` (model2vec distillation, adapted "
        "to the corpus on the teacher's embeddings). Load it with "
        "`search.encoder.load_encoder` or `model2vec.StaticModel.from_pretrained`.",
        "",
        "| | |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in rows),
        "",
        f"Serve hybrid search with `DISTILSEARCH_HYBRID_WEIGHT={hybrid.weight}`.",
        "",
        "```json",
        gate.model_dump_json(by_alias=True, indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)
