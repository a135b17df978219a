"""Embedding-matching losses.

`SimilarityStructureLoss` adds to MSE a term that needs no shared space: the student's
in-batch cosine similarity matrix should equal the teacher's. Labels carry both the
target in the student's space and the raw teacher embedding, concatenated.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


def similarity_structure_loss(
    student: Tensor, target: Tensor, teacher: Tensor, weight: float = 1.0
) -> Tensor:
    """Squared distance to the targets plus the in-batch similarity-matrix error.

    Args:
        student: (b, ds) student embeddings, L2-normalised.
        target: (b, ds) teacher targets mapped into the student's space, normalised.
        teacher: (b, dt) raw teacher embeddings, normalised.
        weight: Weight of the similarity-matrix term.

    Returns:
        Scalar: mean over rows of ||student - target||² + weight * mean((S Sᵀ - T Tᵀ)²).
    """
    point = ((student - target) ** 2).sum(dim=1).mean()
    structure = ((student @ student.T - teacher @ teacher.T) ** 2).mean()
    return point + weight * structure


class SimilarityStructureLoss(nn.Module):
    """sentence-transformers loss wrapping `similarity_structure_loss`.

    Args:
        model: The student `SentenceTransformer` (must end in `Normalize`).
        student_dim: Width of the target part of each label; the rest is the teacher's.
        weight: Weight of the similarity-matrix term.
    """

    def __init__(self, model: nn.Module, student_dim: int, weight: float = 1.0) -> None:
        super().__init__()
        self.model, self.student_dim, self.weight = model, student_dim, weight

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        (features,) = list(sentence_features)
        emb = self.model(features)["sentence_embedding"]
        emb = torch.nn.functional.normalize(emb, dim=-1)
        target, teacher = labels[:, : self.student_dim], labels[:, self.student_dim :]
        return similarity_structure_loss(emb, target, teacher, self.weight)
