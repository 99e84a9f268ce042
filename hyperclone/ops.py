"""Growth operators: pure functions on tensors. They know nothing about files, names or model classes.

The invariant behind every operator: after growth each grown axis holds `copies` stacked copies of
the source axis ([h; h; ...; h]). An axis that is *emitted* (an output, an embedding column, a norm
weight) is simply repeated. An axis that is *contracted* (the input of a linear layer) reads
`in_copies` identical copies of its input, so the blocks of the grown matrix along that axis must sum
to the source matrix. Each output copy i and input copy j get the block

    W_ij = W * mixing[i, j] + noise_ij,   with  sum_j mixing[i, j] = 1  and  sum_j noise_ij = 0,

which gives sum_j W_ij h = W h for every output copy i: the function is preserved exactly (up to
floating-point rounding) whatever the mixing and the noise, as long as the input copies are equal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

MODES = ("symmetric", "noisy", "diagonal")

# One section of an axis: (source size, number of copies).
Section = tuple[int, int]


def mixing_matrix(out_copies: int, in_copies: int, mode: str) -> torch.Tensor:
    """Weights [out_copies, in_copies] with every row summing to 1.

    symmetric / noisy: every block gets 1/in_copies (the HyperCloning rule).
    diagonal: output copy i reads only the input copies j that are congruent to i modulo
    min(out_copies, in_copies), sharing the weight equally among them. With equal numbers of
    copies this is the block-diagonal matrix diag(W, W, ..., W).
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    if mode != "diagonal" or in_copies == 1:
        return torch.full((out_copies, in_copies), 1.0 / in_copies, dtype=torch.float64)
    period = min(out_copies, in_copies)
    mixing = torch.zeros(out_copies, in_copies, dtype=torch.float64)
    for i in range(out_copies):
        members = [j for j in range(in_copies) if j % period == i % period]
        mixing[i, members] = 1.0 / len(members)
    return mixing


def noise_std(weight: torch.Tensor, in_copies: int, snr_db: float) -> float:
    """Standard deviation of noise at `snr_db` relative to one symmetric block W / in_copies."""
    rms = weight.float().pow(2).mean().sqrt().item()
    return rms / in_copies * 10.0 ** (-snr_db / 20.0)


def zero_sum_noise(rows: int, cols: int, in_copies: int, std: float, generator: torch.Generator) -> torch.Tensor:
    """Noise [in_copies, rows, cols] that sums to zero over the copies, each copy's entries with standard
    deviation `std`. Two copies get +eta and -eta (exactly zero-sum, one draw); more copies get draws
    minus their mean, rescaled."""
    if in_copies == 2:
        eta = torch.randn(rows, cols, generator=generator, dtype=torch.float32).mul_(std)
        return torch.stack([eta, -eta])
    noise = torch.randn(in_copies, rows, cols, generator=generator, dtype=torch.float32)
    noise -= noise.mean(dim=0, keepdim=True)
    return noise.mul_(std * math.sqrt(in_copies / (in_copies - 1)))


def repeat_sections(vector: torch.Tensor, sections: Sequence[Section], scale: float = 1.0) -> torch.Tensor:
    """Grow a 1-D tensor (bias, norm weight): each section repeated its number of copies, in order."""
    sizes = [size for size, _ in sections]
    if sum(sizes) != vector.shape[0]:
        raise ValueError(f"sections {sections} do not cover a vector of {vector.shape[0]}")
    parts = [part.repeat(copies) for part, (_, copies) in zip(torch.split(vector, sizes), sections, strict=True)]
    grown = torch.cat(parts)
    return grown if scale == 1.0 else (grown.float() * scale).to(vector.dtype)


def grow_emitted_matrix(matrix: torch.Tensor, row_sections: Sequence[Section], col_copies: int,
                        scale: float = 1.0) -> torch.Tensor:
    """Grow a matrix whose axes are both emitted (a token or position embedding [rows, width]):
    rows repeated by section, columns repeated `col_copies` times, all multiplied by `scale`."""
    rows = repeat_sections_rows(matrix, row_sections)
    grown = rows.repeat(1, col_copies)
    return grown if scale == 1.0 else (grown.float() * scale).to(matrix.dtype)


def repeat_sections_rows(matrix: torch.Tensor, sections: Sequence[Section]) -> torch.Tensor:
    sizes = [size for size, _ in sections]
    if sum(sizes) != matrix.shape[0]:
        raise ValueError(f"sections {sections} do not cover {matrix.shape[0]} rows")
    if len(sections) == 1 and sections[0][1] == 1:
        return matrix
    parts = torch.split(matrix, sizes, dim=0)
    return torch.cat([part.repeat(copies, 1) for part, (_, copies) in zip(parts, sections, strict=True)])


def grow_linear(weight: torch.Tensor, out_sections: Sequence[Section], in_copies: int, mode: str = "symmetric",
                snr_db: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Grow a linear weight [out, in] whose input axis reads `in_copies` equal copies of its input.

    The output axis is grown section by section (fused projections keep their section order); each
    grown output copy i of a section gets, over the input copies j, the blocks W * mixing[i, j]
    (+ zero-sum noise in `noisy` mode). Arithmetic is float32; the result has the input's dtype.
    The result is built block by block, so the extra memory is a few source-sized float32 buffers.
    """
    if weight.ndim != 2:
        raise ValueError("grow_linear expects a matrix")
    if mode == "noisy" and snr_db is None:
        raise ValueError("noisy mode needs snr_db")
    sizes = [size for size, _ in out_sections]
    if sum(sizes) != weight.shape[0]:
        raise ValueError(f"sections {out_sections} do not cover {weight.shape[0]} rows")
    in_size = weight.shape[1]
    total_rows = sum(size * copies for size, copies in out_sections)
    grown = torch.empty(total_rows, in_size * in_copies, dtype=weight.dtype)
    add_noise = mode == "noisy" and in_copies > 1
    row = 0
    for part, (size, out_copies) in zip(torch.split(weight, sizes, dim=0), out_sections, strict=True):
        part32 = part.float()
        mixing = mixing_matrix(out_copies, in_copies, mode)
        std = noise_std(part32, in_copies, snr_db) if add_noise else 0.0
        cache: dict[float, torch.Tensor] = {}
        for i in range(out_copies):
            noise = zero_sum_noise(size, in_size, in_copies, std, generator) if add_noise else None
            for j in range(in_copies):
                target = grown[row:row + size, j * in_size:(j + 1) * in_size]
                factor = float(mixing[i, j])
                if noise is None:
                    if factor not in cache:
                        cache[factor] = (part32 * factor).to(weight.dtype) if factor != 1.0 else part
                    target.copy_(cache[factor])
                else:
                    target.copy_(part32 * factor + noise[j])
            row += size
    return grown


def scale_norm_weight(weight: torch.Tensor, scale: float, offset: float = 0.0) -> torch.Tensor:
    """Multiply a norm's effective weight (offset + weight) by `scale`; return the stored form.

    Gemma's RMSNorm applies (1 + weight), so its stored weight w becomes scale * (1 + w) - 1.
    """
    if scale == 1.0:
        return weight
    return ((weight.float() + offset) * scale - offset).to(weight.dtype)
