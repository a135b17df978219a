"""Distillation losses.

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


def rank_distill_loss(
    queries: Tensor,
    docs: Tensor,
    teacher_queries: Tensor,
    teacher_docs: Tensor,
    temperature: float = 0.05,
) -> Tensor:
    """KL divergence from the teacher's to the student's in-batch ranking distributions.

    Every query is scored against every document of the batch (its own candidates and
    all others', which act as negatives). Both models' cosine scores are divided by
    `temperature` and turned into a softmax over the documents; the student learns the
    teacher's distribution. Only scores are compared, so the two embedding spaces need
    not share a dimension or a basis.

    Args:
        queries: (b, ds) student query embeddings, L2-normalised.
        docs: (m, ds) student document embeddings, L2-normalised.
        teacher_queries: (b, dt) teacher query embeddings, normalised.
        teacher_docs: (m, dt) teacher document embeddings, normalised.
        temperature: Softmax temperature of both score matrices.

    Returns:
        Scalar: mean over queries of KL(teacher || student).
    """
    student = torch.log_softmax(queries @ docs.T / temperature, dim=1)
    teacher = torch.softmax(teacher_queries @ teacher_docs.T / temperature, dim=1)
    return nn.functional.kl_div(student, teacher, reduction="batchmean")


class RankDistillLoss(nn.Module):
    """sentence-transformers loss wrapping `rank_distill_loss`.

    Inputs are columns (query, doc_1, ..., doc_n); labels hold the teacher embeddings of
    the same n + 1 texts, concatenated (shape (b, (n + 1) * teacher_dim)).

    Args:
        model: The student `SentenceTransformer`.
        temperature: Softmax temperature (0.05 spreads cosines like a scale of 20).
    """

    def __init__(self, model: nn.Module, temperature: float = 0.05) -> None:
        super().__init__()
        self.model, self.temperature = model, temperature

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        columns = [
            torch.nn.functional.normalize(self.model(f)["sentence_embedding"], dim=-1)
            for f in sentence_features
        ]
        teacher = labels.reshape(labels.shape[0], len(columns), -1)
        teacher = torch.nn.functional.normalize(teacher, dim=-1)
        docs = torch.cat(columns[1:])
        teacher_docs = torch.cat([teacher[:, i] for i in range(1, len(columns))])
        return rank_distill_loss(columns[0], docs, teacher[:, 0], teacher_docs, self.temperature)
