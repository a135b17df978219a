import torch

from distill.losses import similarity_structure_loss


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
