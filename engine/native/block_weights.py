"""Weights stacked along their rows (fused q/k/v and gate/up) while still in blocks.

The decoder fuses q, k and v (and gate and up) into one matrix. From a GGUF file those are
block-quantised tensors, possibly of different widths: a Q4_K_M file keeps v in 6 bits in
some layers, which we hold in 8. The stack takes the widest width among its parts (a
narrower part's values fit it with ~1/8 of their own rounding error added) and hands out
its rows a chunk at a time like any block-quantised weight.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from engine.native.packed_linear import Bits, BlockQuantized, block_quantise

Part = torch.Tensor | BlockQuantized


class StackedBlocks(BlockQuantized):
    """Parts [N_i, K] one above the other, each optionally scaled by a factor."""

    def __init__(self, parts: Sequence[Part], factors: Sequence[float] | None = None) -> None:
        widths = {part.shape[1] for part in parts}
        if len(widths) != 1:
            raise ValueError(f"stacked weights differ in width: {sorted(widths)}")
        self.parts = list(parts)
        self.factors = list(factors) if factors is not None else [1.0] * len(self.parts)
        self.shape = (sum(part.shape[0] for part in parts), widths.pop())
        block_bits = [part.bits for part in parts if isinstance(part, BlockQuantized)]
        self.bits: Bits = 8 if 8 in block_bits or not block_bits else 4

    def _pieces(self, start: int, stop: int) -> list[tuple[int, int, int]]:
        """(part index, first row, end row) of each part that rows start..stop cross."""
        pieces, top = [], 0
        for index, part in enumerate(self.parts):
            bottom = top + part.shape[0]
            if start < bottom and stop > top:
                pieces.append((index, max(start, top) - top, min(stop, bottom) - top))
            top = bottom
        return pieces

    def floats(self, start: int, stop: int) -> torch.Tensor:
        """Rows start..stop de-quantised to fp32, factors applied."""
        rows = []
        for index, first, end in self._pieces(start, stop):
            part, factor = self.parts[index], self.factors[index]
            values = (
                part.floats(first, end) if isinstance(part, BlockQuantized) else part[first:end]
            )
            rows.append(values.float() * factor if factor != 1.0 else values.float())
        return torch.cat(rows)

    def blocks(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each part's own blocks where they are in this width (a factor scales d and m,
        rounded to fp16 again), the others quantised to it."""
        codes, scales = [], []
        for index, first, end in self._pieces(start, stop):
            part, factor = self.parts[index], self.factors[index]
            if isinstance(part, BlockQuantized) and part.bits == self.bits:
                part_codes, part_scales = part.blocks(first, end)
                if factor != 1.0:
                    part_scales = (part_scales.float() * factor).to(torch.float16)
            else:
                rows = (
                    part.floats(first, end) if isinstance(part, BlockQuantized) else part[first:end]
                )
                part_codes, part_scales = block_quantise(rows.float() * factor, self.bits)
            codes.append(part_codes)
            scales.append(part_scales)
        return torch.cat(codes), torch.cat(scales)


def full_precision(weight: Part) -> torch.Tensor:
    """The whole weight as fp32 (for the kernels that start from floats)."""
    return weight.floats(0, weight.shape[0]) if isinstance(weight, BlockQuantized) else weight
