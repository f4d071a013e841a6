"""AnySat: one model for any resolution, scale and modality (Astruc et al., CVPR 2025).

Pipeline (shapes for B tiles, width D, patch side ``patch_size_m`` = s x 10 m, h x h patches, P = h*h)::

    for each modality m:      projector_m(raw)             -> (B*P, n_sub_m, D)
    grouped by n_sub:         spatial_encoder([cls | tokens + PE_m])  -> (B*P, D) patch tokens
    tokens = [cls] [modis] [tokens(m1) + PE] [tokens(m2) + PE] ...   -> (B, 1 [+1] + M*P, D)
    main transformer:         depth pre-LN blocks
    combiner:                 1 + P learned queries pool all tokens  -> (B, 1 + P, D)

Reusable steps (JEPA pretraining): :meth:`AnySat.plan` validates a batch, :meth:`AnySat.patch_tokens` runs
projectors + spatial encoder (one token per patch and modality), :meth:`AnySat.forward_tokens` builds the sequence
at chosen patch positions (optionally with modality masking) and runs the main blocks and the combiner;
:meth:`AnySat.forward_plan` is these steps plus the output layout.

Outputs: ``tile`` (B, D), ``patch`` (B, h, h, D), ``all`` (B, 1+P, D), ``dense`` (B, h*r, h*r, 2D)
(patch token concatenated with the sub-patch token of ``output_modality``; r = sqrt(n_sub)).

The module tree and parameter names equal the released checkpoint's, so ``state_dict()`` is
interchangeable with ``AnySat.pth``.  In eval mode the outputs equal the original code's
``forward`` (``flash_attn=False``) to float rounding.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Mapping
from types import FrameType
from typing import Any, cast

import torch
from torch import nn

from anysat_core.config import AnySatConfig, AttentionMode, config_for_size
from anysat_core.errors import InputShapeError, PatchSizeError, UnknownModalityError
from anysat_core.modalities import MODALITIES
from anysat_core.model.attention import AttentionBase, Block, CombinerBlock, SelfAttention, SpatialBlock
from anysat_core.model.encoder import SpatialEncoder
from anysat_core.model.inputs import BatchPlan, Output, check_batch
from anysat_core.model.pos_embed import distance_buckets, distance_buckets_at, sincos_2d
from anysat_core.model.projectors import TemporalProjector, VHRProjector, build_projector

__all__ = ["AnySat"]

_NN_MODULE_FILE = nn.Module.__call__.__code__.co_filename


def _caller_stacklevel() -> int:
    """``stacklevel`` of a warning raised in ``forward`` that points at the user's call, past ``nn.Module.__call__``."""
    level = 2
    frame: FrameType | None = sys._getframe(2)  # the caller of forward
    while frame is not None and frame.f_code.co_filename == _NN_MODULE_FILE:
        level, frame = level + 1, frame.f_back
    return level


