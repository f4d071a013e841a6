"""The JEPA predictor: from the student's context tokens, predict the teacher's tokens at target patches.

Model spec §2.1 / §2.3 step 4 (the original ``VisionTransformerPredictorMulti``, itself I-JEPA's predictor):
``Linear(D -> Dp)`` on the context tokens plus the 2-D sin-cos PE of their patch positions; one learned
``mask_token`` plus the PE of each target position; a learned ``cls_token`` in front; ``depth`` pre-LN blocks
(the main transformer's :class:`~anysat_core.model.attention.Block`, LayerNorm eps 1e-5 as in the original);
LayerNorm; ``Linear(Dp -> D)`` on the target rows.  Each target block is predicted in its own sequence
``[cls | context | mask tokens of that block]``.

Differences from the original (intended behaviour, see the spec §2.5):

* The original's PE table had a leading class-token row, and it was indexed with patch indices, so every token got
  the PE of the *previous* patch (off by one).  Here patch p gets the PE of patch p.
* The PE is built for the batch's grid and patch size on the fly (the original precomputed one table per dataset
  and scale); positions are in units of 10 m (``index * patch_cells_10m``), as the encoder's patch PE.
* Built with ``attention="standard"`` by :class:`~training.jepa.AnySatJEPA` whatever the encoder's mode: with
  ``"flash-compat"`` (the original's setting) tokens never mix, so mask tokens would not see the context.
* Output layout ``(B, n_targets, Kt, D)`` (the original concatenated target blocks along the batch axis, target
  block major: ``(n_targets * B, Kt, D)``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from anysat_core.config import ATTENTION_MODES, AttentionMode
from anysat_core.errors import ConfigError, InputShapeError
from anysat_core.model.attention import Block
from anysat_core.model.pos_embed import sincos_2d

__all__ = ["JEPAPredictor"]


class JEPAPredictor(nn.Module):
    """Narrow transformer over context tokens and mask tokens.

    Args:
        embed_dim: width D of the encoder tokens (input and output).
        predictor_dim: internal width Dp (default D, as in the released configs); a multiple of 4 and of
            ``num_heads``.
        depth: number of blocks (4 in the released configs).
        num_heads: attention heads (default: ``predictor_dim // 64``, at least 1).
        mlp_ratio: MLP hidden width as a multiple of Dp.
        attention: attention mode of the blocks (``"standard"`` or ``"flash-compat"``, as the encoder's).
        init_std: standard deviation of the trunc-normal init of linears and ``mask_token``.
    """

    def __init__(
        self,
        embed_dim: int,
        predictor_dim: int | None = None,
        depth: int = 4,
        num_heads: int | None = None,
        mlp_ratio: float = 4.0,
        attention: AttentionMode = "standard",
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        dim = embed_dim if predictor_dim is None else predictor_dim
        heads = max(1, dim // 64) if num_heads is None else num_heads
        if depth < 1:
            raise ConfigError(f"predictor_depth={depth}; expected at least 1 block (4 in the released configs)")
        if heads < 1 or dim < 4 or dim % 4 or dim % heads:
            raise ConfigError(
                f"predictor_dim={dim}, predictor_heads={heads}; expected a width divisible by 4 and by the heads "
                f"(e.g. predictor_dim={embed_dim}, predictor_heads={max(1, embed_dim // 64)})"
            )
        if attention not in ATTENTION_MODES:
            raise ConfigError(f"attention={attention!r}; expected one of {ATTENTION_MODES}")
        self.embed_dim, self.predictor_dim = embed_dim, dim
        self.predictor_embed = nn.Linear(embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.predictor_blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, attention) for _ in range(depth))
        for blk in self.predictor_blocks:  # the original built these blocks with nn.LayerNorm's default eps
            blk.norm1.eps = blk.norm2.eps = 1e-5  # type: ignore[union-attr]
        self.predictor_norm = nn.LayerNorm(dim, eps=1e-5)
        self.predictor_proj = nn.Linear(dim, embed_dim)
        self._init_weights(init_std)

    def _init_weights(self, std: float) -> None:
        """I-JEPA init: trunc-normal linears with zero bias, depth rescale of ``proj``/``fc2``; cls starts at 0."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.mask_token, std=std)
        for i, blk in enumerate(self.predictor_blocks):
            assert isinstance(blk, Block)
            blk.attn.proj.weight.data.div_(math.sqrt(2.0 * (i + 1)))
            blk.mlp.fc2.weight.data.div_(math.sqrt(2.0 * (i + 1)))

    def forward(
        self,
        context: torch.Tensor,
        context_positions: torch.Tensor,
        target_positions: torch.Tensor,
        *,
        grid: int,
        patch_cells_10m: int,
    ) -> torch.Tensor:
        """Predict the tokens of every target block.

        Args:
            context: ``(B, K, D)`` student tokens at the context positions (combiner output, tile token excluded).
            context_positions: ``(B, K)`` int64 raster indices of the context tokens in the ``grid`` x ``grid``
                patch grid.
            target_positions: ``(B, n_targets, Kt)`` int64 raster indices of the target blocks.
            grid: patches per tile side h.
            patch_cells_10m: patch side in 10 m cells (the PE step, as the encoder's patch PE).

        Returns:
            ``(B, n_targets, Kt, D)`` predictions, in the encoder's width.

        Raises:
            InputShapeError: inconsistent shapes or positions outside the grid.
        """
        B, K, D = context.shape
        if (
            D != self.embed_dim
            or tuple(context_positions.shape) != (B, K)
            or target_positions.dim() != 3
            or target_positions.shape[0] != B
        ):
            raise InputShapeError(
                f"predictor got context {tuple(context.shape)}, context_positions {tuple(context_positions.shape)}, "
                f"target_positions {tuple(target_positions.shape)}; expected (B, K, {self.embed_dim}), (B, K) and "
                "(B, n_targets, Kt)"
            )
        P = grid * grid
        for name, pos in (("context_positions", context_positions), ("target_positions", target_positions)):
            if pos.numel() and (int(pos.min()) < 0 or int(pos.max()) >= P):
                raise InputShapeError(
                    f"{name} range over [{int(pos.min())}, {int(pos.max())}]; expected raster indices in [0, {P}) "
                    f"for a {grid} x {grid} patch grid"
                )
        n, Kt = target_positions.shape[1:]
        Dp = self.predictor_dim
        pe = sincos_2d(Dp, grid, patch_cells_10m, device=context.device, dtype=context.dtype)  # (P, Dp)
        x = self.predictor_embed(context) + pe[context_positions]  # (B, K, Dp)
        x = x.unsqueeze(1).expand(B, n, K, Dp).reshape(B * n, K, Dp)
        queries = (self.mask_token + pe[target_positions]).reshape(B * n, Kt, Dp)  # (B * n, Kt, Dp)
        x = torch.cat([self.cls_token.expand(B * n, 1, Dp), x, queries], dim=1)
        for blk in self.predictor_blocks:
            x = blk(x)
        x = self.predictor_norm(x[:, 1 + K :])
        return self.predictor_proj(x).view(B, n, Kt, self.embed_dim)
