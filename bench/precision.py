"""What the CPU's matrix units buy, measured in one run: bf16 against fp32 for matrix
multiplies, encoding and training steps, and int8 ONNX against torch for the served
student.

    python bench/precision.py [--data ../shared/data/beir/scifact] [--docs 96]
        [--out bench/out/precision]

Rows (2 threads unless torch is told otherwise):
- a 2048x2048 matmul in fp32 and bf16 (GFLOP/s);
- encoding `--docs` corpus documents with the teacher (384 tokens) and MiniLM (384)
  as `search.encoder.TorchEncoder` batches them: fp32, ``torch.autocast`` bf16, and
  bf16 weights, with the cosine of each to fp32;
- a MiniLM training step (forward and backward, 32 documents at 384 tokens) in fp32
  and under autocast bf16;
- the served forms of MiniLM at its 256-token window: int8 ONNX (exported and
  quantized as `distill` does) against torch fp32 and bf16;
- onnxruntime's int8 GEMM (MatMulInteger, u8 x s8) against its fp32 MatMul: int8 at
  about 4x fp32 means the VNNI (or AMX) dot-product kernels run; without them int8
  runs at about 2x.
Writes ``results.json`` (with the command, commit, date and whether the machine was
idle) and ``table.md`` under `--out`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from provenance import Provenance, write

from search.assets import MINILM_NAME, TEACHER_NAME, resolve_model
from search.corpus import iter_documents
from search.devices import bf16_units, cpu_flags
from search.encoder import TorchEncoder
from search.types import document_text

DEFAULT_DATA = Path(os.environ.get("DISTILSEARCH_DATA", "../shared/data/beir")) / "scifact"


def best_of(fn: Callable[[], Any], repeats: int = 3) -> float:
    """Fastest of `repeats` timed calls of `fn`, seconds (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def matmul_rates(n: int = 2048) -> dict[str, float]:
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        x, y = a.to(dtype), b.to(dtype)
        seconds = best_of(lambda x=x, y=y: [x @ y for _ in range(4)]) / 4
        out[name] = round(2 * n**3 / seconds / 1e9, 1)
    return out


@contextlib.contextmanager
def autocast(on: bool) -> Iterator[None]:
    with torch.autocast("cpu", dtype=torch.bfloat16) if on else contextlib.nullcontext():
        yield


def encoding_rows(name: str, docs: list[str], window: int) -> list[dict[str, Any]]:
    """docs/s of `name` at `window` tokens in fp32, under autocast, with bf16 weights."""
    encoder = TorchEncoder(resolve_model(name), name=name)
    encoder.model.max_seq_length = window
    rows, ref = [], None
    for mode in ("fp32", "autocast bf16", "bf16 weights"):
        if mode == "bf16 weights":
            encoder.to_bf16()
        with autocast(mode == "autocast bf16"):
            vecs = encoder.encode(docs)
            seconds = best_of(lambda: encoder.encode(docs), repeats=2)
        ref = vecs if ref is None else ref
        cos = (ref * vecs).sum(axis=1)
        rows.append(
            {
                "model": name,
                "window": window,
                "mode": mode,
                "docs_per_s": round(len(docs) / seconds, 2),
                "cosine_mean": round(float(cos.mean()), 6),
                "cosine_min": round(float(cos.min()), 6),
            }
        )
    base = rows[0]["docs_per_s"]
    for row in rows:
        row["x_fp32"] = round(row["docs_per_s"] / base, 2)
    return rows


def training_step_rows(docs: list[str]) -> list[dict[str, Any]]:
    """Seconds of one MiniLM training step (32 documents at 384 tokens, forward and
    backward, AdamW) in fp32 and under autocast bf16."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(resolve_model(MINILM_NAME)), device="cpu")
    model.max_seq_length = 384
    batch = model.tokenize(docs[:32])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    rows = []
    for mode in ("fp32", "autocast bf16"):

        def step(mode: str = mode) -> None:
            with autocast(mode != "fp32"):
                emb = model(dict(batch))["sentence_embedding"]
                loss = (emb.float() ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        rows.append({"mode": mode, "step_seconds": round(best_of(step), 3)})
    rows[1]["x_fp32"] = round(rows[0]["step_seconds"] / rows[1]["step_seconds"], 2)
    return rows


def served_rows(docs: list[str]) -> list[dict[str, Any]]:
    """docs/s of MiniLM at its shipped 256-token window as int8 ONNX, torch fp32 and
    torch bf16, on the same documents, batched as each encoder batches."""
    import shutil

    from distill.compress.export import export_onnx
    from distill.compress.quantize import QualityGate, quantize_int8
    from search.onnx_encoder import OnnxEncoder

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "minilm"
        shutil.copytree(resolve_model(MINILM_NAME), folder)
        export_onnx(folder, docs[:64])
        quantize_int8(folder, docs[:64], QualityGate())
        rows = []
        forms: list[tuple[str, Any]] = [
            ("onnx int8", OnnxEncoder(folder, quantized=True)),
            ("torch fp32", TorchEncoder(folder)),
        ]
        bf16 = TorchEncoder(folder)
        bf16.to_bf16()
        forms.append(("torch bf16", bf16))
        for name, encoder in forms:
            seconds = best_of(lambda e=encoder: e.encode(docs), repeats=2)
            rows.append({"form": name, "docs_per_s": round(len(docs) / seconds, 2)})
    return rows


def _gemm_model(int8: bool, n: int) -> bytes:
    from onnx import TensorProto, helper

    if int8:
        a = helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])
        b = helper.make_tensor_value_info("b", TensorProto.INT8, [n, n])
        y = helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])
        node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
    else:
        a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])
        b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
    graph = helper.make_graph([node], "gemm", [a, b], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def ort_gemm_rates(n: int = 2048) -> dict[str, float]:
    """onnxruntime GEMM throughput, fp32 MatMul and int8 MatMulInteger (G ops/s)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    rng = np.random.default_rng(0)
    out = {}
    for name, int8 in (("fp32", False), ("int8", True)):
        session = ort.InferenceSession(_gemm_model(int8, n), opts, ["CPUExecutionProvider"])
        if int8:
            feeds = {
                "a": rng.integers(0, 255, (n, n), dtype=np.uint8),
                "b": rng.integers(-127, 127, (n, n), dtype=np.int8),
            }
        else:
            feeds = {"a": rng.standard_normal((n, n), np.float32)}
            feeds["b"] = rng.standard_normal((n, n), np.float32)
        seconds = best_of(lambda s=session, f=feeds: s.run(None, f))
        out[name] = round(2 * n**3 / seconds / 1e9, 1)
    return out


def sample_docs(data: Path, n: int, seed: int = 0) -> list[str]:
    docs = [document_text(t, x) for _, t, x in iter_documents(data)]
    return random.Random(seed).sample(docs, min(n, len(docs)))


def table(results: dict[str, Any]) -> str:
    rec = results["provenance"]
    lines = [
        f"CPU units {results['bf16_units']} ({', '.join(results['cpu_flags'])}), "
        f"{results['threads']} threads; `{rec['command']}`; commit {rec['commit']}, "
        f"{rec['date']}; machine {'idle' if rec['idle'] else 'NOT idle'} (others' CPU share "
        f"{rec['others_cpu_share']})",
        "",
        "| what | fp32 | bf16 / int8 | x |",
        "| --- | ---: | ---: | ---: |",
    ]
    mm = results["matmul_gflops"]
    ratio = mm["bf16"] / mm["fp32"]
    lines.append(f"| matmul 2048² GFLOP/s | {mm['fp32']} | {mm['bf16']} (bf16) | {ratio:.2f} |")
    for row in results["encoding"]:
        base = next(r for r in results["encoding"] if r["model"] == row["model"])
        if row is base:
            continue
        lines.append(
            f"| encode {row['model']} @{row['window']} docs/s | {base['docs_per_s']} | "
            f"{row['docs_per_s']} ({row['mode']}, cos min {row['cosine_min']}) | "
            f"{row['x_fp32']} |"
        )
    steps = results["training_step"]
    lines.append(
        f"| MiniLM training step s | {steps[0]['step_seconds']} | "
        f"{steps[1]['step_seconds']} (autocast bf16) | {steps[1]['x_fp32']} |"
    )
    served = {r["form"]: r["docs_per_s"] for r in results["served"]}
    lines.append(
        f"| MiniLM@256 served docs/s | {served['torch fp32']} (torch) | "
        f"{served['onnx int8']} (ONNX int8); torch bf16 {served['torch bf16']} | "
        f"{served['onnx int8'] / served['torch fp32']:.2f} |"
    )
    gemm = results["ort_gemm_gops"]
    lines.append(
        f"| onnxruntime GEMM 2048² G ops/s | {gemm['fp32']} | {gemm['int8']} (int8) | "
        f"{gemm['int8'] / gemm['fp32']:.2f} |"
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--docs", type=int, default=96)
    parser.add_argument("--out", type=Path, default=Path("bench/out/precision"))
    args = parser.parse_args()
    docs = sample_docs(args.data, args.docs)
    prov = Provenance()
    results: dict[str, Any] = {
        "bf16_units": bf16_units(),
        "cpu_flags": sorted(f for f in cpu_flags() if "bf16" in f or "vnni" in f or "amx" in f),
        "threads": torch.get_num_threads(),
        "matmul_gflops": matmul_rates(),
        "ort_gemm_gops": ort_gemm_rates(),
    }
    print(json.dumps(results), flush=True)
    results["encoding"] = encoding_rows(TEACHER_NAME, docs, 384) + encoding_rows(
        MINILM_NAME, docs, 384
    )
    results["training_step"] = training_step_rows(docs)
    results["served"] = served_rows(docs)
    results["provenance"] = prov.finish()
    write(args.out, "results.json", results)
    (args.out / "table.md").write_text(table(results))
    print(table(results))
    print(json.dumps(results["provenance"]))


if __name__ == "__main__":
    main()
