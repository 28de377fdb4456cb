"""The cube task's model: a small convolutional surrogate, one variable from the others.

Inputs are stacked as channels (each input variable's window steps), the output has one
channel per window step of the target, on the same grid: a stem convolution, ``depth``
residual blocks (GroupNorm, GELU, convolution, twice), and a 1x1 head. The convolutions
are 1-, 2- or 3-D to match the samples' grid (a profile, a map, a volume).
"""

from __future__ import annotations

import torch
from torch import nn

_CONV: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def _conv(dims: int, channels_in: int, channels_out: int, kernel: int) -> nn.Module:
    return _CONV[dims](channels_in, channels_out, kernel, padding=kernel // 2)


class ResidualBlock(nn.Module):
    def __init__(self, dims: int, width: int, kernel: int) -> None:
        super().__init__()
        groups = next(g for g in (8, 4, 2, 1) if width % g == 0)
        self.body = nn.Sequential(
            nn.GroupNorm(groups, width),
            nn.GELU(),
            _conv(dims, width, width, kernel),
            nn.GroupNorm(groups, width),
            nn.GELU(),
            _conv(dims, width, width, kernel),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)  # type: ignore[no-any-return]


class Surrogate(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        grid_dims: int,
        width: int = 32,
        depth: int = 4,
        kernel: int = 3,
    ) -> None:
        super().__init__()
        if grid_dims not in _CONV:
            raise ValueError(
                f"the surrogate needs samples on a 1-, 2- or 3-D grid, not {grid_dims}-D"
            )
        self.stem = _conv(grid_dims, in_channels, width, kernel)
        self.blocks = nn.Sequential(
            *(ResidualBlock(grid_dims, width, kernel) for _ in range(depth))
        )
        self.head = _conv(grid_dims, width, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(nn.functional.gelu(self.stem(x))))  # type: ignore[no-any-return]


def stack_inputs(batch: dict[str, torch.Tensor], inputs: list[str]) -> torch.Tensor:
    """``[batch, window * len(inputs), *grid]``: each input's window steps as channels."""
    return torch.cat([batch[name] for name in inputs], dim=1)