class AnySat(nn.Module):
    """The AnySat encoder.

    Args:
        size: ``"test"``, ``"tiny"``, ``"small"`` or ``"base"`` (ignored when ``config`` is given).
        config: a full :class:`~anysat_core.config.AnySatConfig`.
        **overrides: config fields to change from the size preset (e.g. ``attention="flash-compat"``).

    Example:
        >>> model = AnySat(size="tiny").eval()
        >>> feats = model(batch, patch_size_m=20, output="dense", output_modality="s2")
    """

    def __init__(self, size: str = "tiny", *, config: AnySatConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        if config is None:
            config = config_for_size(size, **overrides)
        elif overrides:
            config = config.replace(**overrides)
        self.config = config
        D = config.embed_dim
        self.embed_dim = D
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for name in sorted(config.modalities):
            self.add_module(f"projector_{name}", build_projector(MODALITIES[name], D))
        self.spatial_encoder = SpatialEncoder(D, config.depth, config.num_heads, config.mlp_ratio)
        self.blocks = nn.ModuleList(
            [Block(D, config.num_heads, config.mlp_ratio, config.attention) for _ in range(config.depth)]
            + [CombinerBlock(D, config.num_heads, config.mlp_ratio)]
        )
        self._init_weights()

    # ------------------------------------------------------------------ construction helpers
    def _init_weights(self) -> None:
        """Initialisation of the released code (trunc-normal 0.02 in the spatial encoder, with depth rescale)."""
        for m in self.spatial_encoder.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        for i, module in enumerate(self.spatial_encoder.predictor_blocks):
            blk = cast(SpatialBlock, module)
            blk.attn.proj.weight.data.div_(math.sqrt(2.0 * (i + 1)))
            blk.mlp.fc2.weight.data.div_(math.sqrt(2.0 * (i + 1)))
        for m in self.modules():
            if hasattr(m, "lookup_table_weight"):
                nn.init.trunc_normal_(cast(torch.Tensor, m.lookup_table_weight), std=0.02)

    @property
    def size(self) -> str:
        """Preset name of this model's configuration."""
        return self.config.size

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities this model has a projector for."""
        return self.config.modalities

    @property
    def attention_mode(self) -> AttentionMode:
        """Attention behaviour of the main blocks: ``"standard"`` or ``"flash-compat"`` (kept in ``config``)."""
        return self.config.attention

    @attention_mode.setter
    def attention_mode(self, mode: AttentionMode) -> None:
        self.config = self.config.replace(attention=mode)  # ConfigError for an unknown mode
        for m in self.modules():
            if isinstance(m, SelfAttention):
                m.mode = mode

    @property
    def fused_attention(self) -> bool:
        """True when every attention module runs fused SDPA kernels, False when any runs the explicit softmax.

        Set it to switch all of them (the default comes from ``ANYSAT_FUSED_ATTN``, see
        :func:`~anysat_core.model.attention.use_fused_attn`).
        """
        return all(m.fused_attn for m in self.modules() if isinstance(m, AttentionBase))

    @fused_attention.setter
    def fused_attention(self, enabled: bool) -> None:
        for m in self.modules():
            if isinstance(m, AttentionBase):
                m.fused_attn = bool(enabled)

    def projector(self, modality: str) -> VHRProjector | TemporalProjector:
        """The projector module of ``modality``.

        Raises:
            UnknownModalityError: ``modality`` is not registered, or this model has no projector for it.
        """
        if modality not in self.config.modalities:
            MODALITIES[modality]  # unknown name: the registry's error lists the valid ones
            raise UnknownModalityError(
                f"this model has no projector for {modality!r}; it has {', '.join(self.config.modalities)}"
            )
        return getattr(self, f"projector_{modality}")

    # ------------------------------------------------------------------ loading / saving
    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike[str], size: str | None = None, *, map_location: str | torch.device = "cpu"
    ) -> AnySat:
        """Load weights from the official format (``{'state_dict': ...}``) or this package's format.

        Args:
            path: checkpoint file (read with ``torch.load(weights_only=True)``).
            size: expected size; required to be consistent with the file. For official files it may be
                omitted and is then inferred from the tensor shapes.
            map_location: where tensors are loaded.

        Raises:
            CheckpointError: unreadable file or unknown format.
            CheckpointMismatchError: missing, unexpected or mis-shaped keys (all listed).
        """
        from anysat_core.model.checkpoint import load_checkpoint

        return load_checkpoint(cls, path, size=size, map_location=map_location)

    @classmethod
    def from_pretrained(cls, size: str = "base", **kwargs: Any) -> AnySat:
        """Named pretrained weights: ``"base"``, the released GeoPlex-pretrained model, downloaded once and cached;
        ``"geoplex-mini"``, a tiny model pretrained on GeoPlex-mini and shipped with the package (offline; its
        SHA-256 is checked against the record beside it).

        See :func:`anysat_core.model.checkpoint.pretrained_path` for the keyword arguments of ``"base"`` (``path``,
        ``cache_dir``, ``revision``, ``local_files_only``) and the ``ANYSAT_WEIGHTS`` variable.

        Raises:
            PretrainedWeightsError: another name (the message lists both), or weights missing or corrupt.
        """
        from anysat_core.model.checkpoint import SHIPPED, pretrained_path

        path = pretrained_path(size, **kwargs)
        return cls.from_checkpoint(path, size=None if size in SHIPPED else size)

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write weights plus config (atomically: temporary file then rename); an existing file is replaced only
        with ``overwrite=True`` (:class:`~anysat_core.errors.OutputExistsError` otherwise), like every writer."""
        from anysat_core.model.checkpoint import save_checkpoint

        save_checkpoint(self, path, overwrite=overwrite)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        batch: Mapping[str, Any],
        patch_size_m: float | None = None,
        output: Output = "patch",
        output_modality: str | None = None,
        *,
        patch_size: float | None = None,
    ) -> torch.Tensor:
        """Encode a batch of tiles.

        Args:
            batch: ``{modality: tensor}`` plus ``"<modality>_dates"`` ``(B, T)`` day of year for every time
                series and optionally ``"<modality>_mask"`` (broadcastable to the tensor, 1 = valid).
                Images are ``(B, C, H, W)``, series ``(B, T, C, H, W)``, channels in
                ``MODALITIES[m].bands`` order, normalised per channel.  All modalities but MODIS must
                cover the same square ground extent.
            patch_size_m: patch side in metres (required), a positive multiple of 10 (30 with l7/alos) dividing
                the tile extent.
            output: ``"tile"``, ``"patch"``, ``"dense"`` or ``"all"``.
            output_modality: the modality whose sub-patches make the ``dense`` map (default: first key).
            patch_size: deprecated name of ``patch_size_m`` (same meaning; emits a ``DeprecationWarning``).

        Returns:
            ``tile`` (B, D); ``patch`` (B, h, h, D); ``all`` (B, 1 + h*h, D) with the tile token first;
            ``dense`` (B, h*r, h*r, 2D) with channels ``[patch token | sub-patch token]``.

        Raises:
            PatchSizeError: no patch size, or both ``patch_size_m`` and ``patch_size``.
            AnySatError subclasses for every invalid input (see :mod:`anysat_core.errors`).
        """
        if patch_size is not None:
            if patch_size_m is not None:
                raise PatchSizeError(
                    f"got patch_size_m={patch_size_m!r} and patch_size={patch_size!r}; pass only patch_size_m "
                    "(patch_size is its deprecated name)"
                )
            warnings.warn(
                "AnySat.forward: patch_size= is deprecated; pass patch_size_m= (the same patch side in metres)",
                DeprecationWarning,
                stacklevel=_caller_stacklevel(),
            )
            patch_size_m = patch_size
        if patch_size_m is None:
            raise PatchSizeError("no patch size given; pass patch_size_m, the patch side in metres (e.g. 20)")
        return self.forward_plan(self.plan(batch, patch_size_m, output, output_modality))

    def plan(
        self,
        batch: Mapping[str, Any],
        patch_size_m: float,
        output: Output = "all",
        output_modality: str | None = None,
    ) -> BatchPlan:
        """Validate ``batch`` (see :meth:`forward`) into a :class:`~anysat_core.model.inputs.BatchPlan` on this
        model's device and dtype, for :meth:`forward_plan`, :meth:`patch_tokens` and :meth:`forward_tokens`.

        Raises:
            AnySatError subclasses for every invalid input (see :func:`~anysat_core.model.inputs.check_batch`).
        """
        return check_batch(
            batch,
            patch_size_m,
            output,
            output_modality,
            model_modalities=self.config.modalities,
            device=self.cls_token.device,
            dtype=self.cls_token.dtype,
        )

    def forward_plan(self, plan: BatchPlan) -> torch.Tensor:
        """Run the model on a validated :class:`~anysat_core.model.inputs.BatchPlan`.

        The same steps as :meth:`patch_tokens` then :meth:`forward_tokens` (all positions), plus the output
        layout of ``plan.output``.
        """
        B, h, D = plan.batch_size, plan.grid, self.embed_dim
        P = h * h
        tokens, dense_sub = self._encode_patches(plan)
        out = self._combine(plan, tokens, tile_only=plan.output == "tile")
        if plan.output == "tile":
            return out[:, 0]
        if plan.output == "all":
            return out
        patches = out[:, 1:]
        if plan.output == "patch":
            return patches.reshape(B, h, h, D)

        # dense: [patch token | sub-patch token] laid out on an (h*r) x (h*r) grid
        assert dense_sub is not None
        n_sub = dense_sub.shape[1]
        r = math.isqrt(n_sub)
        dense = torch.cat([patches.unsqueeze(2).expand(B, P, n_sub, D), dense_sub.view(B, P, n_sub, D)], dim=-1)
        dense = dense.view(B, h, h, r, r, 2 * D).permute(0, 1, 3, 2, 4, 5)
        return dense.reshape(B, h * r, h * r, 2 * D)

    # ------------------------------------------------------------------ reusable steps (JEPA pretraining)
    def patch_tokens(self, plan: BatchPlan) -> dict[str, torch.Tensor]:
        """Projectors then the shared spatial encoder: one token per patch and modality, before the patch PE.

        Args:
            plan: a validated batch (:func:`~anysat_core.model.inputs.check_batch`).

        Returns:
            ``{modality: tokens}`` in ``plan.modalities`` order: gridded modalities ``(B, P, D)`` (P = h*h patches
            in raster order), MODIS ``(B, 1, D)``.  These are the spatial encoder's class-token outputs, the
            tokens of the cross-modal contrastive loss; feed them (or a modified copy) to :meth:`forward_tokens`.
        """
        return self._encode_patches(plan)[0]

    def forward_tokens(
        self,
        plan: BatchPlan,
        tokens: Mapping[str, torch.Tensor],
        *,
        positions: torch.Tensor | None = None,
        masked: torch.Tensor | None = None,
        masked_token: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Main transformer and combiner over the patch tokens at some positions of the grid.

        The sequence is ``[cls] [modis] [tokens of modality 1 at positions + patch PE] [modality 2] ...``
        (gridded modalities in ``plan.modalities`` order), then the main blocks, then the combiner with queries
        at the class token and at ``positions`` only (relative-position buckets gathered at those positions).

        Args:
            plan: the batch the tokens come from (gives B, the grid side h, the patch size and the modalities).
            tokens: ``{modality: (B, P, D)}`` for gridded modalities and ``(B, 1, D)`` for MODIS, as
                :meth:`patch_tokens` returns them (every modality of ``plan``).
            positions: ``(B, K)`` int64 raster indices into the h x h patch grid, per sample (the JEPA context).
                ``None`` means all P positions in raster order and gives exactly ``forward(..., output="all")``.
            masked: ``(B, M, K)`` bool over the M gridded modalities in ``plan.modalities`` order; True tokens are
                replaced by ``masked_token`` *without* their patch PE (modality masking).
            masked_token: ``(1, 1, D)`` the replacement token (required with ``masked``).

        Returns:
            ``(B, 1 + K, D)``: the tile token then one token per position (K = P when ``positions`` is None).

        Raises:
            InputShapeError: ``tokens``, ``positions``, ``masked`` or ``masked_token`` of the wrong shape, or
                positions outside the grid.
        """
        self._check_token_inputs(plan, tokens, positions, masked, masked_token)
        return self._combine(plan, tokens, positions=positions, masked=masked, masked_token=masked_token)

    def _check_token_inputs(
        self,
        plan: BatchPlan,
        tokens: Mapping[str, torch.Tensor],
        positions: torch.Tensor | None,
        masked: torch.Tensor | None,
        masked_token: torch.Tensor | None,
    ) -> None:
        B, P, D = plan.batch_size, plan.grid * plan.grid, self.embed_dim
        for m in plan.modalities:
            n = 1 if MODALITIES[m].tile_token else P
            t = tokens.get(m)
            if t is None or tuple(t.shape) != (B, n, D):
                got = "missing" if t is None else f"shape {tuple(t.shape)}"
                raise InputShapeError(
                    f"tokens[{m!r}] is {got}; expected ({B}, {n}, {D}) as AnySat.patch_tokens(plan) returns it"
                )
        K = P
        if positions is not None:
            if positions.dim() != 2 or positions.shape[0] != B or positions.dtype != torch.long:
                raise InputShapeError(
                    f"positions has shape {tuple(positions.shape)} and dtype {positions.dtype}; expected (B={B}, K) "
                    "int64 raster indices into the patch grid"
                )
            if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= P):
                raise InputShapeError(
                    f"positions range over [{int(positions.min())}, {int(positions.max())}]; expected indices in "
                    f"[0, {P}) for a {plan.grid} x {plan.grid} patch grid (check patch_size_m)"
                )
            K = positions.shape[1]
        if masked is not None:
            M = sum(not MODALITIES[m].tile_token for m in plan.modalities)
            if tuple(masked.shape) != (B, M, K) or masked.dtype != torch.bool:
                raise InputShapeError(
                    f"masked has shape {tuple(masked.shape)} and dtype {masked.dtype}; expected bool ({B}, {M}, {K}) "
                    "(batch, gridded modalities in plan order, positions)"
                )
            if masked_token is None or tuple(masked_token.shape) != (1, 1, D):
                got = "None" if masked_token is None else f"shape {tuple(masked_token.shape)}"
                raise InputShapeError(f"masked_token is {got}; expected a (1, 1, {D}) tensor with masked=")

    def _encode_patches(self, plan: BatchPlan) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Projectors and spatial encoder: ``({m: (B, P, D) or (B, 1, D)}, dense sub-patch tokens or None)``.

        The dense sub-patch tokens ``(B * P, n_sub, D)`` are those of ``plan.output_modality`` when the output is
        ``dense`` (that modality then runs apart: only it needs every token of the last block).
        """
        B, s, h, D = plan.batch_size, plan.patch_cells_10m, plan.grid, self.embed_dim
        dev, dt = self.cls_token.device, self.cls_token.dtype

        # 1. projectors: (B * P_m, n_sub, D) per modality
        sub: dict[str, torch.Tensor] = {}
        for m in plan.modalities:
            proj = self.projector(m)
            if isinstance(proj, TemporalProjector):
                sub[m] = proj(plan.images[m], plan.dates[m], s, plan.masks.get(m))
            else:
                sub[m] = proj(plan.images[m], s)

        # 2. shared spatial encoder, one call per sequence length for all modalities that share it
        groups: dict[tuple[int, bool], list[str]] = {}
        for m in plan.modalities:
            groups.setdefault((sub[m].shape[1], m == plan.output_modality), []).append(m)
        flat: dict[str, torch.Tensor] = {}
        dense_sub: torch.Tensor | None = None
        cls = self.spatial_encoder.cls_token
        for (n_sub, keep), mods in groups.items():
            G = math.isqrt(n_sub)
            seqs = []
            for m in mods:
                t = sub[m]
                pe = sincos_2d(D, G, MODALITIES[m].token_m, device=dev, dtype=dt)
                seqs.append(torch.cat([cls.expand(t.shape[0], 1, D), t + pe], dim=1))
            out = self.spatial_encoder(torch.cat(seqs, 0) if len(seqs) > 1 else seqs[0], G, keep_subpatches=keep)
            start = 0
            for m, seq in zip(mods, seqs):
                o = out[start : start + seq.shape[0]]
                start += seq.shape[0]
                if keep:  # the dense output modality alone
                    dense_sub, o = o[:, 1:], o[:, 0]
                flat[m] = o
        P = h * h
        tokens = {m: flat[m].view(B, 1 if MODALITIES[m].tile_token else P, D) for m in plan.modalities}
        return tokens, dense_sub

    def _combine(
        self,
        plan: BatchPlan,
        tokens: Mapping[str, torch.Tensor],
        *,
        positions: torch.Tensor | None = None,
        masked: torch.Tensor | None = None,
        masked_token: torch.Tensor | None = None,
        tile_only: bool = False,
    ) -> torch.Tensor:
        """Token sequence, main blocks and combiner: ``(B, 1 + K, D)``, or ``(B, 1, D)`` with ``tile_only``."""
        B, s, h, D = plan.batch_size, plan.patch_cells_10m, plan.grid, self.embed_dim
        dev, dt = self.cls_token.device, self.cls_token.dtype
        grid_mods = [m for m in plan.modalities if not MODALITIES[m].tile_token]
        modis = [m for m in plan.modalities if MODALITIES[m].tile_token]

        # 3. token sequence: cls, [modis], then the tokens of each modality (at positions) with the patch PE
        patch_pe = sincos_2d(D, h, s, device=dev, dtype=dt)  # (P, D), positions in units of 10 m
        seq = [self.cls_token.expand(B, 1, D)]
        seq += [tokens[m] for m in modis]
        if positions is None:
            grid_tokens = [tokens[m] + patch_pe for m in grid_mods]
            pe_at: torch.Tensor | None = None
        else:
            pe_at = patch_pe[positions]  # (B, K, D)
            index = positions.unsqueeze(-1).expand(-1, -1, D)
            grid_tokens = [torch.gather(tokens[m], 1, index) + pe_at for m in grid_mods]
        if masked is not None:
            assert masked_token is not None
            fill = masked_token.to(dt).expand(B, masked.shape[2], D)
            grid_tokens = [torch.where(masked[:, i, :, None], fill, t) for i, t in enumerate(grid_tokens)]
        x = torch.cat(seq + grid_tokens, dim=1)

        # 4. main transformer
        for blk in self.blocks[:-1]:
            x = blk(x)

        # 5. combiner: learned queries at cls, [modis], and every (or every given) patch position
        special = 1 + len(modis)
        combiner = self.blocks[-1]
        drop = slice(1, special) if modis else None
        if tile_only:
            query_pe = patch_pe.new_zeros(1, D)
            buckets = distance_buckets(h, special=special, rows=0, key_repeats=len(grid_mods), device=dev)[:1]
            return combiner(x, query_pe, buckets)[:, :1]
        if positions is None:
            query_pe = torch.cat([patch_pe.new_zeros(special, D), patch_pe], dim=0)
            buckets = distance_buckets(h, special=special, key_repeats=len(grid_mods), device=dev)
            return combiner(x, query_pe, buckets, drop_rows=drop)  # (B, 1+P, D)
        assert pe_at is not None
        query_pe = torch.cat([pe_at.new_zeros(B, special, D), pe_at], dim=1)  # (B, special + K, D)
        buckets = distance_buckets_at(h, positions, special=special, key_repeats=len(grid_mods))
        return combiner(x, query_pe, buckets, drop_rows=drop)  # (B, 1+K, D)

    def extra_repr(self) -> str:
        c = self.config
        return f"size={c.size}, embed_dim={c.embed_dim}, depth={c.depth}, heads={c.num_heads}, attention={c.attention}"
