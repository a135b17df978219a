"""The model card of a transformer student: a README.md for its folder, from its report."""

from __future__ import annotations

from pydantic import JsonValue

from distill.report import Gate, Stage, TransformerReport

_METHODS = {
    "rank": "matching the teacher's in-batch rankings of mined query-document pairs "
    "(KL divergence of the score softmaxes)",
    "mse": "embedding matching (MSE to PCA-reduced teacher embeddings)",
    "mse+structure": "embedding matching (MSE) plus the in-batch similarity structure",
}


def gate_line(gate: Gate) -> str:
    """One line: validation nDCG@10 before -> after, and which weights were emitted."""
    low, high = gate.gain_ci95 or (0.0, 0.0)
    teacher = f"{gate.teacher:.4f}" if gate.teacher is not None else "not measured"
    return (
        f"{gate.before:.4f} -> {gate.after or gate.before:.4f} (teacher {teacher}) on "
        f"{gate.queries} queries x {gate.docs} docs, {gate.source}; gain "
        f"{gate.gain or 0.0:+.4f} [95 % CI {low:+.4f}, {high:+.4f}], p {gate.gain_p or 1.0:.3f}; "
        f"emitted {gate.emitted} weights ({gate.why})"
    )


def stage_rows(stages: list[Stage]) -> list[tuple[str, str]]:
    """A model-card row per training stage: time, validation nDCG@10 and verdict."""
    rows = []
    for stage in stages:
        verdict = "kept" if stage.kept else "reverted (it scored below its start)"
        rows.append(
            (
                f"stage: {stage.name}",
                f"{stage.seconds:.0f} s, validation nDCG@10 {stage.before or 0.0:.4f} -> "
                f"{stage.after or 0.0:.4f}, {verdict}",
            )
        )
    return rows


def _compression_rows(report: TransformerReport) -> list[tuple[str, str]]:
    """Rows of what compression did: the ONNX export, the int8 verdict, the served
    artifact's speed ratio."""
    comp = report.compression or {}
    rows = []
    onnx, int8 = comp.get("onnx"), comp.get("int8")
    if isinstance(onnx, dict):
        rows.append(
            (
                "ONNX fp32",
                f"cosine to torch {_num(onnx, 'cosine_mean'):.5f}, "
                f"{_num(onnx, 'size_mb'):.0f} MB, {_num(onnx, 'speedup'):.2f}x torch",
            )
        )
    if isinstance(int8, dict):
        verdict = "written" if int8.get("written") else "refused"
        rows.append(("ONNX int8", f"{verdict}: {int8.get('reason')}"))
    served = report.served_speed_ratio
    if served is not None:
        rows.append((f"speed vs teacher, as served ({served.backend})", f"{served.ratio:.1f}x"))
    return rows


def _num(record: dict[str, JsonValue], key: str) -> float:
    value = record.get(key)
    return float(value) if isinstance(value, int | float) else float("nan")


def model_card(report: TransformerReport) -> str:
    """A model card (README.md) for the student folder, from its report."""
    fid, texts = report.fidelity, report.texts
    sources = ", ".join(f"{k} {v}" for k, v in texts.by_source.items())
    params, size = report.params, report.size_mb
    rows = [
        ("training texts", f"{texts.total} ({sources})"),
        ("held-out texts", str(texts.heldout)),
        *stage_rows(report.stages),
        ("training time", f"{report.train_seconds} s"),
        ("token window", str(report.config.get("max_seq_length", "model default"))),
        ("parameters", f"{params.student:,} (teacher {params.teacher:,})"),
        ("size on disk", f"{size.student or 0.0:.1f} MB (teacher {size.teacher or 0.0:.1f} MB)"),
        ("fidelity, cosine to targets", f"{fid.before.cosine:.4f} -> {fid.after.cosine:.4f}"),
        ("target map energy kept", f"{report.target_map_explained:.4f}"),
        ("speed vs teacher (same held-out texts)", f"{report.speed_ratio:.1f}x"),
        *_compression_rows(report),
        ("retrieval gate (nDCG@10)", gate_line(report.gate)),
    ]
    method = _METHODS[str(report.config["loss"])]
    lines = [
        f"# distilsearch student of {report.teacher}",
        "",
        f"Distilled by {method} from `{report.teacher}` "
        f"(hash `{report.teacher_hash}`) into `{report.student}`.",
        "",
        "| fact | value |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in rows),
        "",
        "Load it with `search.encoder.load_encoder(path)` (or "
        "`SentenceTransformer(path)` for a transformer); BEIR scores: "
        "`distilsearch eval --model PATH`.",
        *candidate_table(report),
    ]
    return "\n".join(lines) + "\n"


def candidate_table(report: TransformerReport) -> list[str]:
    """The candidates' table and why the emitted one won (Markdown lines)."""
    choice, speed = report.choice, report.teacher_speed
    if choice is None or speed is None:
        return []
    lines = [
        "",
        "## How this model was chosen",
        "",
        f"Emitted **{choice.emitted}**: {choice.reason}. nDCG@10 on {report.gate.queries} "
        f"validation queries training never saw ({report.gate.source}); docs/s of each "
        f"served form on the same documents as the teacher (fp32 "
        f"{speed.fp32_docs_per_s:.2f} docs/s; {speed.fastest_form} "
        f"{speed.fastest_docs_per_s:.2f}).",
        "",
        "| candidate | served as | nDCG@10 | docs/s | x teacher | x fastest teacher | MB "
        "| vs teacher (p) | vs baseline (p) | verdict |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for row in choice.candidates:
        base = row.vs_baseline
        versus = f"{base.gain:+.4f} ({base.p:.3f})" if base else "–"
        fastest = f"{row.x_fastest_teacher:.1f}" if row.x_fastest_teacher else "–"
        lines.append(
            f"| {row.name} | {row.backend} | {row.ndcg10:.4f} | {row.docs_per_s:.1f} | "
            f"{row.x_teacher:.1f} | {fastest} | {row.size_mb:.0f} | "
            f"{row.vs_teacher.gain:+.4f} ({row.vs_teacher.p:.3f}) | {versus} | {row.verdict} |"
        )
    return lines
