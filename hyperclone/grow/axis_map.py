"""How one axis of a tensor grows: a map from every new position to a source position.

New position k holds ``scale[k] * source[index[k]]``; ``index[k] == MEAN`` means "the mean over the
source axis" (used for LayerNorm widths that are not multiples, see ``layernorm_hidden_map``).

A grown *emitted* axis (outputs, embedding columns, norm weights) is a gather. A grown *contracted*
axis (the input of a linear layer) receives the emitted values, so its column k must be weighted by
``reader[k]`` with, for every source position i, sum over the copies k of i of scale[k] * reader[k] = 1;
then sum_k W[:, i] * reader[k] * scale[k] * x[i] = W[:, i] * x[i]: the function is unchanged.

Constructions, and why each is exact:

* ``tile_map(d, new)``: copies in tile order (new k -> k mod d), scale 1. With new = n * d this is the
  HyperCloning layout [h; h; ...]. Means and variances of [h; h] equal those of h, so any norm is exact.
* ``weighted_map(d, new, gamma)``: tile order, and the copies of source i get scale sqrt(gamma / c_i)
  (c_i = number of copies of i), so the sum of squared scales over the copies of every source equals
  gamma. With gamma = new / d the mean square of the grown vector equals the source's, so RMSNorm
  sees the same statistics for widths that are not multiples (576 -> 960) with no change of eps, and
  its weight is a plain gather (RMSNorm(h')_k = s_k h_i / rms(h) * w_i = s_k * RMSNorm(h)_i).
* ``layernorm_hidden_map(d, new)``: r = new // d copies of every source position, then new - r*d
  positions holding the mean of h. The mean of h' equals the mean of h and h' - mean(h') is r copies of
  h - mean(h) padded with zeros, so var(h') = (r d / new) var(h): LayerNorm is exact with
  eps' = eps * r d / new and weight' = weight * sqrt(r d / new). The mean positions normalise to 0.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from hyperclone.common.errors import HyperCloneError
from hyperclone.grow.exact_split import grid, needs_exact_split, split_columns, split_tiles
from hyperclone.grow.options import NOISE_MODES

MEAN = -1
# exact copies in 16-bit dtypes may move this many noise standard deviations from W/n before clipping
NOISE_SPREAD = 4.0


@dataclass(frozen=True)
class AxisMap:
    index: torch.Tensor  # int64 [new]: source position of each new position (MEAN: the mean)
    scale: torch.Tensor  # float64 [new]
    src_size: int

    @property
    def size(self) -> int:
        return int(self.index.numel())

    def copies(self) -> torch.Tensor:
        """[new]: how many new positions copy the same source position (0 for MEAN positions)."""
        counts = torch.bincount(self.index[self.index >= 0], minlength=self.src_size)
        return torch.where(self.index >= 0, counts[self.index.clamp(min=0)], torch.zeros_like(self.index))

    def rank(self) -> torch.Tensor:
        """[new]: which copy of its source position each new position is (0, 1, ... in order of position)."""
        order = torch.argsort(self.index, stable=True)
        _, counts = torch.unique_consecutive(self.index[order], return_counts=True)
        starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        rank = torch.empty_like(self.index)
        rank[order] = torch.arange(self.size) - starts
        return rank

    def reader(self) -> torch.Tensor:
        """[new] float64: weights of a contracted axis; sum over copies of scale * reader = 1."""
        valid = self.index >= 0
        idx = self.index.clamp(min=0)
        sq = torch.zeros(self.src_size, dtype=torch.float64).index_add_(0, idx[valid], self.scale[valid] ** 2)
        return torch.where(valid, self.scale / sq[idx], torch.zeros_like(self.scale))

    def is_tile(self) -> bool:
        """True when this is n plain copies in tile order (the fast path)."""
        return self._is_tile

    @functools.cached_property
    def _is_tile(self) -> bool:  # asked several times per tensor; a map is immutable, so it is answered once
        if self.size % self.src_size or not bool((self.scale == 1.0).all()):
            return False
        return bool(torch.equal(self.index, torch.arange(self.size) % self.src_size))

    @property
    def tiles(self) -> int:
        return self.size // self.src_size

    def is_identity(self) -> bool:
        return self.size == self.src_size and self.is_tile()


def tile_map(src: int, new: int) -> AxisMap:
    if new < src:
        raise ValueError(f"cannot shrink an axis from {src} to {new}")
    return AxisMap(torch.arange(new) % src, torch.ones(new, dtype=torch.float64), src)


def weighted_map(src: int, new: int, gamma: float | None = None) -> AxisMap:
    """Tile-order copies scaled so that the squared scales of every source position's copies sum to gamma
    (default new / src: the mean square of the grown vector equals the source's)."""
    base = tile_map(src, new)
    gamma = new / src if gamma is None else gamma
    counts = base.copies().double()
    return AxisMap(base.index, torch.sqrt(gamma / counts), src)


def layernorm_hidden_map(src: int, new: int) -> AxisMap:
    copies = new // src
    index = torch.cat([torch.arange(copies * src) % src, torch.full((new - copies * src,), MEAN)])
    return AxisMap(index, torch.ones(new, dtype=torch.float64), src)


def concat_maps(maps: list[AxisMap]) -> AxisMap:
    """Maps of consecutive sections (fused projections) as one map over the whole axis."""
    indices, offset = [], 0
    for m in maps:
        indices.append(torch.where(m.index >= 0, m.index + offset, m.index))
        offset += m.src_size
    return AxisMap(torch.cat(indices), torch.cat([m.scale for m in maps]), offset)


def block_map(blocks: AxisMap, inner: AxisMap) -> AxisMap:
    """Heads x head_dim: new position (b, t) holds source (blocks.index[b], inner.index[t]), scaled by both."""
    index = (blocks.index[:, None] * inner.src_size + inner.index[None, :]).reshape(-1)
    scale = (blocks.scale[:, None] * inner.scale[None, :]).reshape(-1)
    return AxisMap(index, scale, blocks.src_size * inner.src_size)


def grouped_qkv_map(q_heads: AxisMap, k_heads: AxisMap, v_heads: AxisMap, qk_dim: AxisMap,
                    v_dim: AxisMap) -> AxisMap:
    """A fused projection laid out per KV group as [kv_heads, group + 2, head_dim]: the group's query heads,
    then its key head, then its value head (Falcon's new decoder architecture). Every new group g' holds,
    in that order, the query-head slots of g' (q_heads), then the copies k_heads[g'] and v_heads[g']. The
    slots of g' copy heads of g's own source group (gqa_head_maps), so this is the q, k and v maps of the
    unfused projections, with the source positions renumbered into the fused layout."""
    kv, new_kv = k_heads.src_size, k_heads.size
    group, new_group = q_heads.src_size // kv, q_heads.size // new_kv
    stride = (group + 2) * qk_dim.src_size  # head_dim is the same for q, k and v in this layout
    indices, scales = [], []
    for g_new in range(new_kv):
        g = int(k_heads.index[g_new])
        for slot in range(g_new * new_group, (g_new + 1) * new_group):
            head = int(q_heads.index[slot])
            indices.append(g * stride + (head - g * group) * qk_dim.src_size + qk_dim.index)
            scales.append(q_heads.scale[slot] * qk_dim.scale)
        indices.append(g * stride + group * qk_dim.src_size + qk_dim.index)
        scales.append(k_heads.scale[g_new] * qk_dim.scale)
        indices.append(g * stride + (group + 1) * qk_dim.src_size + v_dim.index)
        scales.append(v_heads.scale[g_new] * v_dim.scale)
    return AxisMap(torch.cat(indices), torch.cat(scales), kv * stride)


def sharded_qkv_map(q: AxisMap, v: AxisMap, shards: int) -> AxisMap:
    """A fused projection laid out as [shards, 3, width / shards] (CodeGen's qkv_proj, interleaved across the
    model-parallel shards it was trained with): each shard holds its slice of the query width, then of the value
    width, then of the key width (laid out as the query). The model reassembles each width shard by shard, so
    flat position p of a width sits in shard p // (width / shards): new position p' of each section copies, in
    that layout, the position its unfused map q or v names. Any head count works; the widths must split evenly."""
    if q.src_size % shards or q.size % shards:
        raise HyperCloneError(f"the fused qkv projection is split across {shards} model-parallel shards: a hidden "
                              f"size of {q.size if q.src_size % shards == 0 else q.src_size} is not a multiple "
                              f"of {shards}")
    local, flat = q.src_size // shards, torch.arange(q.size).reshape(shards, 1, q.size // shards)
    indices, scales = [], []
    for section, amap in enumerate((q, v, q)):  # q, v, k
        source = amap.index[flat]
        indices.append((source // local) * 3 * local + section * local + source % local)
        scales.append(amap.scale[flat])
    return AxisMap(torch.cat(indices, 1).reshape(-1), torch.cat(scales, 1).reshape(-1), 3 * q.src_size)


def gqa_head_maps(heads: int, kv_heads: int, new_heads: int, new_kv_heads: int) -> tuple[AxisMap, AxisMap]:
    """Maps of query heads and KV heads such that every new query head still reads a copy of the KV
    head of its own source group. New KV head g' copies source KV head g' mod K; its G' query-head slots
    cycle through the source group's G heads. Every source query head must get at least one slot."""
    group, new_group = heads // kv_heads, new_heads // new_kv_heads
    kv_index = torch.arange(new_kv_heads) % kv_heads
    q_index = []
    for g_new in range(new_kv_heads):
        source_group, occurrence = g_new % kv_heads, g_new // kv_heads
        for slot in range(new_group):
            q_index.append(source_group * group + (occurrence * new_group + slot) % group)
    q_index_t = torch.tensor(q_index)
    covered = torch.bincount(q_index_t, minlength=heads)
    if bool((covered == 0).any()):
        raise ValueError(f"{new_heads} query heads in {new_kv_heads} KV groups cannot hold a copy of each of the "
                         f"{heads} source heads ({kv_heads} groups of {group})")
    ones = torch.ones
    return (AxisMap(q_index_t, ones(new_heads, dtype=torch.float64), heads),
            AxisMap(kv_index, ones(new_kv_heads, dtype=torch.float64), kv_heads))


def halved_head_maps(heads: int, kv_heads: int, new_heads: int, new_kv_heads: int
                     ) -> tuple[AxisMap, AxisMap, AxisMap]:
    """Differential attention's heads (DiffLlama): query head p of the first half and head p + heads / 2 form pair p,
    whose two attention outputs are subtracted, and the values are the first half of the KV heads beside the second.
    Each half grows on its own by the same GQA maps (gqa_head_maps over half the heads and KV groups), so new pair p'
    copies source pair q[p'] whole, both of its heads reading the copies of their own source KV heads. Returns the
    query-head map, the KV-head map and the map of the pairs (one position per pair: the output projection reads one
    block of both value halves per pair)."""
    if heads % 2 or kv_heads % 2 or new_heads % 2 or new_kv_heads % 2:
        raise ValueError(f"differential attention pairs the two halves of its heads: {new_heads} heads over "
                         f"{new_kv_heads} KV heads (from {heads} over {kv_heads}) need even counts")
    half_q, half_kv = gqa_head_maps(heads // 2, kv_heads // 2, new_heads // 2, new_kv_heads // 2)
    return concat_maps([half_q, half_q]), concat_maps([half_kv, half_kv]), half_q


def gather(tensor: torch.Tensor, dim: int, amap: AxisMap, apply_scale: bool = True,
           out: torch.Tensor | None = None) -> torch.Tensor:
    """Emit along `dim`: position k = scale[k] * tensor[index[k]] (MEAN: the mean along dim).
    `out`, if given, is a contiguous tensor of the result's shape and dtype to write into (and return)."""
    if tensor.shape[dim] != amap.src_size:
        raise ValueError(f"axis {dim} has {tensor.shape[dim]} positions, map expects {amap.src_size}")
    if amap.is_identity():
        return tensor if out is None else out.copy_(tensor)
    if amap.is_tile():
        if out is None:
            reps = [1] * tensor.ndim
            reps[dim] = amap.tiles
            return tensor.repeat(*reps)
        split = [*tensor.shape[:dim], amap.tiles, *tensor.shape[dim:]]
        out.view(split).copy_(tensor.unsqueeze(dim))  # broadcast over the copies: no temporary
        return out
    has_mean = bool((amap.index < 0).any())
    index = amap.index.clamp(min=0)
    if not has_mean and not (apply_scale and bool((amap.scale != 1.0).any())):
        return tensor.index_select(dim, index) if out is None else torch.index_select(tensor, dim, index, out=out)
    result = tensor.index_select(dim, index).float()
    if has_mean:
        mean = tensor.float().mean(dim, keepdim=True)
        positions = torch.nonzero(amap.index < 0).flatten()
        result.index_copy_(dim, positions, mean.expand_as(result.index_select(dim, positions)).contiguous())
    if apply_scale:
        shape = [1] * tensor.ndim
        shape[dim] = -1
        result = result * amap.scale.float().reshape(shape)
    return result.to(tensor.dtype) if out is None else out.copy_(result)


def diagonal_weights(row_rank: int, row_copies: int, in_map: AxisMap) -> torch.Tensor:
    """Column weights for an output row that is copy `row_rank` of `row_copies`: it reads the input
    copies k of each source whose rank is congruent to its own modulo min(row_copies, copies of k),
    sharing so that sum over copies of scale * weight = 1."""
    copies, rank = in_map.copies(), in_map.rank()
    period = torch.minimum(copies, torch.full_like(copies, row_copies)).clamp(min=1)
    selected = (rank % period) == (row_rank % period)
    valid = in_map.index >= 0
    idx = in_map.index.clamp(min=0)
    count = torch.zeros(in_map.src_size, dtype=torch.float64).index_add_(0, idx[valid & selected],
                                                                         torch.ones(int((valid & selected).sum()),
                                                                                    dtype=torch.float64))
    weights = torch.where(valid & selected, 1.0 / (count[idx].clamp(min=1) * in_map.scale), torch.zeros(1).double())
    return weights


def projected_noise(rows: int, in_map: AxisMap, std: float, generator: torch.Generator) -> torch.Tensor:
    """Noise [rows, new_in] whose scale-weighted sum over the copies of every source column is zero,
    so it cancels on equal copies; entries have standard deviation about `std`. A source column with a
    single copy gets none."""
    noise = torch.randn(rows, in_map.size, generator=generator, dtype=torch.float32)
    valid = in_map.index >= 0
    idx = in_map.index.clamp(min=0)
    scale = torch.where(valid, in_map.scale, torch.zeros_like(in_map.scale)).float()
    weighted = torch.zeros(rows, in_map.src_size).index_add_(1, idx, noise * scale)
    norm = torch.zeros(in_map.src_size).index_add_(0, idx, scale**2)
    noise -= scale * (weighted / norm.clamp(min=1e-30))[:, idx]
    copies = in_map.copies().float()
    # removing the projection leaves (c - 1) / c of the variance for c equal copies: restore it
    restore = torch.where(copies > 1, torch.sqrt(copies / (copies - 1).clamp(min=1)), torch.zeros(1))
    return noise.mul_(restore * std)


class NoisePool:
    """Seeded Gaussian values that noisy growth reads in blocks at random offsets.

    Drawing an independent Gaussian for every grown weight costs more than writing the checkpoint
    (about 70 M values/s on a 2-core machine against 8 G values for a 1.1B model grown 2x), so a
    [count, length] block of noise is a contiguous stretch of a 2^24-value pool at a random offset
    (drawn from a generator seeded by the tensor's name): a view, no copy. Rows of one block are
    disjoint stretches; blocks of other chunks, copies and tensors start at other offsets. The
    zero-sum constraint is exact whatever the values are.
    """

    def __init__(self, seed: int, size: int = 2**24):
        generator = torch.Generator().manual_seed(seed)
        self.size = size
        # per dtype; a block that runs past the end wraps around to the start (joined only then: doubling
        # the pool up front cost 0.08 s of every grow's start-up)
        self.values = {torch.float32: torch.randn(size, generator=generator, dtype=torch.float32)}

    def offset(self, generator: torch.Generator | None) -> int:
        """Where a block starts: the one value a block draws from the tensor's generator."""
        return int(torch.randint(0, self.size, (1,), generator=generator))

    def block_at(self, offset: int, count: int, length: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """[count, length] values of the cyclic pool from `offset` (count * length <= size)."""
        if dtype not in self.values:
            self.values[dtype] = self.values[torch.float32].to(dtype)
        values, end = self.values[dtype], offset + count * length
        if end <= self.size:
            return values[offset:end].view(count, length)
        return torch.cat([values[offset:], values[: end - self.size]]).view(count, length)

    def block(self, count: int, length: int, generator: torch.Generator | None,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if count * length > self.size:
            return torch.randn(count, length, generator=generator).to(dtype)
        return self.block_at(self.offset(generator), count, length, dtype)


def grow_matrix(weight: torch.Tensor, out_map: AxisMap, in_map: AxisMap, mode: str = "symmetric",
                snr_db: float | None = None, generator: torch.Generator | None = None,
                noise_pool: NoisePool | None = None, chunk_elements: int = 2**19,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """Grow a linear weight [out, in]: rows emitted through out_map, columns read through in_map.

    symmetric: column k gets reader[k] (the HyperCloning W/n for n plain copies).
    diagonal: output copy p reads only the matching input copies (see diagonal_weights).
    noisy: symmetric plus noise that cancels on the copies, with standard deviation 10^(-snr_db/20)
    times the RMS of one symmetric block.
    uneven: LEMON-style asymmetric split (Wang et al. 2023, arXiv 2310.07999): every input copy of a source
    column reads its own share of that column, reader + m with the deviations m zero-sum over the copies
    (one per column, the same for every row), standard deviation 10^(-snr_db/20) times the symmetric share:
    the copies of a neuron differ by a factor, not by noise per weight.
    Arithmetic in float32 (torch's bfloat16/float16 kernels compute in float32 too, so the fast path's in-place
    products round identically), in chunks of about `chunk_elements` source values (2 MiB of float32: small enough
    to stay in cache and for the allocator to reuse, so no chunk pays page faults); the result keeps weight's dtype.
    `out`, if given, is a preallocated [out_map.size, in_map.size] tensor of weight's dtype to write into.
    """
    if mode in NOISE_MODES and snr_db is None:
        raise ValueError(f"{mode} mode needs snr_db")
    shape = (out_map.size, in_map.size)
    if out is None:
        out = torch.empty(shape, dtype=weight.dtype)
    elif tuple(out.shape) != shape or out.dtype != weight.dtype:
        raise ValueError(f"out is {tuple(out.shape)} {out.dtype}, expected {shape} {weight.dtype}")
    std = _noise_std(weight, in_map, snr_db) if mode == "noisy" else 0.0
    chunk_rows = max(1, chunk_elements // max(1, weight.shape[1]))
    if in_map.is_tile() and (mode not in ("diagonal", "uneven") or in_map.tiles == 1):
        if out_map.is_tile():  # whole copies of the rows: each row tile grown (or copied) on its own
            _grow_tiled(weight, list(out.view(out_map.tiles, weight.shape[0], in_map.size)), in_map.tiles, std,
                        generator, noise_pool, chunk_rows)
        else:
            _grow_tiled(gather(weight, 0, out_map), [out], in_map.tiles, std, generator, noise_pool, chunk_rows)
        return out
    _grow_columns(weight, out_map, in_map, mode, snr_db, std, generator, chunk_rows, out)
    return out


def _noise_std(weight: torch.Tensor, in_map: AxisMap, snr_db: float) -> float:
    """Noisy mode's standard deviation: 10^(-snr_db/20) times the RMS of one symmetric block (W times the mean
    reader share)."""
    mean_reader = float(in_map.src_size) / in_map.size
    # in the weight's dtype (float32 accumulation inside; an upcast copy first would cost 10x)
    rms = float(torch.linalg.vector_norm(weight)) / math.sqrt(max(1, weight.numel()))
    return rms * mean_reader * 10.0 ** (-snr_db / 20.0)


def _grow_columns(weight: torch.Tensor, out_map: AxisMap, in_map: AxisMap, mode: str, snr_db: float | None,
                  std: float, generator: torch.Generator | None, chunk_rows: int, out: torch.Tensor) -> None:
    """grow_matrix's general path (any column map, every mode), chunk by chunk of emitted rows into `out`."""
    rows = gather(weight, 0, out_map)  # emitted rows, in the source dtype
    reader = in_map.reader().float()
    active = reader > 0  # the columns that carry their source (an uneven share may be 0 or negative)
    relative_spread = 0.0
    if mode == "uneven":
        reader, relative_spread = _uneven_shares(in_map, reader, 10.0 ** (-snr_db / 20.0), generator)
    idx = in_map.index.clamp(min=0)
    valid = in_map.index >= 0
    # exact copies in a 16-bit dtype need the copies to sum to W unscaled (scale 1 on every copy)
    exact = needs_exact_split(weight.dtype) and bool((in_map.scale[valid] == 1.0).all())
    row_copies, row_rank = out_map.copies(), out_map.rank()
    diagonal_cache: dict[tuple[int, int], torch.Tensor] = {}
    for start in range(0, rows.shape[0], chunk_rows):
        source_rows = rows[start:start + chunk_rows].float()
        block = source_rows.index_select(1, idx)
        if mode == "diagonal":
            end = start + block.shape[0]
            keys = torch.stack([row_rank[start:end], row_copies[start:end].clamp(min=1)], 1)
            _diagonal_block(block, source_rows, keys, in_map, diagonal_cache, exact, weight.dtype)
        else:
            block *= reader
            if mode == "noisy":
                block += projected_noise(block.shape[0], in_map, std, generator)
            if exact and mode == "uneven" and in_map.is_tile():
                block = _split_uneven_tiles(source_rows, block, in_map.tiles, weight.dtype, relative_spread)
            elif exact:
                block = split_columns(source_rows, block, in_map.index, active, weight.dtype,
                                      NOISE_SPREAD * std, relative_spread)
        out[start:start + chunk_rows] = block.to(weight.dtype)


def _diagonal_block(block: torch.Tensor, source_rows: torch.Tensor, keys: torch.Tensor, in_map: AxisMap,
                    cache: dict[tuple[int, int], torch.Tensor], exact: bool, dtype: torch.dtype) -> None:
    """Diagonal mode on one chunk, in place: the rows of output copy p of n (keys [rows, 2]: rank, copies) read
    only the matching input copies; with `exact`, split so the copies sum to the source bit for bit in `dtype`."""
    for key in torch.unique(keys, dim=0).tolist():
        if tuple(key) not in cache:
            cache[tuple(key)] = diagonal_weights(key[0], key[1], in_map).float()
        weights = cache[tuple(key)]
        mask = (keys == torch.tensor(key)).all(1)
        block[mask] *= weights
        if exact:
            block[mask] = split_columns(source_rows[mask], block[mask], in_map.index, weights > 0, dtype)


def _split_uneven_tiles(weight: torch.Tensor, targets: torch.Tensor, tiles: int, dtype: torch.dtype,
                        relative_spread: float) -> torch.Tensor:
    """Exact uneven copies for n plain input copies: the tile split, the same copies bit for bit as the column
    split (tests/test_exact_storage.py) and about 4x faster. weight [rows, src], targets [rows, tiles * src]."""
    width = weight.shape[1]
    parts = [targets[:, j * width:(j + 1) * width] for j in range(tiles - 1)] + [None]
    unit = grid(weight, tiles, dtype, 0.0, relative_spread)
    return torch.cat(split_tiles(weight, parts, dtype, unit=unit), 1)


def _uneven_shares(in_map: AxisMap, reader: torch.Tensor, level: float,
                   generator: torch.Generator | None) -> tuple[torch.Tensor, float]:
    """Uneven growth's column shares [new] (float32) and how far they reach as a multiple of |W|: each copy's
    symmetric share plus a deviation of `level` times its source's mean share, zero-sum (scale-weighted) over
    the copies of a source. A source read by one copy keeps its share."""
    valid = in_map.index >= 0
    idx = in_map.index.clamp(min=0)
    copies = torch.bincount(idx[valid], minlength=in_map.src_size).clamp(min=1).float()
    mean_share = torch.zeros(in_map.src_size).index_add_(0, idx[valid], reader[valid]) / copies
    deviation = projected_noise(1, in_map, level, generator)[0] * mean_share[idx]
    return reader + deviation, NOISE_SPREAD * level * float(mean_share.max())


def _draw(count: int, width: int, generator: torch.Generator | None, pool: NoisePool | None,
          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    if pool is not None:
        return pool.block(count, width, generator, dtype)
    return torch.randn(count, width, generator=generator).to(dtype)


def _grow_tiled(rows: torch.Tensor, out_tiles: list[torch.Tensor], copies: int, std: float,
                generator: torch.Generator | None, noise_pool: NoisePool | None, chunk_rows: int) -> None:
    """Fast path for n plain input copies: blocks W/n (+ zero-sum noise over the n blocks), written
    straight into the column blocks of every row tile in `out_tiles` (one tile, or whole copies of the
    rows, each drawing noise of its own, tile after tile). In bfloat16 and float16 the blocks are split
    exactly (hyperclone.grow.exact_split), so they sum to W with no rounding."""
    exact = needs_exact_split(rows.dtype) and copies > 1
    if (exact and std > 0.0 and len(out_tiles) > 1 and noise_pool is not None
            and chunk_rows * rows.shape[1] <= noise_pool.size):
        _grow_row_tiles_exact(rows, out_tiles, copies, std, generator, noise_pool, chunk_rows)
        return
    for t, out in enumerate(out_tiles):
        if std == 0.0 and t > 0:
            out.copy_(out_tiles[0])
        else:
            _grow_tile(rows, out, copies, std, generator, noise_pool, chunk_rows)


def _grow_tile(rows: torch.Tensor, out: torch.Tensor, copies: int, std: float, generator: torch.Generator | None,
               noise_pool: NoisePool | None, chunk_rows: int) -> None:
    """One row tile of _grow_tiled, chunk by chunk (no temporaries in the symmetric case)."""
    width = rows.shape[1]
    exact = needs_exact_split(rows.dtype) and copies > 1
    for start in range(0, rows.shape[0], chunk_rows):
        block = rows[start:start + chunk_rows]
        target = out[start:start + chunk_rows]
        blocks = [target[:, j * width:(j + 1) * width] for j in range(copies)]
        if copies == 1:
            blocks[0].copy_(block)
            continue
        if std == 0.0 and not (exact and not _division_is_exact(block, copies)):
            torch.mul(block, 1.0 / copies, out=blocks[0])  # W/n: exact for n a power of two (checked)
            for j in range(1, copies):
                blocks[j].copy_(blocks[0])
            continue
        count = block.shape[0]
        if exact:
            weight = block.float()
            if std == 0.0:
                targets: list[torch.Tensor | None] = [weight * (1.0 / copies)] * copies
            else:
                draws = [_draw(count, width, generator, noise_pool) for _ in range(_draws_per_chunk(copies))]
                targets = _noisy_targets(weight, draws, std)
            for j, copy in enumerate(split_tiles(weight, targets, rows.dtype, NOISE_SPREAD * std)):
                blocks[j].copy_(copy)
            continue
        if copies == 2:
            # float32: all in the weight's dtype (W/2 is exact in it; the noise is drawn in it, so both copies
            # add the very same values with opposite signs): mixed-dtype ops are several times slower
            base = block * 0.5
            eta = _draw(count, width, generator, noise_pool, block.dtype)
            torch.add(base, eta, alpha=std, out=blocks[0])
            torch.sub(base, eta, alpha=std, out=blocks[1])
            continue
        base = block.float().mul_(1.0 / copies) if block.dtype != torch.float32 else block * (1.0 / copies)
        noise = _zero_sum_noise([_draw(count, width, generator, noise_pool) for _ in range(copies)], std)
        for j in range(copies):
            blocks[j].copy_(base + noise[j])


def _grow_row_tiles_exact(rows: torch.Tensor, out_tiles: list[torch.Tensor], copies: int, std: float,
                          generator: torch.Generator | None, pool: NoisePool, chunk_rows: int) -> None:
    """Noisy exact growth of several row tiles, chunk by chunk with every tile inside: each chunk's grid
    (hyperclone.grow.exact_split.grid, about three quarters of the split's work) is computed once for all
    the tiles instead of once per tile. The pool offsets are drawn first, in the order _grow_tile tile after
    tile draws them, so the copies are the same, bit for bit (tests/test_axis_map.py)."""
    width = rows.shape[1]
    starts = range(0, rows.shape[0], chunk_rows)
    offsets = [[[pool.offset(generator) for _ in range(_draws_per_chunk(copies))] for _ in starts] for _ in out_tiles]
    spread = NOISE_SPREAD * std
    for c, start in enumerate(starts):
        weight = rows[start:start + chunk_rows].float()
        count = weight.shape[0]
        unit = grid(weight, copies, rows.dtype, spread)
        for t, out in enumerate(out_tiles):
            noise = [pool.block_at(offset, count, width) for offset in offsets[t][c]]
            parts = split_tiles(weight, _noisy_targets(weight, noise, std), rows.dtype, spread, unit=unit)
            for j, part in enumerate(parts):
                out[start:start + count, j * width:(j + 1) * width].copy_(part)


def _draws_per_chunk(copies: int) -> int:
    """Standard normal blocks an exact noisy chunk draws: one for two copies (the second is the remainder),
    else one per copy. Both noisy paths draw by this rule, which keeps them bit for bit equal."""
    return 1 if copies == 2 else copies


def _noisy_targets(weight: torch.Tensor, draws: list[torch.Tensor], std: float) -> list[torch.Tensor | None]:
    """What the exact split aims each copy at: W/n plus zero-sum noise of standard deviation `std` made from
    standard normal `draws` (one for two copies: W/2 + std * eta, the other copy the exact remainder;
    otherwise one per copy)."""
    if len(draws) == 1:
        return [(weight * 0.5).add_(draws[0], alpha=std), None]
    return list(weight * (1.0 / len(draws)) + _zero_sum_noise(draws, std))


def _zero_sum_noise(draws: list[torch.Tensor], std: float) -> torch.Tensor:
    """float32 [copies, count, width] from one standard normal draw per copy: noise of standard deviation
    `std` per copy that sums to zero over the copies."""
    copies = len(draws)
    noise = torch.stack(draws)
    noise -= noise.mean(0, keepdim=True)
    return noise.mul_(std * math.sqrt(copies / (copies - 1)))


# float dtype -> (significand bits stored, same-width integer dtype, mask of every bit but the sign)
_FLOAT_BITS = {torch.bfloat16: (7, torch.int16, 0x7FFF), torch.float16: (10, torch.int16, 0x7FFF),
               torch.float32: (23, torch.int32, 0x7FFFFFFF)}


def _division_is_exact(block: torch.Tensor, copies: int) -> bool:
    """W / copies loses no bits: copies a power of two and no W so small that W / copies underflows
    into the subnormals (or below) of the dtype.

    On the encoding, in integer kernels (the float comparison it replaces was half of a symmetric bf16
    grow's time): with copies = 2^m, a non-zero |W| below copies * smallest normal is one whose magnitude
    bits are below (m + 1) << significand bits; zero's magnitude bits, less one, wrap to the largest."""
    if copies & (copies - 1):
        return False
    stored_bits, int_dtype, magnitude_mask = _FLOAT_BITS[block.dtype]
    first_safe = (copies.bit_length()) << stored_bits  # magnitude bits of copies * smallest normal
    magnitude = block.view(int_dtype).bitwise_and(magnitude_mask)
    magnitude.sub_(1).bitwise_and_(magnitude_mask)  # 0 -> all ones: zeros are exact
    return int(magnitude.amin()) >= first_safe - 1


def scale_norm_weight(weight: torch.Tensor, scale: float, offset: float = 0.0) -> torch.Tensor:
    """Multiply a norm's effective weight (offset + weight) by `scale`; return the stored form.

    Gemma's RMSNorm applies (1 + weight), so its stored weight w becomes scale * (1 + w) - 1.
    """
    if scale == 1.0:
        return weight
    return ((weight.float() + offset) * scale - offset).to(weight.dtype)


def quarter_power_gamma(old_head_dim: int, new_head_dim: int) -> float:
    """Sum of squared q (and k) scales per source dim when head_dim grows without RoPE: q'.k' must be
    sqrt(new/old) times q.k to cancel the change of the 1/sqrt(head_dim) attention scale."""
    return math.sqrt(new_head_dim / old_head_dim)
