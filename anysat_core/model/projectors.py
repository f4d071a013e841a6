"""Modality projectors: raw tile -> one token per sub-patch, grouped by patch.

* :class:`VHRProjector` (aerial, aerial-flair, spot, naip): strided convolution + token-wise MLP.
* :class:`TemporalProjector` (s2, s1, s1-asc, l7, l8, alos, modis): a modified L-TAE applied to every
  pixel's time series, then cut into patches.

Both return ``(B * P, n_sub, D)``: patches in raster order over the tile; sub-patches inside a patch
in the order the released model used (see :class:`VHRProjector`).  Settings come from the modality
registry (:meth:`~anysat_core.modalities.Modality.projector_config`).  Parameter names equal the released
checkpoint's: the MLPs are :class:`LinearStack` (an ``nn.Sequential`` read through named stages).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import nn

from anysat_core.modalities import LTAEProjectorConfig, Modality, VHRProjectorConfig
from anysat_core.model.pos_embed import date_encoding

__all__ = ["LinearStack", "TemporalProjector", "VHRProjector", "build_projector"]

#: Upper bound on the floats held by one intermediate of the temporal input MLP; the pixels are
#: processed in chunks that respect it, so memory does not grow with the tile size.
LTAE_CHUNK_FLOATS = 2**24  # 64 MiB in float32


def group_norm_rows(rows: torch.Tensor, norm: nn.GroupNorm, relu: bool = False) -> torch.Tensor:
    """``norm`` (a GroupNorm) of rows ``(R, C)``, each row's C channels in ``norm.num_groups`` groups; then ReLU if
    ``relu``. ``(R, C) -> (R, C)``.

    Without autograd this is a layer norm over ``(R, G, C / G)`` followed by the affine in place: the same values
    (to float rounding) at about 1.8x the speed of ``F.group_norm`` on CPU, where these norms of the temporal
    projector take a fifth of the tiny model's time (tests/benchmarks/RESULTS.md, #14 profile).
    """
    groups = norm.num_groups
    if torch.is_grad_enabled():
        out = F.group_norm(rows, groups, norm.weight, norm.bias, norm.eps)
        return F.relu(out) if relu else out
    n_rows, n_ch = rows.shape
    out = F.layer_norm(rows.reshape(n_rows, groups, n_ch // groups), (n_ch // groups,), eps=norm.eps)
    out = out.view(n_rows, n_ch)
    if norm.affine:
        out.mul_(norm.weight.to(out.dtype)).add_(norm.bias.to(out.dtype))
    return out.relu_() if relu else out


class Stage(NamedTuple):
    """One step of a :class:`LinearStack`: ``dropout(ReLU(norm(linear(x))))``."""

    linear: nn.Linear
    norm: nn.Module
    dropout: nn.Dropout | None


class LinearStack(nn.Sequential):
    """``Linear -> norm -> ReLU [-> Dropout]`` per pair of consecutive ``widths``, as one ``nn.Sequential``.

    The flat layout keeps the released checkpoint's parameter names (``mlp.0`` Linear, ``mlp.1`` norm,
    ``mlp.3`` the next Linear...); code reads the layers through :attr:`stages`, never by index.
    """

    def __init__(self, widths: Sequence[int], norm: Callable[[int], nn.Module], dropout: float | None = None) -> None:
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            layers += [nn.Linear(a, b), norm(b), nn.ReLU()]
            if dropout is not None:
                layers.append(nn.Dropout(dropout))
        super().__init__(*layers)
        self.stage_len = 3 if dropout is None else 4

    @property
    def stages(self) -> list[Stage]:
        """The ``(linear, norm, dropout)`` of every step, in order."""
        n = self.stage_len
        return [
            Stage(cast(nn.Linear, self[i]), self[i + 1], cast(nn.Dropout, self[i + 3]) if n == 4 else None)
            for i in range(0, len(self), n)
        ]

    @property
    def out_features(self) -> int:
        """Width of the last step."""
        return self.stages[-1].linear.out_features

    @property
    def widest(self) -> int:
        """Widest output of any step."""
        return max(stage.linear.out_features for stage in self.stages)


class VHRProjector(nn.Module):
    """Single-date very-high-resolution projector.

    ``Conv2d(C, D, k, stride=k, bias=False)`` makes one token per ``k`` pixels (2 m for aerial, 10 m
    for spot/naip); an MLP ``Linear(D,2D) LN ReLU Linear(2D,D) LN ReLU`` refines each token.  Tokens are
    grouped by patch of ``s x s`` 10 m blocks; inside a patch the order is block-major (row-major over
    the 10 m blocks) and then row-major over the ``g x g`` cells of a block, as in the released model.
    """

    def __init__(self, config: VHRProjectorConfig) -> None:
        super().__init__()
        self.config = config
        k = config.conv_px
        self.patch_embed = nn.Conv2d(config.in_chans, config.embed_dim, k, stride=k, bias=False)
        self.mlp = LinearStack(config.mlp_widths, lambda w: nn.LayerNorm(w, eps=1e-5))

    def forward(self, x: torch.Tensor, patch_cells_10m: int) -> torch.Tensor:
        """x ``(B, C, H, W)``, patch side s in 10 m cells -> ``(B*P, s*s*g*g, D)``."""
        y = self.patch_embed(x)  # (B, D, Hc, Wc)
        B, D, Hc, _ = y.shape
        g, s = self.config.cells_per_10m, patch_cells_10m
        h = Hc // (g * s)
        y = y.view(B, D, h, s, g, h, s, g)  # (B, D, pi, bi, ci, pj, bj, cj)
        y = y.permute(0, 2, 5, 3, 6, 4, 7, 1).reshape(B * h * h, s * s * g * g, D)
        return self.mlp(y)


class _FoldedLinear(nn.Linear):
    """A linear layer whose weights are folded with other parameters (partly in fp32) rather than applied by its
    forward: :func:`anysat_core.precision.cast_weights` leaves it to autocast (``keep_dtype``)."""

    keep_dtype = True


class _TemporalAttention(nn.Module):
    """Holds the L-TAE master query ``Q (heads, d_k)`` and key projection ``fc1_k``."""

    def __init__(self, n_head: int, d_k: int, d_in: int) -> None:
        super().__init__()
        self.n_head, self.d_k = n_head, d_k
        self.Q = nn.Parameter(torch.randn(n_head, d_k) * math.sqrt(2.0 / d_k))
        self.fc1_k = _FoldedLinear(d_in, n_head * d_k)
        nn.init.normal_(self.fc1_k.weight, mean=0.0, std=math.sqrt(2.0 / d_k))

    def folded_scores(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W, b)`` with ``logits = e @ W.T + b`` equal to ``Q_h . fc1_k(e)_h / sqrt(d_k)`` per head."""
        w = self.fc1_k.weight.view(self.n_head, self.d_k, -1)  # (h, dk, D)
        b = self.fc1_k.bias.view(self.n_head, self.d_k)
        scale = self.d_k**-0.5
        return torch.einsum("hk,hkd->hd", self.Q, w) * scale, (self.Q * b).sum(-1) * scale


