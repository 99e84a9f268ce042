"""Copies of a weight that sum to it exactly in a 16-bit storage dtype.

Growth splits a source weight W among the c copies of its input (W/c each for HyperCloning, W/c plus zero-sum
noise for noisy growth, uneven shares of W for uneven growth). Rounded to bfloat16 or float16 one by one, the
copies no longer sum to W: W/3 is not representable, and neither is W/2 + eta for most eta. The grown model
then differs from the source by the rounding of every weight (0.9% of the logits on a random bf16 Llama).

The split here is exact in real arithmetic. Work in integer units of a power-of-two grid g on which W
is a whole number K = W / g. Every integer k with |k| <= P = 2^p (p: the dtype's significand bits,
implicit bit included) times g is representable, so the copies are chosen as integers k_1..k_c with
|k_j| <= P and sum K:

* copies 1..c-1 take the integer nearest to their target (W/c, or W/c + noise), clamped so that the
  copies still to come can reach the remainder (|K - k_1 - ... - k_j| <= (c - j) P);
* the last copy takes the exact remainder.

The grid: the dtype's spacing at |W|/c + spread (spread: a few standard deviations of the noise, 0
without noise), or the lowest set bit of W where that is smaller (W must be a whole number on the grid).
Without noise the copies are W/c to within one unit of their own precision (with c = 2, the exact
halves); with noise the grid is as fine as the noise's resolution needs and as coarse as the range of
the copies needs. It is a power of two no smaller than the dtype's smallest subnormal.
The noise of a copy is what it holds minus W/c, and those deviations sum to zero exactly: the function is
unchanged while the copies differ. Where the target would leave the representable range the noise is
clipped (``kept_noise_power`` measures how much survives): a weight much smaller than the noise, with few
trailing zero bits, has little room, since its copies must stay on its own grid.

All arithmetic is float32 on values that are whole numbers below 2^24, so it is exact. Pure functions:
tensors in, tensors out.
"""

from __future__ import annotations

import torch

SIGNIFICAND_BITS = {torch.bfloat16: 8, torch.float16: 11}
SMALLEST_SUBNORMAL = {torch.bfloat16: 2.0**-133, torch.float16: 2.0**-24}


def needs_exact_split(dtype: torch.dtype) -> bool:
    """16-bit float dtypes: rounding each copy separately would change the function visibly.
    (float32 copies are exact to float32 rounding, the accumulation error of evaluating the model.)"""
    return dtype in SIGNIFICAND_BITS


def _power_of_two_floor_(values: torch.Tensor) -> torch.Tensor:
    """In place: 2^floor(log2 x) for float32 x >= 0 (0 for 0 and float32 subnormals), the exponent bits alone."""
    values.view(torch.int32).bitwise_and_(0x7F800000)
    return values


def grid(weight: torch.Tensor, copies: torch.Tensor | int, dtype: torch.dtype, spread: float = 0.0,
         relative_spread: float = 0.0) -> torch.Tensor:
    """float32 [weight.shape]: the power-of-two unit each element is split on (see the module doc).

    `weight` holds float32 values representable in `dtype`; `copies` broadcasts against it; `spread` is
    how far (in absolute terms) the copies should be able to move from weight / copies, `relative_spread` how
    far as a multiple of |weight| (uneven shares of a column: a deviation proportional to W). Bit operations on
    the float32 encoding (exponent field; lowest set bit of the significand), about 3x faster than
    frexp/ldexp."""
    p = SIGNIFICAND_BITS[dtype]
    magnitude = weight.abs()
    # in place wherever it can be: each temporary of a 2 MiB chunk costs page faults (half of this function's
    # time before; the values are the same bits)
    at = torch.div(magnitude, copies).add_(spread)
    if relative_spread > 0.0:
        at.add_(magnitude, alpha=relative_spread)
    unit = _power_of_two_floor_(at).mul_(2.0 ** (1 - p))  # at |W|/c + spread (+ |W| relative_spread)
    if spread > 0.0 or relative_spread > 0.0:  # W must stay a whole number: no coarser than its lowest set bit
        significand = weight.view(torch.int32).bitwise_and(0x7FFFFF).bitwise_or_(0x800000)
        lowest = torch.neg(significand).bitwise_and_(significand).float()
        lowest.mul_(_power_of_two_floor_(magnitude)).mul_(2.0**-23)
        lowest.masked_fill_(weight == 0, float("inf"))  # a zero takes the spacing alone
        torch.minimum(unit, lowest, out=unit)
    return unit.clamp_(min=SMALLEST_SUBNORMAL[dtype])


