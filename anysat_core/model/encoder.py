"""The shared spatial encoder: one small transformer for the sub-patch tokens of every modality."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from anysat_core.model.attention import SpatialBlock
from anysat_core.model.pos_embed import distance_buckets

__all__ = ["SpatialEncoder"]

#: Upper bound on the floats of the widest intermediate (the MLP hidden layer) of one spatial-encoder
#: call; more sequences are processed in chunks, so memory stays flat whatever the tile size.
SPATIAL_CHUNK_FLOATS = 2**24  # 64 MiB in float32


class SpatialEncoder(nn.Module):
    """Summarises each patch's sub-patch tokens into one patch token.

    Input sequences are ``[cls | sub-patch tokens + resolution-aware PE]`` of length ``1 + G*G``;
    ``depth`` blocks with relative-position bias on a G x G grid, then LayerNorm (eps 1e-5).
    Weights are shared by all modalities, so sequences of several modalities with the same G run in
    one batch.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.predictor_blocks = nn.ModuleList(SpatialBlock(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.predictor_norm = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, x: torch.Tensor, grid: int, *, keep_subpatches: bool = False) -> torch.Tensor:
        """Encode ``x (N, 1 + G*G, D)`` (class token first, PE added).

        Returns:
            ``(N, 1 + G*G, D)`` every token if ``keep_subpatches``, else ``(N, D)`` the class tokens only
            (the last block then computes only the class-token query: the other rows are not needed).
        """
        N, L = x.shape[:2]
        hidden = cast(SpatialBlock, self.predictor_blocks[0]).mlp.fc1.out_features
        chunk = max(1, SPATIAL_CHUNK_FLOATS // (L * hidden))
        if N <= chunk:
            return self._encode(x, grid, keep_subpatches)
        return torch.cat([self._encode(x[i : i + chunk], grid, keep_subpatches) for i in range(0, N, chunk)])

    def _encode(self, x: torch.Tensor, grid: int, keep_subpatches: bool) -> torch.Tensor:
        buckets = distance_buckets(grid, special=1, device=x.device)
        last = len(self.predictor_blocks) - 1
        for i, blk in enumerate(self.predictor_blocks):
            x = blk(x, buckets, None if keep_subpatches or i < last else 1)
        x = self.predictor_norm(x)
        return x if keep_subpatches else x[:, 0]
