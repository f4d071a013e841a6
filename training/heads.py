"""Task heads of the AnySat downstream protocols (``Fine`` in the original code, anysat-model.md §3.1).

Every head is LayerNorm + Linear, the paper's linear probe:

* :class:`TileHead` on the tile token ``(B, D)`` -> logits ``(B, K)`` (multi-label or multi-class tile
  classification).  D = 768 and K = 16: 1,536 + 12,304 = 13.8 K parameters ("14K" in the paper's figure).
* :class:`DenseHead` on the dense features ``(B, H, W, 2D)`` (patch token ‖ sub-patch token per cell) ->
  logits ``(B, K, H * f, W * f)``: each cell predicts ``K * f * f`` values that are pixel-shuffled to an
  ``f x f`` block of label pixels (``proj_size`` in the original; FLAIR f = 10: 2 m cells -> 0.2 m labels).
  D = 768, K = 2, f = 1: 3,072 + 3,074 = 6.1 K parameters ("6.1K").  When the shuffled grid still differs from
  the label grid (a label grid that is not ``f`` times the dense grid), :func:`resize_logits` resamples the
  logits (bilinear up, area-average down) so that the loss and the metrics see one logit map per label pixel.

Nothing here knows about datasets, losses or metrics (:mod:`training.downstream` does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anysat_core.errors import ConfigError, InputShapeError

__all__ = ["DenseHead", "TileHead", "resize_logits"]


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}={value!r}; expected a positive int")
    return value


class TileHead(nn.Module):
    """LayerNorm + Linear on the tile token.

    Args:
        in_dim: D, the width of the encoder's tile token.
        num_classes: K, the number of logits.
    """

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.in_dim = _positive_int("in_dim", in_dim)
        self.num_classes = _positive_int("num_classes", num_classes)
        self.norm = nn.LayerNorm(in_dim)
        self.fc = nn.Linear(in_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tile token ``(B, D)`` -> logits ``(B, K)``."""
        if x.dim() != 2 or x.shape[-1] != self.in_dim:
            raise InputShapeError(
                f"TileHead got features of shape {tuple(x.shape)}; expected (B, {self.in_dim}), the tile token "
                "(AnySat output='tile')"
            )
        return self.fc(self.norm(x))


class DenseHead(nn.Module):
    """LayerNorm + Linear per dense cell, pixel-shuffled by ``upsample``.

    Args:
        in_dim: 2D, the width of the dense features (patch token ‖ sub-patch token).
        num_classes: K.
        upsample: f, label pixels per dense cell along each side (1: one label pixel per cell).
    """

    def __init__(self, in_dim: int, num_classes: int, upsample: int = 1) -> None:
        super().__init__()
        self.in_dim = _positive_int("in_dim", in_dim)
        self.num_classes = _positive_int("num_classes", num_classes)
        self.upsample = _positive_int("upsample", upsample)
        self.norm = nn.LayerNorm(in_dim)
        self.fc = nn.Linear(in_dim, num_classes * upsample * upsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Dense features ``(B, H, W, 2D)`` (channels last) -> logits ``(B, K, H * f, W * f)``.

        Output channel ``k * f * f + i * f + j`` of a cell becomes label pixel ``(i, j)`` of the cell's ``f x f``
        block for class ``k`` (:func:`torch.nn.functional.pixel_shuffle`).
        """
        if x.dim() != 4 or x.shape[-1] != self.in_dim:
            raise InputShapeError(
                f"DenseHead got features of shape {tuple(x.shape)}; expected (B, H, W, {self.in_dim}), the dense "
                "features (AnySat output='dense')"
            )
        y = self.fc(self.norm(x)).permute(0, 3, 1, 2)  # (B, K f f, H, W)
        return F.pixel_shuffle(y, self.upsample) if self.upsample > 1 else y.contiguous()


def resize_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample logits ``(B, K, h, w)`` to the label grid ``size = (H, W)``; unchanged when they already match.

    Bilinear interpolation where the label grid is finer, area averaging where it is coarser (a dense map finer
    than its labels, e.g. 2 m aerial cells under 10 m labels).
    """
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    finer = size[0] >= logits.shape[-2] and size[1] >= logits.shape[-1]
    if finer:
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return F.interpolate(logits, size=size, mode="area")
