import pytest
import torch

from gcpcolor.config import ColorizerConfig, DeformatorConfig
from gcpcolor.models.deformator import LatentDeformator

DIM = ColorizerConfig().biggan.used_z_dims  # 119, as in the authors' deformator_for_biggan.pt


def deformator_with_scale(scale: float, seed: int, dim: int = DIM) -> LatentDeformator:
    """A deformator whose generator A has entries of size `scale` (trained ones are far from 0)."""
    torch.manual_seed(seed)
    deformator = LatentDeformator(DeformatorConfig(dim=dim))
    with torch.no_grad():
        deformator.log_mat_half.copy_(scale * torch.randn(dim, dim))
    return deformator


def taylor_expm(matrix: torch.Tensor, terms: int = 30) -> torch.Tensor:
    result = torch.eye(matrix.shape[0], dtype=matrix.dtype)
    term = torch.eye(matrix.shape[0], dtype=matrix.dtype)
    for k in range(1, terms):
        term = term @ matrix / k
        result = result + term
    return result


def test_state_dict_is_the_authors_single_parameter():
    deformator = LatentDeformator(DeformatorConfig())
    state = deformator.state_dict()
    assert list(state) == ["log_mat_half"]
    assert state["log_mat_half"].shape == (DIM, DIM)
    # Fresh init is 0.001·randn, so the matrix starts near the identity.
    assert 0.0005 < state["log_mat_half"].std() < 0.002
    torch.testing.assert_close(deformator.matrix().detach(), torch.eye(DIM), atol=0.02, rtol=0)
    stored = {"log_mat_half": torch.randn(DIM, DIM)}
    deformator.load_state_dict(stored, strict=True)
    torch.testing.assert_close(deformator.log_mat_half.detach(), stored["log_mat_half"])


@pytest.mark.parametrize("scale", [0.001, 0.1, 0.5])
def test_matrix_is_a_rotation(scale):
    matrix = deformator_with_scale(scale, seed=1).matrix().detach()
    torch.testing.assert_close(matrix.T @ matrix, torch.eye(DIM), atol=1e-5, rtol=0)
    # +1, not -1: a rotation, never a reflection (float32 rounding adds ~1e-4 over 119 dims).
    assert float(torch.linalg.det(matrix.double())) == pytest.approx(1.0, abs=1e-3)
    exact = deformator_with_scale(scale, seed=1).double().matrix().detach()
    assert float(torch.linalg.det(exact)) == pytest.approx(1.0, abs=1e-10)


def test_matrix_exponential_matches_scipy():
    linalg = pytest.importorskip("scipy.linalg")
    deformator = deformator_with_scale(0.3, seed=2).double()
    generator = (deformator.log_mat_half - deformator.log_mat_half.T).detach()
    expected = torch.from_numpy(linalg.expm(generator.numpy()))
    torch.testing.assert_close(deformator.matrix().detach(), expected, atol=1e-10, rtol=1e-10)


def test_small_matrix_agrees_with_taylor_series():
    """Runs without scipy too."""
    deformator = deformator_with_scale(0.05, seed=3, dim=6).double()
    generator = (deformator.log_mat_half - deformator.log_mat_half.T).detach()
    torch.testing.assert_close(deformator.matrix().detach(), taylor_expm(generator))


def test_forward_is_the_matrix_applied_to_each_row():
    deformator = deformator_with_scale(0.2, seed=4)
    shifts = torch.randn(5, DIM)
    expected = (deformator.matrix() @ shifts.T).T
    torch.testing.assert_close(deformator(shifts), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=f"{DIM} values per row"):
        deformator(torch.zeros(2, DIM + 1))


def test_direction_shift_norm_linearity_and_direction():
    deformator = deformator_with_scale(0.2, seed=5)
    shifts = torch.tensor([-16.0, -5.0, 0.0, 3.0, 16.0])
    index = 42
    with torch.no_grad():
        offsets = deformator.direction_shift(index, shifts)
        assert offsets.shape == (5, DIM)
        torch.testing.assert_close(offsets.norm(dim=1), shifts.abs(), atol=1e-4, rtol=1e-5)
        # Linear in the shift: every offset is the shift times one unit direction.
        unit = deformator.direction_shift(index, torch.tensor([1.0]))[0]
        torch.testing.assert_close(offsets, shifts[:, None] * unit, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(unit, deformator.matrix()[:, index])
        one_hot = torch.zeros(1, DIM)
        one_hot[0, index] = 3.0
        torch.testing.assert_close(offsets[3:4], deformator(one_hot))
        # Different directions are orthogonal.
        other = deformator.direction_shift(7, [1.0])[0]
        assert abs(float(unit @ other)) < 1e-5


@pytest.mark.parametrize("index", [-1, DIM, DIM + 5])
def test_direction_index_out_of_range(index):
    deformator = LatentDeformator(DeformatorConfig())
    with pytest.raises(IndexError, match=rf"\[0, {DIM - 1}\]"):
        deformator.direction_shift(index, torch.tensor([1.0]))


def test_direction_shift_rejects_non_vector_shifts():
    deformator = LatentDeformator(DeformatorConfig())
    with pytest.raises(ValueError, match="one-dimensional"):
        deformator.direction_shift(0, torch.zeros(2, 2))
