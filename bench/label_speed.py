"""Teacher labelling in fp32 and in bf16, the same texts both ways, in one run.

    python bench/label_speed.py [--data ../shared/data/beir/scifact] [--texts 8000]
        [--out bench/out/label-speed]

The texts are the ones `distill` labels with its default settings (`distill.texts.
split_texts`: corpus documents, their sentences, train queries, generic queries), all of
them or a seeded sample of `--texts`, which keeps their mix of long and short texts.
Each way encodes them all with `search.encoder.TorchEncoder` (token-bounded batches,
as `distill` labels), without the embedding cache, fp32 first.
Reports texts/s each way, their ratio, and the cosine of each bf16 label to its fp32
one (mean, minimum, 0.1 % quantile). Writes ``results.json`` with the command, commit,
date and whether the machine was idle.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
from provenance import Provenance, write

from distill.config import DistillConfig
from distill.texts import split_texts
from search.assets import TEACHER_NAME, resolve_model
from search.devices import bf16_units
from search.encoder import TorchEncoder

DEFAULT_DATA = Path(os.environ.get("DISTILSEARCH_DATA", "../shared/data/beir")) / "scifact"


def label(encoder: TorchEncoder, texts: list[str]) -> tuple[np.ndarray, float]:
    """The labels of `texts` and the texts/s it took (one pass, after a warm-up)."""
    encoder.encode(texts[:8])
    t0 = time.perf_counter()
    vecs = encoder.encode(texts, show_progress=True)
    return vecs, len(texts) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--texts", type=int, default=8000)
    parser.add_argument("--teacher", default=TEACHER_NAME)
    parser.add_argument("--out", type=Path, default=Path("bench/out/label-speed"))
    args = parser.parse_args()
    split = split_texts(DistillConfig(data=args.data, out=Path("unused")))
    texts = split.train + split.held
    if args.texts < len(texts):
        texts = random.Random(0).sample(texts, args.texts)
    prov = Provenance()
    teacher = TorchEncoder(resolve_model(args.teacher), name=args.teacher)
    fp32, fp32_rate = label(teacher, texts)
    print(f"fp32: {fp32_rate:.2f} texts/s", flush=True)
    teacher.to_bf16()
    bf16, bf16_rate = label(teacher, texts)
    print(f"bf16: {bf16_rate:.2f} texts/s", flush=True)
    cos = (fp32 * bf16).sum(axis=1)
    results: dict[str, Any] = {
        "teacher": args.teacher,
        "texts": len(texts),
        "bf16_units": bf16_units(),
        "fp32_texts_per_s": round(fp32_rate, 3),
        "bf16_texts_per_s": round(bf16_rate, 3),
        "speedup": round(bf16_rate / fp32_rate, 3),
        "fp32_minutes": round(len(texts) / fp32_rate / 60, 1),
        "bf16_minutes": round(len(texts) / bf16_rate / 60, 1),
        "cosine_mean": round(float(cos.mean()), 6),
        "cosine_min": round(float(cos.min()), 6),
        "cosine_q001": round(float(np.quantile(cos, 0.001)), 6),
        "provenance": prov.finish(),
    }
    write(args.out, "results.json", results)
    print({k: v for k, v in results.items() if k != "provenance"})
    print(results["provenance"])


if __name__ == "__main__":
    main()
