"""Student construction: a layer subset of the teacher, or a smaller pretrained model."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import SentenceTransformer

from distill.config import StudentSpec
from search.assets import resolve_model

logger = logging.getLogger(__name__)


def layer_subset(
    model: SentenceTransformer, layers: tuple[int, ...], name: str = "the teacher"
) -> SentenceTransformer:
    """A copy of `model` keeping only the given transformer layers (in order).

    Raises:
        ValueError: a layer number is out of range.
    """
    student = copy.deepcopy(model)
    backbone: Any = student[0].auto_model
    encoder_layers = backbone.encoder.layer
    if max(layers) >= len(encoder_layers):
        raise ValueError(
            f"layers {list(layers)}: {name} has {len(encoder_layers)} layers "
            f"(0..{len(encoder_layers) - 1})"
        )
    backbone.encoder.layer = torch.nn.ModuleList([encoder_layers[i] for i in layers])
    backbone.config.num_hidden_layers = len(layers)
    return student


def build_student(
    spec: StudentSpec, teacher: SentenceTransformer, folder: Path | None = None
) -> SentenceTransformer:
    """The untrained student for `spec` (a deep copy; the teacher is not modified).

    Args:
        spec: The parsed ``--student``.
        teacher: The teacher model, cut when ``spec.model`` is None.
        folder: ``spec.model`` already resolved (`search.assets.resolve_model`), if the
            caller has it.
    """
    if spec.model is None:
        assert spec.layers is not None
        return layer_subset(teacher, spec.layers)
    folder = folder or resolve_model(spec.model)
    student = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    if spec.layers is not None:
        student = layer_subset(student, spec.layers, spec.model)
    return student


def match_window(
    student: SentenceTransformer, teacher: SentenceTransformer, override: int | None = None
) -> int:
    """Give the student the teacher's token window (or `override`); return it.

    The student is trained to reproduce what the teacher makes of a text, so it should
    read the same tokens: all-MiniLM-L6-v2 ships with 256 where all-mpnet-base-v2 reads
    384, and 71 % of SciFact's documents are longer than 256 tokens. On corpora of
    short texts the wider window costs nothing (batches are sorted by length). The
    window is capped by the student's position embeddings.
    """
    backbone: Any = student[0].auto_model
    cap = int(getattr(backbone.config, "max_position_embeddings", 512))
    if getattr(backbone.config, "model_type", "") in {"mpnet", "roberta", "xlm-roberta"}:
        cap -= 2  # positions start after the padding index
    want = override or teacher.max_seq_length or student.max_seq_length or cap
    window = min(want, cap)
    student.max_seq_length = window
    return window


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
