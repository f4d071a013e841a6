"""Transformer building blocks of AnySat (no modality knowledge here).

* :class:`Block`: pre-LN ViT block of the main transformer (LayerNorm eps 1e-6), with the two attention
  behaviours of the released code: ``"standard"`` and ``"flash-compat"``.
* :class:`SpatialBlock`: block of the shared spatial encoder (eps 1e-5) with iRPE-style contextual
  relative-position bias on keys.
* :class:`CombinerBlock`: the final cross-attention block: learned position-conditioned queries pool
  every modality/patch token; no residual around its attention.

Every attention module is an :class:`AttentionBase` with one switch, ``fused_attn`` (as in timm): True runs
:func:`torch.nn.functional.scaled_dot_product_attention` (fused kernels on CPU and GPU; the relative-position
term enters as an additive float mask), False an explicit softmax implementation of the same maths (for checks).
Its default is read once, when the module is built, from the ``ANYSAT_FUSED_ATTN`` environment variable
(:func:`use_fused_attn`).  :class:`SelfAttention` also holds its ``mode`` (``"standard"`` or ``"flash-compat"``),
set from the model config.  :class:`~anysat_core.model.anysat.AnySat` sets both on all its modules at once.

Parameter names equal the released checkpoint's (``qkv``, ``proj``, ``rpe_k.lookup_table_weight``,
``q_learned``, ``wk``, ``wv``, ``mlp.fc1``/``fc2``, ``norm1``/``norm2``).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from anysat_core.config import ATTENTION_MODES, AttentionMode
from anysat_core.errors import ConfigError
from anysat_core.model.pos_embed import NUM_RPE_BUCKETS

__all__ = [
    "FUSED_ATTN_ENV",
    "AttentionBase",
    "Block",
    "CombinerBlock",
    "CrossAttention",
    "Mlp",
    "RPESelfAttention",
    "SelfAttention",
    "SpatialBlock",
    "use_fused_attn",
]

#: Environment variable giving the default of ``fused_attn`` for modules built afterwards: ``0`` for the explicit
#: softmax path, ``1`` (default) for fused SDPA kernels.
FUSED_ATTN_ENV = "ANYSAT_FUSED_ATTN"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def use_fused_attn() -> bool:
    """Default of ``fused_attn`` for a new attention module: the ``ANYSAT_FUSED_ATTN`` variable (unset = True).

    Raises:
        ConfigError: the variable holds something other than 0/1/true/false/yes/no/on/off.
    """
    value = os.environ.get(FUSED_ATTN_ENV, "1").strip().lower()
    if value not in _TRUE + _FALSE:
        raise ConfigError(
            f"{FUSED_ATTN_ENV}={os.environ[FUSED_ATTN_ENV]!r}; expected 1 (fused attention kernels, the default) or "
            f"0 (explicit softmax). Set it to one of these or unset it."
        )
    return value in _TRUE


class AttentionBase(nn.Module):
    """An attention module with the ``fused_attn`` switch (fused SDPA kernels or the explicit softmax path)."""

    def __init__(self, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.fused_attn: bool = use_fused_attn()

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``softmax(q k^T / sqrt(d) + bias) v`` over the second-to-last axis.

        Shapes: q ``(..., Lq, d)``, k/v ``(..., Lk, d)``, bias broadcastable to ``(..., Lq, Lk)``.
        """
        if self.fused_attn:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (..., Lq, Lk)
        if bias is not None:
            logits = logits + bias
        return logits.softmax(dim=-1) @ v  # (..., Lq, d)


class Mlp(nn.Module):
    """``fc2(GELU(fc1(x)))`` with exact (erf) GELU."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SelfAttention(AttentionBase):
    """Multi-head self-attention with a fused ``qkv`` projection.

    ``mode="standard"`` is softmax over tokens.  ``mode="flash-compat"`` is what the released code computes when
    it hands ``(B, Hh, N, hd)`` to flash-attn, which reads it as ``(batch, seq, heads, hd)``: every token's heads
    attend to each other and tokens never mix.
    """

    def __init__(self, dim: int, num_heads: int, mode: AttentionMode = "standard") -> None:
        super().__init__(num_heads)
        if mode not in ATTENTION_MODES:
            raise ConfigError(f"attention mode {mode!r}; expected one of {', '.join(ATTENTION_MODES)}")
        self.mode: AttentionMode = mode
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``(B, N, D)`` -> ``(B, N, D)``."""
        B, N, D = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.num_heads, D // self.num_heads)  # (B, N, 3, Hh, hd)
        if self.mode == "standard":
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, Hh, N, hd)
            out = self.attend(q, k, v).transpose(1, 2)  # (B, N, Hh, hd)
        else:  # flash-compat
            q, k, v = qkv.unbind(2)  # (B, N, Hh, hd)
            out = self.attend(q, k, v)  # softmax over the Hh axis
        return self.proj(out.reshape(B, N, D))


