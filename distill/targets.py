"""Teacher targets in the student's space.

When the student's dimension is smaller than the teacher's, the teacher's embeddings
are reduced by PCA (uncentred SVD, which keeps inner products best) and rotated onto
the student's own current embeddings by orthogonal Procrustes. The student starts
close to its targets, no random projection touches its gradients, and the targets
keep the teacher's similarity structure up to the PCA error. The alternative, a
trainable projection initialised at random, wrecks the student before the map is
learned (docs/experiments.md, "Random projection for the MSE loss").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TargetMap:
    """``targets = normalise(teacher @ matrix)``.

    Attributes:
        matrix: float32 (teacher_dim, student_dim); identity when dims match.
        explained: Share of the teacher embeddings' energy the map keeps (1.0 if identity).
    """

    matrix: np.ndarray
    explained: float

    def apply(self, teacher: np.ndarray) -> np.ndarray:
        """Map teacher embeddings (n, teacher_dim) to unit targets (n, student_dim)."""
        out = teacher.astype(np.float32) @ self.matrix
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def fit_target_map(teacher: np.ndarray, student: np.ndarray) -> TargetMap:
    """Fit PCA + Procrustes from paired embeddings of the same texts.

    Args:
        teacher: (n, dt) teacher embeddings, normalised.
        student: (n, ds) the untrained student's embeddings of the same texts, ds <= dt.

    Raises:
        ValueError: shapes disagree or the student is wider than the teacher.
    """
    n, dt = teacher.shape
    if student.shape[0] != n:
        raise ValueError(f"paired embeddings needed: {n} teacher rows vs {student.shape[0]}")
    ds = student.shape[1]
    if ds > dt:
        raise ValueError(f"student dim {ds} > teacher dim {dt}: a wider student is not supported")
    if ds == dt:
        return TargetMap(np.eye(dt, dtype=np.float32), 1.0)
    t = teacher.astype(np.float64)
    _, sing, vt = np.linalg.svd(t, full_matrices=True)  # vt is (dt, dt) even when n < dt
    pca = vt[:ds].T  # (dt, ds)
    reduced = t @ pca
    u, _, wt = np.linalg.svd(reduced.T @ student.astype(np.float64))
    rotation = u @ wt
    explained = float((sing[:ds] ** 2).sum() / (sing**2).sum())
    return TargetMap((pca @ rotation).astype(np.float32), explained)


def fidelity(student: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Mean cosine and MSE between normalised student embeddings and targets."""
    cos = np.sum(student * targets, axis=1)
    return {"cosine": float(cos.mean()), "mse": float(np.mean((student - targets) ** 2))}
