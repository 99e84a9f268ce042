"""The growth operators on their own: every construction preserves W @ x on grown inputs, and the
norm-statistics arguments in hyperclone/axis_map.py hold numerically."""

import pytest
import torch

from hyperclone.grow.axis_map import (
    AxisMap,
    NoisePool,
    block_map,
    concat_maps,
    gather,
    gqa_head_maps,
    grow_matrix,
    halved_head_maps,
    layernorm_hidden_map,
    scale_norm_weight,
    tile_map,
    weighted_map,
)

MAPS = {
    "tile x2": lambda d: tile_map(d, 2 * d),
    "tile x3": lambda d: tile_map(d, 3 * d),
    "uneven copies": lambda d: tile_map(d, d + d // 2),
    "weighted 1.5x": lambda d: weighted_map(d, d + d // 2),
    "layernorm mean": lambda d: layernorm_hidden_map(d, d + d // 2),
    "identity": lambda d: tile_map(d, d),
}


@pytest.mark.parametrize("mode", ["symmetric", "noisy", "diagonal", "uneven"])
@pytest.mark.parametrize("in_kind", list(MAPS))
@pytest.mark.parametrize("out_kind", ["tile x2", "uneven copies", "weighted 1.5x", "layernorm mean", "identity"])
def test_grow_matrix_preserves_function(mode, in_kind, out_kind):
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(6, 8, generator=gen, dtype=torch.float64).float()
    x = torch.randn(8, generator=gen, dtype=torch.float64).float()
    in_map, out_map = MAPS[in_kind](8), MAPS[out_kind](6)
    grown = grow_matrix(w, out_map, in_map, mode, snr_db=0.0, generator=gen, noise_pool=NoisePool(1, 2**12))
    y = grown @ gather(x, 0, in_map)
    assert torch.allclose(y, gather(w @ x, 0, out_map), atol=1e-4, rtol=1e-4)


def test_symmetric_tile_is_hypercloning_rule():
    w = torch.randn(5, 4)
    assert torch.allclose(grow_matrix(w, tile_map(5, 10), tile_map(4, 8)), torch.tile(w, (2, 2)) / 2)


@pytest.mark.parametrize("mode", ["noisy", "diagonal", "uneven"])
def test_symmetry_breaking_modes_differ_from_symmetric(mode):
    w = torch.randn(6, 8)
    args = (tile_map(6, 12), tile_map(8, 16))
    symmetric = grow_matrix(w, *args)
    broken = grow_matrix(w, *args, mode=mode, snr_db=0.0, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(symmetric, broken)
    if mode == "uneven":  # LEMON: a neuron's copies keep its fan-in; their fan-out shares differ, so their
        # gradients differ from the first step on
        assert not torch.allclose(broken[:, :8], broken[:, 8:]), "the copies of an input must be read unevenly"
    else:
        assert not torch.allclose(broken[:6], broken[6:]), "output copies must differ"



@pytest.mark.parametrize("in_kind", ["tile x2", "tile x3", "uneven copies", "weighted 1.5x"])
def test_uneven_split_gives_each_copy_a_share_of_its_column(in_kind):
    """LEMON's asymmetric split: every input copy of source column i holds share_c * W[:, i] (the same factor in
    every row), the shares of a column's copies sum (scale-weighted) to one, and they differ from W/n at the
    level --noise-db asks for (0 dB: deviations as large as the symmetric share itself)."""
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(64, 400, generator=gen, dtype=torch.float64).float()
    in_map = MAPS[in_kind](400)
    grown = grow_matrix(w, tile_map(64, 64), in_map, "uneven", snr_db=0.0, generator=gen).double()
    idx = in_map.index
    shares = grown / w.double()[:, idx]
    assert torch.allclose(shares, shares[:1].expand_as(shares), atol=1e-5)  # one factor per column
    share = shares[0]
    total = torch.zeros(400, dtype=torch.float64).index_add_(0, idx, share * in_map.scale)
    assert torch.allclose(total, torch.ones(400, dtype=torch.float64), atol=1e-5)
    symmetric = in_map.reader()
    multi = in_map.copies() > 1
    deviation = (share - symmetric)[multi]
    ratio = float(deviation.pow(2).mean().sqrt() / symmetric[multi].pow(2).mean().sqrt())
    assert 0.8 < ratio < 1.25, ratio  # 0 dB


def test_noise_level_follows_snr():
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(300, 200, generator=gen)
    for snr_db in (0.0, 10.0):
        grown = grow_matrix(w, tile_map(300, 300), tile_map(200, 400), "noisy", snr_db=snr_db, generator=gen)
        noise = grown[:, :200] - w / 2
        ratio = noise.pow(2).mean().sqrt() / (w / 2).pow(2).mean().sqrt()
        assert abs(ratio.item() - 10 ** (-snr_db / 20)) < 0.05 * 10 ** (-snr_db / 20)


def test_weighted_map_keeps_mean_square():
    h = torch.randn(576, dtype=torch.float64)
    grown = gather(h, 0, weighted_map(576, 960))
    assert torch.allclose(grown.pow(2).mean(), h.pow(2).mean())


def test_layernorm_map_keeps_layernorm_output_with_rescaled_eps_and_weight():
    d, new, eps = 8, 12, 1e-5
    gen = torch.Generator().manual_seed(0)  # seeded: the values no longer depend on which tests ran before
    h = torch.randn(d, generator=gen, dtype=torch.float64)
    w, b = (torch.randn(d, generator=gen, dtype=torch.float64), torch.randn(d, generator=gen, dtype=torch.float64))
    amap = layernorm_hidden_map(d, new)
    lam2 = (new // d) * d / new
    out = torch.nn.functional.layer_norm(gather(h, 0, amap), (new,), gather(w, 0, amap) * lam2**0.5,
                                         gather(b, 0, amap), eps * lam2)
    expected = torch.nn.functional.layer_norm(h, (d,), w, b, eps)
    assert torch.allclose(out[:d], expected)


def test_gqa_maps_keep_groups():
    q, kv = gqa_head_maps(9, 3, 15, 5)  # SmolLM2-135M -> 360M heads
    group, new_group = 3, 3
    for new_head, src_head in enumerate(q.index.tolist()):
        assert kv.index[new_head // new_group] == src_head // group
    assert set(q.index.tolist()) == set(range(9))


def test_gqa_maps_refuse_groups_too_small():
    with pytest.raises(ValueError, match="cannot hold"):
        gqa_head_maps(6, 2, 6, 3)


def test_halved_head_maps_copy_whole_pairs():
    """DiffLlama: head p and p + heads / 2 form a pair; each half grows on its own, so new pair p' (heads p' and p' +
    new / 2) copies one source pair, and both heads of it read copies of their own source KV heads (uneven: 4 -> 6
    heads per half, 2 -> 3 KV heads)."""
    q, kv, pairs = halved_head_maps(8, 4, 12, 6)
    assert q.index.tolist() == [0, 1, 2, 3, 0, 1, 4, 5, 6, 7, 4, 5] and kv.index.tolist() == [0, 1, 0, 2, 3, 2]
    assert pairs.index.tolist() == [0, 1, 2, 3, 0, 1]
    for new_head, src_head in enumerate(q.index.tolist()):  # groups of 2, old and new
        assert kv.index[new_head // 2] == src_head // 2
    for p in range(6):
        assert q.index[p + 6] == q.index[p] + 4 == pairs.index[p] + 4
    with pytest.raises(ValueError, match="need even counts"):
        halved_head_maps(8, 4, 10, 5)


def test_block_and_concat_maps():
    heads = AxisMap(torch.tensor([0, 1, 0]), torch.ones(3, dtype=torch.float64), 2)
    m = block_map(heads, tile_map(2, 2))
    assert m.index.tolist() == [0, 1, 2, 3, 0, 1]
    c = concat_maps([tile_map(2, 4), tile_map(3, 3)])
    assert c.index.tolist() == [0, 1, 0, 1, 2, 3, 4] and c.src_size == 5


def test_reader_weights_sum_to_one_over_copies():
    for amap in (tile_map(5, 13), weighted_map(5, 13), layernorm_hidden_map(5, 13)):
        total = torch.zeros(5, dtype=torch.float64)
        valid = amap.index >= 0
        total.index_add_(0, amap.index[valid], (amap.scale * amap.reader())[valid])
        assert torch.allclose(total, torch.ones(5, dtype=torch.float64))


def test_scale_norm_weight_with_offset():
    w = torch.tensor([0.1, -0.2])
    assert torch.allclose(scale_norm_weight(w, 0.5, offset=1.0) + 1.0, (w + 1.0) * 0.5)


def test_dtype_kept():
    w = torch.randn(4, 4).to(torch.bfloat16)
    assert grow_matrix(w, tile_map(4, 8), tile_map(4, 8)).dtype == torch.bfloat16
    assert grow_matrix(w, weighted_map(4, 6), weighted_map(4, 6)).dtype == torch.bfloat16


def test_noise_blocks_wrap_around_the_pool():
    """A block of the noise pool is a stretch of the cyclic pool from a random offset: views inside it, joined
    only where the stretch runs past the end."""
    pool = NoisePool(3, 64)
    cyclic = torch.cat([pool.values[torch.float32]] * 2)
    wrapped = 0
    for seed in range(100):
        count, length = seed % 5 + 1, seed % 7 + 1
        offset = int(torch.randint(0, 64, (1,), generator=torch.Generator().manual_seed(seed)))
        block = pool.block(count, length, torch.Generator().manual_seed(seed))
        assert torch.equal(block, cyclic[offset:offset + count * length].view(count, length))
        wrapped += offset + count * length > 64
    assert wrapped > 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("copies", [2, 3, 4, 8])
def test_division_exactness_check_on_the_encoding(dtype, copies):
    """The bit-level test of "W / copies loses no bits" agrees with the float rule it replaced on the values
    at the edge: zeros, subnormals, the smallest normals, copies times the smallest normal and just below it,
    either sign."""
    from hyperclone.grow.axis_map import _division_is_exact

    tiny = torch.finfo(dtype).tiny
    edges = [0.0, -0.0, tiny / 4, tiny, 2 * tiny, copies * tiny * 0.99, copies * tiny, copies * tiny * 1.01, 1.0,
             float("inf")]
    for value in edges + [-v for v in edges]:
        block = torch.tensor([[value, 0.5], [1.0, -2.0]], dtype=dtype)
        rule = copies & (copies - 1) == 0 and not bool(((block.abs() < copies * tiny) & (block != 0)).any())
        assert _division_is_exact(block, copies) == rule, (value, copies)
        if rule:  # the rule is sufficient (it refuses some subnormals whose division happens to be exact)
            assert torch.equal((block.double() / copies).to(dtype).double() * copies, block.double())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("row_tiles", "copies"), [(2, 2), (3, 3), (2, 4)])
def test_row_tiles_sharing_the_grid_equal_tile_by_tile_growth(dtype, row_tiles, copies):
    """Noisy exact growth of several row tiles computes each chunk's grid once for all tiles; the copies are
    the very same bits as growing the tiles one after another (same pool offsets, drawn in the same order),
    over several chunks and a chunk that wraps the pool."""
    from hyperclone.grow.axis_map import _grow_row_tiles_exact, _grow_tile

    weight = (torch.randn(37, 50, generator=torch.Generator().manual_seed(0)) * 0.02).to(dtype)
    weight[0, :4] = torch.tensor([0.0, torch.finfo(dtype).tiny, -3e-5, 1.0])
    pool = NoisePool(1, 4096)
    shared = torch.empty(row_tiles, 37, 50 * copies, dtype=dtype)
    _grow_row_tiles_exact(weight, list(shared), copies, 0.01, torch.Generator().manual_seed(2), pool, 8)
    one_by_one = torch.empty_like(shared)
    generator = torch.Generator().manual_seed(2)
    for tile in one_by_one:
        _grow_tile(weight, tile, copies, 0.01, generator, pool, 8)
    assert torch.equal(shared.view(torch.int16), one_by_one.view(torch.int16))
    sums = shared.view(row_tiles, 37, copies, 50).double().sum(2)
    assert torch.equal(sums, weight.double().expand_as(sums))  # every tile's copies sum to W exactly
    assert not torch.equal(shared[0], shared[1])  # each tile has noise of its own
