"""The growth operators on their own: each preserves W @ x when its input is n copies of x."""

import pytest
import torch

from hyperclone.ops import (
    grow_emitted_matrix,
    grow_linear,
    mixing_matrix,
    repeat_sections,
    scale_norm_weight,
    zero_sum_noise,
)


@pytest.mark.parametrize("p,q", [(1, 1), (2, 2), (3, 2), (2, 3), (1, 4), (4, 1), (3, 3)])
@pytest.mark.parametrize("mode", ["symmetric", "noisy", "diagonal"])
def test_mixing_rows_sum_to_one(p, q, mode):
    mixing = mixing_matrix(p, q, mode)
    assert mixing.shape == (p, q)
    assert torch.allclose(mixing.sum(1), torch.ones(p, dtype=torch.float64))
    assert (mixing >= 0).all()


def test_diagonal_mixing_is_block_identity():
    assert torch.equal(mixing_matrix(3, 3, "diagonal"), torch.eye(3, dtype=torch.float64))


def test_symmetric_grow_linear_is_tile_divided():
    w = torch.randn(5, 4)
    grown = grow_linear(w, [(5, 2)], 2, "symmetric")
    assert torch.allclose(grown, torch.tile(w, (2, 2)) / 2)


@pytest.mark.parametrize("mode", ["symmetric", "noisy", "diagonal"])
@pytest.mark.parametrize("sections,in_copies", [([(6, 2)], 2), ([(6, 3)], 3), ([(4, 2), (2, 2), (2, 2)], 2),
                                                ([(6, 3)], 2), ([(6, 2)], 3), ([(6, 1)], 4)])
def test_grow_linear_preserves_function_on_copies(mode, sections, in_copies):
    gen = torch.Generator().manual_seed(0)
    rows = sum(size for size, _ in sections)
    w = torch.randn(rows, 5, generator=gen, dtype=torch.float64).float()
    x = torch.randn(5, generator=gen)
    grown = grow_linear(w, sections, in_copies, mode, snr_db=0.0, generator=gen)
    y = grown @ x.repeat(in_copies)
    expected = repeat_sections(w @ x, sections)
    assert torch.allclose(y, expected, atol=1e-5, rtol=1e-5)
    breaks_symmetry = mode == "noisy" or (mode == "diagonal" and sections[0][1] > 1)
    if breaks_symmetry and in_copies > 1:
        assert not torch.allclose(grown, grow_linear(w, sections, in_copies, "symmetric"))


def test_noise_sums_to_zero_and_has_requested_scale():
    noise = zero_sum_noise(200, 300, 2, std=0.5, generator=torch.Generator().manual_seed(1))
    assert noise.sum(0).abs().max() < 1e-6
    assert abs(noise[0].std().item() - 0.5) < 0.01


def test_noisy_snr_sets_noise_power():
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(300, 200, generator=gen)
    grown = grow_linear(w, [(300, 1)], 2, "noisy", snr_db=0.0, generator=gen)
    noise = grown[:, :200] - w / 2
    assert abs(noise.pow(2).mean().sqrt().item() / (w / 2).pow(2).mean().sqrt().item() - 1.0) < 0.05


def test_fused_sections_keep_their_order():
    v = torch.arange(6.0)
    assert repeat_sections(v, [(2, 2), (4, 1)]).tolist() == [0, 1, 0, 1, 2, 3, 4, 5]


def test_emitted_matrix_repeats_columns_and_scales():
    e = torch.randn(7, 3)
    grown = grow_emitted_matrix(e, [(7, 1)], 2, scale=0.5)
    assert torch.allclose(grown, torch.cat([e, e], 1) * 0.5)


def test_scale_norm_weight_with_offset():
    w = torch.tensor([0.1, -0.2])
    scaled = scale_norm_weight(w, 0.5, offset=1.0)
    assert torch.allclose(scaled + 1.0, (w + 1.0) * 0.5)


def test_bfloat16_kept():
    w = torch.randn(4, 4).to(torch.bfloat16)
    assert grow_linear(w, [(4, 2)], 2).dtype == torch.bfloat16
