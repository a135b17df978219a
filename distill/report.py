"""The distillation report's model card: a README.md for the student folder."""

from __future__ import annotations

import json
from typing import Any

_METHODS = {
    "rank": "matching the teacher's in-batch rankings of mined query-document pairs "
    "(KL divergence of the score softmaxes)",
    "mse": "embedding matching (MSE to PCA-reduced teacher embeddings)",
    "mse+structure": "embedding matching (MSE) plus the in-batch similarity structure",
}


def gate_line(gate: dict[str, Any]) -> str:
    """One line: validation nDCG@10 before -> after, and which weights were emitted."""
    low, high = gate["gain_ci95"]
    return (
        f"{gate['before']:.4f} -> {gate['after']:.4f} (teacher {gate['teacher']:.4f}) on "
        f"{gate['queries']} queries x {gate['docs']} docs, {gate['source']}; gain "
        f"{gate['gain']:+.4f} [95 % CI {low:+.4f}, {high:+.4f}], p {gate['gain_p']:.3f}; "
        f"emitted {gate['emitted']} weights ({gate['why']})"
    )


def stage_rows(stages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """A model-card row per training stage: time, validation nDCG@10 and verdict."""
    rows = []
    for stage in stages:
        verdict = "kept" if stage["kept"] else "reverted (it scored below its start)"
        rows.append(
            (
                f"stage: {stage['name']}",
                f"{stage['seconds']:.0f} s, validation nDCG@10 {stage['before']:.4f} -> "
                f"{stage['after']:.4f}, {verdict}",
            )
        )
    return rows


def model_card(report: dict[str, Any]) -> str:
    """A model card (README.md) for the student folder, from its report."""
    fid, texts = report["fidelity"], report["texts"]
    sources = ", ".join(f"{k} {v}" for k, v in texts["by_source"].items())
    params, size = report["params"], report["size_mb"]
    rows = [
        ("training texts", f"{texts['total']} ({sources})"),
        ("held-out texts", texts["heldout"]),
        *stage_rows(report.get("stages", [])),
        ("training time", f"{report['train_seconds']} s"),
        ("token window", report["config"].get("max_seq_length", "model default")),
        ("parameters", f"{params['student']:,} (teacher {params['teacher']:,})"),
        ("size on disk", f"{size['student']:.1f} MB (teacher {size['teacher']:.1f} MB)"),
        (
            "fidelity, cosine to targets",
            f"{fid['before']['cosine']:.4f} -> {fid['after']['cosine']:.4f}",
        ),
        ("target map energy kept", f"{report['target_map_explained']:.4f}"),
        ("speed vs teacher (same held-out texts)", f"{report['speed_ratio']:.1f}x"),
    ]
    comp = report.get("compression", {})
    if "onnx" in comp:
        onnx = comp["onnx"]
        rows.append(
            (
                "ONNX fp32",
                f"cosine to torch {onnx['cosine_mean']:.5f}, "
                f"{onnx['size_mb']:.0f} MB, {onnx['speedup']:.2f}x torch",
            )
        )
    if "int8" in comp:
        int8 = comp["int8"]
        verdict = "written" if int8["written"] else "refused"
        rows.append(("ONNX int8", f"{verdict}: {int8['reason']}"))
    if "served_speed_ratio" in report:
        served = report["served_speed_ratio"]
        rows.append(
            (f"speed vs teacher, as served ({served['backend']})", f"{served['ratio']:.1f}x")
        )
    rows.append(("retrieval gate (nDCG@10)", gate_line(report["gate"])))
    method = _METHODS[report["config"]["loss"]]
    lines = [
        f"# distilsearch student of {report['teacher']}",
        "",
        f"Distilled by {method} from `{report['teacher']}` "
        f"(hash `{report['teacher_hash']}`) into `{report['student']}`.",
        "",
        "| fact | value |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in rows),
        "",
        "Load it with `SentenceTransformer(path)`; BEIR scores: `distilsearch eval --model PATH`.",
    ]
    if report.get("beir"):
        lines += ["", "```json", json.dumps(report["beir"], indent=2), "```"]
    return "\n".join(lines) + "\n"
