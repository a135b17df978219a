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


def layer_subset(teacher: SentenceTransformer, layers: tuple[int, ...]) -> SentenceTransformer:
    """A copy of `teacher` keeping only the given transformer layers (in order).

    Raises:
        ValueError: a layer number is out of range.
    """
    student = copy.deepcopy(teacher)
    backbone: Any = student[0].auto_model
    encoder_layers = backbone.encoder.layer
    if max(layers) >= len(encoder_layers):
        raise ValueError(
            f"layers {list(layers)}: the teacher has {len(encoder_layers)} layers "
            f"(0..{len(encoder_layers) - 1})"
        )
    backbone.encoder.layer = torch.nn.ModuleList([encoder_layers[i] for i in layers])
    backbone.config.num_hidden_layers = len(layers)
    return student


def build_student(spec: StudentSpec, teacher: SentenceTransformer) -> SentenceTransformer:
    """The untrained student for `spec` (a deep copy; the teacher is not modified)."""
    if spec.layers is not None:
        return layer_subset(teacher, spec.layers)
    assert spec.model is not None
    folder: Path = resolve_model(spec.model)
    return SentenceTransformer(str(folder), device="cpu", local_files_only=True)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
