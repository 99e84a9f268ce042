"""MXFP4 expert weights, as OpenAI's gpt-oss releases store them, read as the bf16 tensors they stand for.

openai/gpt-oss-20b and -120b keep every expert projection as two tensors (config.json: quantization_config
{"quant_method": "mxfp4"}): `<name>_blocks` [experts, rows, groups, 16] uint8, two 4-bit E2M1 codes per byte (the low
nibble first), and `<name>_scales` [experts, rows, groups] uint8, one E8M0 exponent per group of 32 values (the value
is code x 2^(scale - 127)). Dequantized, a projection is [experts, rows, groups x 32] and transformers holds it
transposed, [experts, in, out] (GptOssExperts: gate_up_proj [experts, hidden, 2 x ffn], down_proj [experts, ffn,
hidden]); that is the tensor hyperclone grows. Every E2M1 code times a power of two is a bfloat16 number (two
significant bits), so the dequantized weights are exact in bf16 and the grown checkpoint is a plain bf16 one, the
weights transformers computes with when it loads the release with Mxfp4Config(dequantize=True).

`dequantize` is tested against transformers' own (transformers.integrations.mxfp4.convert_moe_packed_tensors) in
tests/test_mxfp4.py; it is written here so that growth does not depend on a private helper's signature.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

import torch

from hyperclone.common.errors import HyperCloneError
from hyperclone.grow.checkpoint_io import SourceWeights, TensorInfo

# E2M1 (OCP Microscaling FP4): sign bit, 2 exponent bits, 1 mantissa bit; code k's value
FP4_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
BLOCK_BYTES = 16  # 32 values per scale
BLOCKS, SCALES = "_blocks", "_scales"  # a projection's two stored tensors
NAN_SCALE = 255  # E8M0 (OCP Microscaling): exponents 0..254 stand for 2^-127 .. 2^127, 255 for NaN


def is_mxfp4(quantization_config: Any) -> bool:
    """Whether a config's quantization_config (a dict, or None) says MXFP4."""
    return isinstance(quantization_config, dict) and quantization_config.get("quant_method") == "mxfp4"


PAIR_TYPES = {2: torch.int32, 4: torch.int64}  # an integer as wide as two values of a 2- or 4-byte dtype


@functools.cache
def _pair_table(dtype: torch.dtype) -> torch.Tensor:
    """[256]: the two E2M1 values of every byte (low nibble first) packed into one integer twice the dtype's width,
    so that one index_select per byte fetches both."""
    pairs = torch.tensor([[FP4_VALUES[b & 0x0F], FP4_VALUES[b >> 4]] for b in range(256)], dtype=dtype)
    return pairs.view(PAIR_TYPES[pairs.element_size()]).reshape(256)


def dequantize(blocks: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """[*prefix, groups, 16] uint8 codes and [*prefix, groups] uint8 exponents -> [*prefix, groups x 32] values.

    Each byte fetches its two values at once (low nibble first; one index_select into a 256-entry table, 5.7x
    faster than indexing a [256, 2] table on 1 thread) and each group is multiplied by its power of two, in
    `dtype` (2 or 4 bytes wide): a product of two bf16 numbers that is itself one is exact (as transformers'
    ldexp), and the exponents beyond bf16's range give what ldexp gives there (inf, or a subnormal)."""
    pairs = torch.index_select(_pair_table(dtype), 0, blocks.reshape(-1).to(torch.int32))
    values = pairs.view(dtype).view(*blocks.shape[:-1], 2 * BLOCK_BYTES)  # [*prefix, groups, 32]
    values.mul_(torch.exp2(scales.to(torch.float32) - 127).to(dtype).unsqueeze(-1))
    return values.flatten(-2)


class Mxfp4Weights:
    """A SourceWeights whose MXFP4 pairs (`<name>_blocks`, `<name>_scales`) read as one bf16 tensor `<name>`,
    [experts, in, out] as transformers holds it; every other tensor reads as stored."""

    def __init__(self, weights: SourceWeights):
        self.folder = weights.folder
        self._weights = weights
        self._pairs: dict[str, tuple[str, str]] = {}
        self.infos: dict[str, TensorInfo] = {}
        for name, info in weights.infos.items():
            if name.endswith(SCALES):
                continue  # read with its blocks
            if not name.endswith(BLOCKS):
                self.infos[name] = info
                continue
            base = name.removesuffix(BLOCKS)
            scales = weights.infos.get(base + SCALES)
            if scales is None:
                raise HyperCloneError(f"{self.folder}: MXFP4 tensor {name} has no {base + SCALES}")
            self.infos[base] = self._dequantized_info(base, info, scales)
            self._pairs[base] = (name, base + SCALES)
        lone = sorted(n for n in weights.infos if n.endswith(SCALES) and n.removesuffix(SCALES) not in self._pairs)
        if lone:
            blocks = lone[0].removesuffix(SCALES) + BLOCKS
            raise HyperCloneError(f"{self.folder}: MXFP4 tensor {lone[0]} has no {blocks}")

    def _dequantized_info(self, base: str, blocks: TensorInfo, scales: TensorInfo) -> TensorInfo:
        if blocks.dtype != torch.uint8 or scales.dtype != torch.uint8:
            raise HyperCloneError(f"{self.folder}: MXFP4 tensors of {base} must be uint8, not "
                                  f"{blocks.dtype} and {scales.dtype}")
        if len(blocks.shape) != 4 or blocks.shape[-1] != BLOCK_BYTES or blocks.shape[:-1] != scales.shape:
            raise HyperCloneError(f"{self.folder}: MXFP4 tensors of {base} have shapes {list(blocks.shape)} and "
                                  f"{list(scales.shape)}; expected [experts, rows, groups, 16] and [experts, rows, "
                                  "groups]")
        experts, rows, groups, _ = blocks.shape
        return replace(blocks, name=base, shape=(experts, groups * 2 * BLOCK_BYTES, rows), dtype=torch.bfloat16)

    def read(self, name: str) -> torch.Tensor:
        if name not in self._pairs:
            return self._weights.read(name)
        blocks_name, scales_name = self._pairs[name]
        blocks, scales = self._weights.read(blocks_name), self._weights.read(scales_name)
        if bool((scales == NAN_SCALE).any()):
            raise HyperCloneError(f"{self.folder}: {scales_name} holds the exponent 255, E8M0's NaN: not a weight")
        out = torch.empty(self.infos[name].shape, dtype=torch.bfloat16)
        for expert in range(blocks.shape[0]):  # one expert at a time: each code byte's index is 4 bytes
            out[expert] = dequantize(blocks[expert], scales[expert]).t()  # [out, in] -> transformers' [in, out]
        return out