def _take(target: torch.Tensor, unit: torch.Tensor, remaining: torch.Tensor, rest: torch.Tensor | int,
          limit: float) -> torch.Tensor:
    """The integer nearest target / unit within [-limit, limit] that leaves `rest` copies able to reach
    the remainder: |remaining - k| <= rest * limit."""
    k = torch.div(target, unit).round_()
    k = torch.minimum(k, torch.add(remaining, rest * limit).clamp_(max=limit), out=k)
    return torch.maximum(k, torch.sub(remaining, rest * limit).clamp_(min=-limit), out=k)


def split_tiles(weight: torch.Tensor, targets: list[torch.Tensor | None], dtype: torch.dtype,
                spread: float = 0.0, unit: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Split every element of `weight` (float32, values representable in `dtype`) into len(targets)
    copies that sum to it exactly and are each representable in `dtype`; copy j is as close to
    targets[j] (float32, same shape) as the dtype allows. The last copy is the remainder, so its target
    is not read (it may be None). `unit`: grid(weight, len(targets), dtype, spread) when the caller
    already has it (it depends on the weight alone, not on the targets). Returns the copies as float32
    tensors."""
    copies = len(targets)
    limit = float(2 ** SIGNIFICAND_BITS[dtype])
    if unit is None:
        unit = grid(weight, copies, dtype, spread)
    remaining = weight / unit  # a whole number (unit is a power of two dividing weight)
    out = []
    for j, target in enumerate(targets[:-1]):
        k = _take(target, unit, remaining, copies - 1 - j, limit)
        remaining.sub_(k)
        out.append(k.mul_(unit))
    out.append(remaining.mul_(unit))
    return out


def split_columns(weight: torch.Tensor, targets: torch.Tensor, index: torch.Tensor, active: torch.Tensor,
                  dtype: torch.dtype, spread: float = 0.0, relative_spread: float = 0.0) -> torch.Tensor:
    """Column copies of a matrix, exact: weight [rows, src] (float32, representable in `dtype`),
    targets [rows, new] (float32), index [new] (source column of every new column, < 0 for none),
    active [new] (bool: the columns that carry the source; the others are 0). For every row and source
    column i, the active columns copying i sum to weight[:, i] exactly; each is representable in
    `dtype` and as close to its target as that allows. Returns float32 [rows, new]."""
    limit = float(2 ** SIGNIFICAND_BITS[dtype])
    src_size = weight.shape[1]
    active = active & (index >= 0)
    positions = torch.nonzero(active).flatten()
    sources = index[positions]
    order = torch.argsort(sources, stable=True)
    positions, sources = positions[order], sources[order]
    counts = torch.bincount(sources, minlength=src_size)
    if bool((counts == 0).any()) and bool((weight[:, counts == 0] != 0).any()):
        raise ValueError("a source column with non-zero weights has no active copy")
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(positions.numel()) - starts[sources]
    unit = grid(weight, counts.clamp(min=1).float(), dtype, spread, relative_spread)
    remaining = weight / unit
    out = torch.zeros(targets.shape, dtype=torch.float32)
    for r in range(int(counts.max()) if counts.numel() else 0):
        here = rank == r
        cols, src = positions[here], sources[here]
        rest = (counts[src] - 1 - r).float()
        u, left = unit[:, src], remaining[:, src]
        k = torch.where(rest == 0, left, _take(targets[:, cols], u, left, rest, limit))
        remaining[:, src] = left - k
        out[:, cols] = k * u
    return out


def kept_noise_power(copies: list[torch.Tensor] | torch.Tensor, weight_share: torch.Tensor,
                     intended: list[torch.Tensor] | torch.Tensor) -> float:
    """Share of the intended noise power (sum of squared deviations from the weight's share) that the
    exact copies kept (for reports and tests)."""
    got = sum(float(((c - weight_share) ** 2).sum()) for c in copies)
    want = sum(float(((t - weight_share) ** 2).sum()) for t in intended)
    return got / want if want else 1.0