class _LTAE(nn.Module):
    """Modified Lightweight Temporal Attention Encoder applied per pixel (module name ``patch_embed``)."""

    def __init__(self, config: LTAEProjectorConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.pe_period = config.pe_period
        self.inconv = LinearStack((config.in_chans, *config.input_widths), lambda w: nn.GroupNorm(4, w), config.dropout)
        d = self.inconv.out_features
        self.in_norm = nn.GroupNorm(self.n_head, d) if config.in_norm else None
        self.attention_heads = _TemporalAttention(self.n_head, config.d_k, d)
        self.mlp = LinearStack((d, config.embed_dim), lambda w: nn.GroupNorm(4, w))
        self.out_norm = nn.GroupNorm(self.n_head, config.embed_dim)
        self.dropout = nn.Dropout(config.dropout)

    def _input_mlp(self, rows: torch.Tensor) -> torch.Tensor:
        """Linear -> GroupNorm(4) over each row's channels -> ReLU -> Dropout, five times. ``(R, C) -> (R, D)``."""
        for lin, norm, drop in self.inconv.stages:
            gn = cast(nn.GroupNorm, norm)
            assert drop is not None  # inconv is built with dropout
            rows = drop(group_norm_rows(lin(rows), gn, relu=True))
        return rows

    def encode(self, x: torch.Tensor, pe: torch.Tensor, scores: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """x ``(b, n, T, C)`` per-pixel series of b samples, pe ``(b, 1, T, D)`` date encodings -> ``(b, n, D)``.

        ``scores`` is :meth:`_TemporalAttention.folded_scores`, computed once per forward.
        """
        b, n, T, C = x.shape
        e = self._input_mlp(x.reshape(b * n * T, C))
        D = e.shape[-1]
        e = e.view(b * n, T, D)
        if self.in_norm is not None:  # GroupNorm(16) over (channels of a group) x (all dates)
            e = F.group_norm(
                e.transpose(1, 2), self.n_head, self.in_norm.weight, self.in_norm.bias, self.in_norm.eps
            ).transpose(1, 2)
            e = e.reshape(b, n, T, D) + pe
        else:
            e = e.view(b, n, T, D) + pe  # not in place: autograd needs the input MLP's output (eval mode too)
        w, bias = scores
        logits = torch.addmm(bias, e.reshape(-1, D), w.t()).view(b * n, T, self.n_head)
        attn = logits.softmax(dim=1)  # over dates
        if self.training:
            attn = F.dropout(attn, 0.1)
        # head h pools channel block h of the (date-encoded) features with its own weights
        o = torch.einsum("nth,nthc->nhc", attn, e.view(b * n, T, self.n_head, D // self.n_head)).reshape(b * n, D)
        lin, norm, _ = self.mlp.stages[0]
        gn = cast(nn.GroupNorm, norm)
        o = self.dropout(group_norm_rows(lin(o), gn, relu=True))
        return group_norm_rows(o, self.out_norm).view(b, n, D)

    def forward(self, x: torch.Tensor, dates: torch.Tensor) -> torch.Tensor:
        """x ``(B, T, C, H, W)``, dates ``(B, T)`` -> ``(B, H, W, D)``; pixels processed in bounded chunks."""
        B, T, C, H, W = x.shape
        D = self.out_norm.num_channels
        pe = date_encoding(dates, self.inconv.out_features, self.n_head, self.pe_period).to(x.dtype)
        pe = pe.unsqueeze(1)  # (B, 1, T, D)
        pix = x.permute(0, 3, 4, 1, 2).reshape(B, H * W, T, C)
        chunk = max(1, LTAE_CHUNK_FLOATS // (T * self.inconv.widest))  # pixels per chunk
        scores = self.attention_heads.folded_scores()  # once per call, not per chunk
        if chunk >= B * H * W:
            return self.encode(pix, pe, scores).view(B, H, W, D)
        out = x.new_empty(B, H * W, D)
        if chunk >= H * W:  # whole samples per chunk
            per = chunk // (H * W)
            for b0 in range(0, B, per):
                out[b0 : b0 + per] = self.encode(pix[b0 : b0 + per], pe[b0 : b0 + per], scores)
        else:
            for b in range(B):
                for p0 in range(0, H * W, chunk):
                    out[b : b + 1, p0 : p0 + chunk] = self.encode(
                        pix[b : b + 1, p0 : p0 + chunk], pe[b : b + 1], scores
                    )
        return out.view(B, H, W, D)


class TemporalProjector(nn.Module):
    """Time-series projector: optional masking with ``pad_parameter``, per-pixel L-TAE, patch cutting."""

    def __init__(self, config: LTAEProjectorConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = _LTAE(config)
        self.pad_parameter = nn.Parameter(torch.tensor(0.0), requires_grad=False)

    def patch_side(self, patch_cells_10m: int) -> int:
        """Pixels per patch side for a patch side of ``patch_cells_10m`` x 10 m."""
        return max(1, patch_cells_10m // self.config.reduce_scale)

    def forward(
        self, x: torch.Tensor, dates: torch.Tensor, patch_cells_10m: int, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x ``(B, T, C, H, W)``, dates ``(B, T)``, mask broadcastable to x (1 = valid) -> ``(B*P, s'*s', D)``."""
        if mask is not None:
            x = torch.where(mask.to(torch.bool), x, self.pad_parameter.to(x.dtype))
        y = self.patch_embed(x, dates)  # (B, H, W, D)
        B, H, _, D = y.shape
        s = self.patch_side(patch_cells_10m)
        h = H // s
        y = y[:, : h * s, : h * s].reshape(B, h, s, h, s, D).permute(0, 1, 3, 2, 4, 5)
        return y.reshape(B * h * h, s * s, D)


def build_projector(modality: Modality, embed_dim: int) -> VHRProjector | TemporalProjector:
    """The projector the registry names for ``modality``, for a model of width ``embed_dim``."""
    config = modality.projector_config(embed_dim)
    if isinstance(config, VHRProjectorConfig):
        return VHRProjector(config)
    return TemporalProjector(config)
