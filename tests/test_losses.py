import numpy as np
import pytest
import torch

from distill.transformer.losses import RankDistillLoss, rank_distill_loss, similarity_structure_loss


def test_zero_when_student_matches_targets_and_structure() -> None:
    t = torch.nn.functional.normalize(torch.randn(5, 4), dim=1)
    assert similarity_structure_loss(t, t, t).item() == 0.0


def test_by_hand() -> None:
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    teacher = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    # point: row 0 -> 0, row 1 -> 2; mean 1.
    # structure: S Sᵀ = I, T Tᵀ = all ones -> off-diagonals differ by 1: mean 2/4 = 0.5.
    got = similarity_structure_loss(s, target, teacher, weight=2.0)
    assert abs(got.item() - (1.0 + 2.0 * 0.5)) < 1e-6


def test_structure_term_ignores_rotations_of_the_student_space() -> None:
    t = torch.nn.functional.normalize(torch.randn(6, 3), dim=1)
    q, _ = torch.linalg.qr(torch.randn(3, 3))
    rotated = t @ q
    only_structure = similarity_structure_loss(rotated, rotated, t)
    assert only_structure.item() < 1e-10


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


def test_rank_loss_is_zero_when_student_ranks_like_teacher() -> None:
    g = torch.Generator().manual_seed(0)
    q, d = _unit(torch.randn(4, 16, generator=g)), _unit(torch.randn(8, 16, generator=g))
    assert rank_distill_loss(q, d, q, d).item() < 1e-6


def test_rank_loss_needs_no_shared_space() -> None:
    g = torch.Generator().manual_seed(1)
    q, d = _unit(torch.randn(4, 16, generator=g)), _unit(torch.randn(8, 16, generator=g))
    rot, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    # a rotated student scores exactly like the teacher: nothing to learn
    assert rank_distill_loss(q @ rot, d @ rot, q, d).item() < 1e-5
    shuffled = d[torch.randperm(8, generator=g)]
    assert rank_distill_loss(q, shuffled, q, d).item() > 0.1


def test_rank_loss_module_reads_concatenated_teacher_labels() -> None:
    g = torch.Generator().manual_seed(2)
    emb = [_unit(torch.randn(3, 8, generator=g)) for _ in range(3)]

    class Fixed(torch.nn.Module):
        def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {"sentence_embedding": emb[int(features["col"])]}

    loss = RankDistillLoss(Fixed())
    labels = torch.cat(emb, dim=1)  # teacher == student
    features = [{"col": torch.tensor(i)} for i in range(3)]
    assert loss(features, labels).item() < 1e-6
    worse = torch.cat([emb[0], emb[2], emb[1]], dim=1)
    assert loss(features, worse).item() > 0


def test_mining_picks_the_teacher_top_document_and_a_harder_one() -> None:
    from distill.transformer.mining import mine_rank_examples

    docs = [f"doc {i}" for i in range(30)]
    rng = np.random.default_rng(0)
    dv = rng.normal(size=(30, 8)).astype(np.float32)
    dv /= np.linalg.norm(dv, axis=1, keepdims=True)
    qv = dv[:5] + 0.01  # each query sits on one document
    qv /= np.linalg.norm(qv, axis=1, keepdims=True)
    ex = mine_rank_examples([f"q{i}" for i in range(5)], qv, docs, dv, depth=5, seed=0)
    assert ex.positives == docs[:5]
    for i, neg in enumerate(ex.negatives):
        top5 = np.argsort(-(dv @ qv[i]))[:5]
        assert docs.index(neg) in top5[1:]
    assert ex.labels.shape == (5, 24)
    np.testing.assert_allclose(ex.labels[0, 8:16], dv[0])


def test_mining_skips_a_text_that_is_its_own_top_document() -> None:
    from distill.transformer.mining import mine_rank_examples

    dv = np.eye(3, dtype=np.float32)
    ex = mine_rank_examples(["a", "x"], dv[:2], ["a", "b", "c"], dv, depth=2)
    assert ex.queries == ["x"] and ex.positives == ["b"]
    with pytest.raises(ValueError, match="at least 2 documents"):
        mine_rank_examples(["x"], dv[:1], ["a"], dv[:1])