class Block(nn.Module):
    """Pre-LN transformer block of the main encoder (LayerNorm eps 1e-6)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, mode: AttentionMode = "standard") -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SelfAttention(dim, num_heads, mode)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``(B, N, D)`` -> ``(B, N, D)``."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class RelativePositionTable(nn.Module):
    """Contextual relative-position table on keys, shared by all heads: ``(1, head_dim, 8)``."""

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.lookup_table_weight = nn.Parameter(torch.zeros(1, head_dim, NUM_RPE_BUCKETS))

    def bias(self, q0: torch.Tensor, buckets: torch.Tensor) -> torch.Tensor:
        """Bias ``b[..., i, j] = q0[..., i, :] . W[:, buckets[i, j]]``.

        Args:
            q0: ``(..., Lq, head_dim)`` queries of head 0 (the released model uses head 0 for all heads).
            buckets: ``(Lq, Lk)`` long bucket ids.

        Returns:
            ``(..., Lq, Lk)`` additive logits.
        """
        table = q0 @ self.lookup_table_weight[0]  # (..., Lq, 8)
        idx = buckets.expand(*table.shape[:-1], buckets.shape[-1])
        return torch.gather(table, -1, idx)


class RPESelfAttention(AttentionBase):
    """Self-attention of the spatial encoder with a relative-position bias from the *scaled* head-0 query."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__(num_heads)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rpe_k = RelativePositionTable(dim // num_heads)

    def forward(self, x: torch.Tensor, buckets: torch.Tensor, query_rows: int | None = None) -> torch.Tensor:
        """x ``(N, L, D)``, buckets ``(L, L)``; with ``query_rows=r`` only the first r queries are computed."""
        N, L, D = x.shape
        hd = D // self.num_heads
        if query_rows is None:
            q, k, v = self.qkv(x).view(N, L, 3, self.num_heads, hd).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            w, b = self.qkv.weight, self.qkv.bias
            q = F.linear(x[:, :query_rows], w[:D], b[:D]).view(N, query_rows, self.num_heads, hd).transpose(1, 2)
            k, v = F.linear(x, w[D:], b[D:]).view(N, L, 2, self.num_heads, hd).permute(2, 0, 3, 1, 4).unbind(0)
            buckets = buckets[:query_rows]
        bias = self.rpe_k.bias(q[:, 0] * hd**-0.5, buckets).unsqueeze(1)  # (N, 1, Lq, L)
        out = self.attend(q, k, v, bias.to(q.dtype))  # (N, Hh, Lq, hd)
        return self.proj(out.transpose(1, 2).reshape(N, -1, D))


class SpatialBlock(nn.Module):
    """Pre-LN block of the shared spatial encoder (LayerNorm eps 1e-5) with relative-position bias."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = RPESelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, buckets: torch.Tensor, query_rows: int | None = None) -> torch.Tensor:
        """x ``(N, L, D)`` -> ``(N, L, D)``, or ``(N, query_rows, D)`` when only leading rows are needed."""
        y = self.attn(self.norm1(x), buckets, query_rows)
        x = (x if query_rows is None else x[:, :query_rows]) + y
        return x + self.mlp(self.norm2(x))


class CrossAttention(AttentionBase):
    """Cross-attention of the combiner: learned queries, keys/values from the tokens."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__(num_heads)
        self.q_learned = nn.Parameter(torch.zeros(1, 1, dim))
        self.wk = nn.Linear(dim, dim)
        self.wv = nn.Linear(dim, dim)
        self.rpe_k = RelativePositionTable(dim // num_heads)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, query_pe: torch.Tensor, buckets: torch.Tensor) -> torch.Tensor:
        """x ``(B, Lk, D)``, query_pe ``(Lq, D)``, buckets ``(Lq, Lk)`` -> ``(B, Lq, D)`` (before ``proj``).

        Per-sample queries: query_pe ``(B, Lq, D)`` with buckets ``(B, Lq, Lk)`` (queries at different positions
        in every sample, as in JEPA pretraining).
        """
        B, Lk, D = x.shape
        hd = D // self.num_heads
        k = self.wk(x).view(B, Lk, self.num_heads, hd).transpose(1, 2)  # (B, Hh, Lk, hd)
        v = self.wv(x).view(B, Lk, self.num_heads, hd).transpose(1, 2)
        if query_pe.dim() == 3:  # per-sample queries
            q = (self.q_learned + query_pe).view(B, -1, self.num_heads, hd).transpose(1, 2)  # (B, Hh, Lq, hd)
            bias = self.rpe_k.bias(q[:, 0], buckets).unsqueeze(1)  # unscaled head-0 query, (B, 1, Lq, Lk)
            out = self.attend(q, k, v, bias.to(q.dtype))  # (B, Hh, Lq, hd)
            return out.transpose(1, 2).reshape(B, -1, D)
        q = (self.q_learned[0] + query_pe).view(-1, self.num_heads, hd).transpose(0, 1)  # (Hh, Lq, hd)
        bias = self.rpe_k.bias(q[0], buckets)  # unscaled head-0 query here, (Lq, Lk)
        q = q.unsqueeze(0).expand(B, -1, -1, -1)
        out = self.attend(q, k, v, bias.to(q.dtype))  # (B, Hh, Lq, hd)
        return out.transpose(1, 2).reshape(B, -1, D)


class CombinerBlock(nn.Module):
    """Final block: ``z = proj(CrossAttn(LN1 x))`` (no residual), then ``z + MLP(LN2 z)``; eps 1e-6."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(
        self, x: torch.Tensor, query_pe: torch.Tensor, buckets: torch.Tensor, drop_rows: slice | None = None
    ) -> torch.Tensor:
        """Pool tokens into ``Lq`` outputs; ``drop_rows`` removes query rows before the projection.

        ``query_pe``/``buckets`` are ``(Lq, D)``/``(Lq, Lk)``, or per sample ``(B, Lq, D)``/``(B, Lq, Lk)``.
        """
        out = self.attn(self.norm1(x), query_pe, buckets)
        if drop_rows is not None:
            out = torch.cat([out[:, : drop_rows.start], out[:, drop_rows.stop :]], dim=1)
        z = self.attn.proj(out)
        return z + self.mlp(self.norm2(z))
