"""AnySat pretraining: JEPA with an EMA teacher plus a cross-modal contrastive loss (model spec §2).

One training step on a :class:`~training.batch.PretrainBatch` (B tiles, h x h patch grid, P = h*h, width D)::

    teacher (EMA, eval mode, no grad):  full input -> forward_tokens at all P -> patch rows (B, P, D)
                                        -> gather the target blocks (B, n, Kt, D) -> layer-norm (in jepa_loss)
    student:                            keep a random floor(date_keep * T) dates of every series per sample
                                        -> patch_tokens (B, P, D) per modality ---------> contrastive loss
                                        -> forward_tokens at the context (B, K) with modality masking
                                        -> context rows (B, K, D)
    predictor:                          context + target positions -> (B, n, Kt, D) --> smooth-L1 (jepa loss)
    loss = jepa_weight * jepa + contrastive_weight * contrastive
    AdamW step (student + predictor + masked_token), then EMA: teacher = m teacher + (1 - m) student

Where this differs from the original pretraining code (on purpose; spec §2.5):

* the teacher runs in eval mode (the original left it in train mode, so L-TAE dropout was active on targets);
* the EMA update follows the optimiser step (the original updated in ``on_after_backward``, i.e. towards the
  student *before* its step);
* context tokens are gathered at the right offsets whether or not MODIS is present (the original dropped token 0
  without MODIS), and predictor / combiner-query PEs are not shifted by one patch;
* the learning rate follows a per-step warm-up + cosine (or constant) schedule instead of ReduceLROnPlateau.

``flash_compat=True`` builds the encoder (student and teacher) with the ``"flash-compat"`` attention of the released
weights' pretraining (tokens do not mix in the main blocks); the default ``"standard"`` is the demo's attention.
The predictor always uses standard attention.  The original built its predictor blocks in the same flash mode, and
in that mode a token attends only across its own heads, so the predictor's mask tokens never saw the context: the
JEPA loss then trained the predictor's mask token and PE path only and sent no gradient to the encoder (only the
contrastive loss did).  That predictor is not part of the exported weights, so the intended predictor costs no
compatibility.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from typing import Any, cast

import lightning as L
import torch
from torch import nn

from anysat_core.config import AttentionMode
from anysat_core.errors import ConfigError, InputShapeError
from anysat_core.modalities import MODALITIES
from anysat_core.model.anysat import AnySat
from anysat_core.model.inputs import BatchPlan
from training.batch import PretrainBatch
from training.losses import (
    bow_histogram,
    bow_loss,
    contrastive_loss,
    jepa_loss,
    kmeans_update,
    tile_contrastive_loss,
    variance_loss,
)
from training.predictor import JEPAPredictor
from training.schedules import LRSchedule, ema_momentum, lr_factor

__all__ = ["AnySatJEPA", "drop_dates", "modality_mask", "patch_validity"]

_TRAIN, _VAL, _DROPOUT = 0, 1, 2  # stream ids of the random generators


def drop_dates(plan: BatchPlan, keep: float, generator: torch.Generator) -> BatchPlan:
    """A copy of ``plan`` where every time series keeps, per sample, a random ``max(1, floor(keep * T))`` of its T
    dates (padded frames included, as in the original), in their original order.

    Images ``(B, T, C, H, W)``, dates ``(B, T)`` and masks with a T axis are gathered alike; ``generator`` must live
    on the plan's device.
    """
    images, dates, masks = dict(plan.images), dict(plan.dates), dict(plan.masks)
    for m, d in plan.dates.items():
        B, T = d.shape
        n = max(1, math.floor(keep * T))
        if n >= T:
            continue
        idx = torch.rand(B, T, generator=generator, device=d.device).argsort(dim=1)[:, :n].sort(dim=1).values
        rows = torch.arange(B, device=d.device)[:, None]
        images[m] = images[m][rows, idx]
        dates[m] = d.gather(1, idx)
        mask = masks.get(m)
        if mask is not None and mask.dim() == 5 and mask.shape[1] == T:
            masks[m] = mask.expand(B, *mask.shape[1:])[rows, idx]
    return dataclasses.replace(plan, images=images, dates=dates, masks=masks)


def modality_mask(
    batch_size: int, n_modalities: int, n_positions: int, keep: float, generator: torch.Generator
) -> torch.Tensor | None:
    """Modality masking of the student's context tokens (spec §2.3 step 3).

    For every sample and context position one random modality is always kept; of the remaining
    ``(M - 1) * K`` tokens, ``floor(keep * (M - 1) * K)`` are kept at random; the others are masked.

    Returns:
        ``(B, M, K)`` bool, True = replaced by the masked token; None when nothing is masked (M = 1 or keep = 1).
    """
    B, M, K = batch_size, n_modalities, n_positions
    if M <= 1 or keep >= 1.0 or K == 0:
        return None
    dev = generator.device
    n_keep = math.floor(keep * (M - 1) * K)
    scores = torch.rand(B, M, K, generator=generator, device=dev)
    always = torch.randint(M, (B, 1, K), generator=generator, device=dev)
    scores.scatter_(1, always, -1.0)  # ranked first: always kept
    rank = scores.view(B, M * K).argsort(dim=1).argsort(dim=1).view(B, M, K)
    return rank >= K + n_keep


def patch_validity(plan: BatchPlan) -> dict[str, torch.Tensor]:
    """``{modality: (B, P) bool}``: a patch is valid when any of its pixels is valid on any date and channel.

    Only gridded modalities with a mask in ``plan`` appear (the others are all valid).
    """
    out: dict[str, torch.Tensor] = {}
    h = plan.grid
    for m, mask in plan.masks.items():
        if MODALITIES[m].tile_token:
            continue
        x = plan.images[m]
        full = mask.expand(x.shape)
        pix = full.flatten(1, -3).any(dim=1) if full.dim() > 3 else full  # (B, H, W)
        B, H = pix.shape[:2]
        px = max(1, H // h)
        pix = pix[:, : h * px, : h * px].reshape(B, h, px, h, px)
        out[m] = pix.any(dim=(2, 4)).reshape(B, h * h)
    return out


class AnySatJEPA(L.LightningModule):
    """Pretraining of AnySat: student encoder, EMA teacher, JEPA predictor, contrastive loss.

    Args:
        size: AnySat size preset (``"test"``, ``"tiny"``, ``"small"``, ``"base"``).
        modalities: modalities to build projectors for (default: every registry modality).
        predictor_dim: predictor width (default: the encoder width D).
        predictor_depth: predictor blocks (4 in the released configs; 2 is enough for test/tiny runs).
        predictor_heads: predictor heads (default: ``predictor_dim // 64``).
        lr: peak learning rate of AdamW (5e-5 in the GeoPlex config).
        weight_decay: AdamW weight decay, on every parameter (as the original).
        warmup_steps: linear warm-up steps of the learning rate.
        lr_schedule: ``"cosine"`` (decay to ``min_lr_ratio * lr`` at ``total_steps``) or ``"constant"``.
        min_lr_ratio: final learning rate as a fraction of ``lr`` (cosine only).
        total_steps: optimiser steps of the run for the LR and EMA schedules (default: the trainer's
            ``estimated_stepping_batches``).
        ema: EMA momentum at the first and the last step (linear in between).
        jepa_weight: weight of the JEPA (smooth-L1) loss.
        contrastive_weight: weight of the cross-modal contrastive loss (0 = the ``no_con`` ablation).
        tau: temperature of the contrastive loss.
        date_keep: fraction of the dates of every time series the student keeps (per sample, at random).
        modality_keep: fraction of the non-guaranteed context tokens kept in modality masking.
        flash_compat: build the encoder with the ``"flash-compat"`` attention the released weights were pretrained
            with (default: ``"standard"``); the predictor always uses standard attention (see the module docs).
        seed: seed of the weight initialisation and of the date/modality dropping (one generator per step, derived
            from the seed, epoch, batch index, step and rank, so a resumed run draws the same).
        tile_weight: weight of the tile-token loss (0 = off, the default): the student's tile token (context-only,
            date-dropped, modality-masked input) goes through a small MLP head (``tile_head``) and must predict the
            teacher's layer-normed tile token of the full input (smooth-L1, as :func:`jepa_loss`; BYOL-style, the
            EMA teacher keeps it from collapsing).  The JEPA and contrastive losses only reach patch tokens.
        contrastive_head: pass the student's patch tokens through an MLP projection head (``contrastive_head``)
            before the contrastive loss (default off: the loss acts on the tokens themselves).
        variance_weight: weight of a VICReg-style variance term (:func:`~training.losses.variance_loss`) on the
            student's patch tokens of every gridded modality (0 = off): every feature must keep a standard
            deviation of 1 across the batch's tokens, which stops both losses from first making all tokens alike.
        tile_variance_weight: weight of the same variance term on the student's tile tokens across the batch (0 =
            off), against a collapse of the tile objective to a constant tile token.
        tile_contrastive_weight: weight of a tile-level cross-modal contrastive loss (0 = off, the default): the
            student's tile token is computed from each gridded modality alone (its date-dropped patch tokens, every
            position, through :meth:`AnySat.forward_tokens`), passed through an MLP head
            (``tile_contrastive_head``) and :func:`~training.losses.tile_contrastive_loss` (symmetric InfoNCE across
            the tiles of the batch) asks the S2-only embedding of a tile to find the same tile's S1-only embedding.
            What two modalities of a tile share is its land cover, which is what the tile probe reads.
        tile_tau: temperature of the tile-level contrastive loss.
        tile_bow_weight: weight of a bag-of-words tile objective (0 = off; in the spirit of OBoW, Gidaris et al.
            2021, and of MaskFeat's hand-made targets): every pixel of the full input gets its temporal statistics
            (:func:`pixel_statistics`: per band, mean and standard deviation over its valid dates), is assigned to
            the nearest of ``bow_words`` words of an online k-means vocabulary (buffer ``bow_vocabulary``, started
            from random pixels of the first training batch, then moved towards the mean of its pixels after every
            training step), and the tile's histogram of words (what it is made of) is the target; the student's
            tile token of the context view, through an MLP head (``tile_bow_head``), must predict it (cross-entropy,
            :func:`~training.losses.bow_loss`).  A target of the tile's composition, which the tile probe reads
            and which neither JEPA nor the contrastive loss asks for.
        bow_words: vocabulary size of the bag-of-words objective.
        bow_view: the student's tile token that predicts the histogram: ``"context"`` (the JEPA context view: the
            context positions with modality masking) or ``"full"`` (every position of both modalities, dates
            dropped: the view closest to what a probe reads; one more pass of the main blocks and the combiner).
    """

    def __init__(
        self,
        size: str = "tiny",
        modalities: list[str] | None = None,
        predictor_dim: int | None = None,
        predictor_depth: int = 4,
        predictor_heads: int | None = None,
        lr: float = 5e-5,
        weight_decay: float = 0.05,
        warmup_steps: int = 0,
        lr_schedule: LRSchedule = "cosine",
        min_lr_ratio: float = 0.0,
        total_steps: int | None = None,
        ema: tuple[float, float] = (0.996, 1.0),
        jepa_weight: float = 1.0,
        contrastive_weight: float = 1.0,
        tau: float = 0.1,
        date_keep: float = 0.5,
        modality_keep: float = 0.5,
        flash_compat: bool = False,
        seed: int = 0,
        tile_weight: float = 0.0,
        contrastive_head: bool = False,
        variance_weight: float = 0.0,
        tile_variance_weight: float = 0.0,
        tile_contrastive_weight: float = 0.0,
        tile_tau: float = 0.1,
        tile_bow_weight: float = 0.0,
        bow_words: int = 32,
        bow_view: str = "context",
    ) -> None:
        super().__init__()
        _check_arguments(locals())
        self.save_hyperparameters()
        attention: AttentionMode = "flash-compat" if flash_compat else "standard"
        mods = tuple(modalities) if modalities else tuple(MODALITIES)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.student = AnySat(size, modalities=mods, attention=attention)
            D = self.student.embed_dim
            # the predictor always mixes tokens: in flash-compat mode its mask tokens would never see the context
            self.predictor = JEPAPredictor(
                D, predictor_dim, predictor_depth, predictor_heads, self.student.config.mlp_ratio, "standard"
            )
        self.teacher = copy.deepcopy(self.student).requires_grad_(False).eval()
        #: replaces masked context tokens (and their PE) in modality masking; lives here, not in AnySat, so that
        #: the encoder's keys stay the released checkpoint's.
        self.masked_token = nn.Parameter(torch.zeros(1, 1, D))
        # optional heads (built only when used, so the default module keeps its keys)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            self.tile_head: nn.Module | None = _mlp(D) if tile_weight > 0 else None
            self.contrastive_head: nn.Module | None = _mlp(D) if contrastive_head else None
            self.tile_contrastive_head: nn.Module | None = _mlp(D) if tile_contrastive_weight > 0 else None
            self.tile_bow_head: nn.Module | None = _mlp(D, bow_words) if tile_bow_weight > 0 else None
        if tile_bow_weight > 0:  # online k-means words over pixel statistics (buffers: saved, not trained)
            #: the modalities whose pixel statistics make the words, in a fixed order (zeros for an absent one)
            self._bow_modalities = [m for m in mods if not MODALITIES[m].tile_token]
            n_features = sum(2 * MODALITIES[m].num_bands for m in self._bow_modalities)
            self.register_buffer("bow_vocabulary", torch.zeros(bow_words, n_features))
            self.register_buffer("bow_started", torch.zeros((), dtype=torch.bool))

    # ------------------------------------------------------------------ modes and accessors
    def train(self, mode: bool = True) -> AnySatJEPA:
        """Set train/eval mode; the teacher always stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def teacher_encoder(self) -> AnySat:
        """The EMA (teacher) encoder: the model to export and to probe (shared, not a copy)."""
        return self.teacher

    def student_encoder(self) -> AnySat:
        """The student encoder (trained by gradient)."""
        return self.student

    def schedule_steps(self) -> int:
        """Optimiser steps of the run, for the LR and EMA schedules.

        Raises:
            ConfigError: neither ``total_steps`` nor a finite trainer length is known.
        """
        if self.hparams["total_steps"] is not None:
            return int(self.hparams["total_steps"])
        if self._trainer is not None:
            est = self.trainer.estimated_stepping_batches
            if math.isfinite(est) and est >= 1:
                return int(est)
        raise ConfigError(
            "the run length is unknown (no trainer max_steps/max_epochs); set model.total_steps so the EMA and "
            "learning-rate schedules know where they end"
        )

    def momentum_at(self, step: int) -> float:
        """EMA momentum applied after optimiser step ``step`` (0-based)."""
        start, end = self.hparams["ema"]
        return ema_momentum(step, self.schedule_steps(), float(start), float(end))

    # ------------------------------------------------------------------ the step
    def _step_seed(self, stream: int, batch_idx: int) -> int:
        """A seed from (seed, stream, epoch, batch, step, rank)."""
        key = (int(self.hparams["seed"]), stream, self.current_epoch, batch_idx, self.global_step, self.global_rank)
        value = 0
        for k in key:
            value = (value * 1_000_003 + k) % (2**61 - 1)
        return value

    def _generator(self, stream: int, batch_idx: int) -> torch.Generator:
        """A fresh generator on this module's device, seeded from (seed, stream, epoch, batch, step, rank)."""
        return torch.Generator(device=self.device).manual_seed(self._step_seed(stream, batch_idx))

    def compute_losses(self, batch: PretrainBatch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The losses of one batch (no logging, no update).

        Args:
            batch: see :class:`~training.batch.PretrainBatch`.
            generator: random generator on this module's device (date dropping, modality masking).

        Returns:
            ``{"loss", "jepa", "contrastive"}`` scalars, plus ``"tile"`` when ``tile_weight > 0`` and
            ``"variance"`` when ``variance_weight > 0``, ``"tile_variance"`` when ``tile_variance_weight > 0`` and
            ``"tile_contrastive"`` when ``tile_contrastive_weight > 0`` and ``"tile_bow"`` (the KL divergence to the
            target histogram, for logging; the loss adds the cross-entropy) when ``tile_bow_weight > 0``.

        Raises:
            InputShapeError: context/targets of the wrong shape or outside the patch grid.
            AnySatError subclasses for invalid inputs (see :meth:`AnySat.forward`).
        """
        hp = self.hparams
        plan = self.student.plan(batch["inputs"], batch["patch_size_m"])
        context, targets = _check_indices(batch, plan, self.device)
        B, K = context.shape
        _, n, Kt = targets.shape
        D = self.student.embed_dim
        grid_mods = [m for m in plan.modalities if not MODALITIES[m].tile_token]

        with torch.no_grad():  # teacher: full input, every position
            t_tokens = self.teacher.patch_tokens(plan)
            t_all = self.teacher.forward_tokens(plan, t_tokens)
            t_tile, t_out = t_all[:, 0], t_all[:, 1:]  # (B, D), (B, P, D)
            target = torch.gather(t_out, 1, targets.reshape(B, n * Kt, 1).expand(-1, -1, D)).view(B, n, Kt, D)

        s_plan = drop_dates(plan, float(hp["date_keep"]), generator)
        s_tokens = self.student.patch_tokens(s_plan)
        masked = modality_mask(B, len(grid_mods), K, float(hp["modality_keep"]), generator)
        ctx = self.student.forward_tokens(
            s_plan,
            s_tokens,
            positions=context,
            masked=masked,
            masked_token=self.masked_token if masked is not None else None,
        )
        pred = self.predictor(ctx[:, 1:], context, targets, grid=plan.grid, patch_cells_10m=plan.patch_cells_10m)
        jepa = jepa_loss(pred, target)
        if float(hp["contrastive_weight"]) > 0 and len(grid_mods) > 1:
            valid = patch_validity(s_plan)
            head = self.contrastive_head
            con_tokens = {m: head(s_tokens[m]) if head is not None else s_tokens[m] for m in grid_mods}
            con = contrastive_loss(con_tokens, valid or None, float(hp["tau"]))
        else:
            con = jepa.new_zeros(())
        loss = float(hp["jepa_weight"]) * jepa + float(hp["contrastive_weight"]) * con
        out: dict[str, torch.Tensor] = {}
        if self.tile_head is not None:
            tile = jepa_loss(self.tile_head(ctx[:, 0]), t_tile)
            loss = loss + float(hp["tile_weight"]) * tile
            out["tile"] = tile.detach()
        if float(hp["variance_weight"]) > 0 and grid_mods:
            var = torch.stack([variance_loss(s_tokens[m]) for m in grid_mods]).mean()
            loss = loss + float(hp["variance_weight"]) * var
            out["variance"] = var.detach()
        if float(hp["tile_variance_weight"]) > 0:
            tile_var = variance_loss(ctx[:, 0])
            loss = loss + float(hp["tile_variance_weight"]) * tile_var
            out["tile_variance"] = tile_var.detach()
        tile_con_used = self.tile_contrastive_head is not None and len(grid_mods) > 1
        if tile_con_used:
            assert self.tile_contrastive_head is not None
            emb = {
                m: self.tile_contrastive_head(
                    self.student.forward_tokens(dataclasses.replace(s_plan, modalities=[m]), {m: s_tokens[m]})[:, 0]
                )
                for m in grid_mods
            }
            tile_con = tile_contrastive_loss(emb, float(hp["tile_tau"]))
            loss = loss + float(hp["tile_contrastive_weight"]) * tile_con
            out["tile_contrastive"] = tile_con.detach()
        if self.tile_bow_head is not None:
            vocabulary = cast(torch.Tensor, self.bow_vocabulary)
            started = cast(torch.Tensor, self.bow_started)
            feats = pixel_statistics(plan, self._bow_modalities)
            if self.training and not bool(started):
                with torch.no_grad():
                    flat = feats.reshape(-1, feats.shape[-1])
                    pick = torch.randint(
                        int(flat.shape[0]), (int(vocabulary.shape[0]),), generator=generator, device=generator.device
                    )
                    vocabulary.copy_(flat[pick.to(flat.device)])
                    started.fill_(True)
            hist, words = bow_histogram(feats, vocabulary)
            if hp["bow_view"] == "full":
                src = self.student.forward_tokens(s_plan, s_tokens)[:, 0]
            else:
                src = ctx[:, 0]
            ce, kl = bow_loss(self.tile_bow_head(src), hist)
            loss = loss + float(hp["tile_bow_weight"]) * ce
            out["tile_bow"] = kl.detach()
            if self.training:
                kmeans_update(vocabulary, feats, words)
        # keep every trainable parameter in the graph (DDP expects each to be used)
        unused: list[torch.Tensor] = [self.masked_token] if masked is None else []
        if self.contrastive_head is not None and not (float(hp["contrastive_weight"]) > 0 and len(grid_mods) > 1):
            unused += list(self.contrastive_head.parameters())
        if self.tile_contrastive_head is not None and not tile_con_used:
            unused += list(self.tile_contrastive_head.parameters())
        for p in unused:
            loss = loss + 0.0 * p.sum()
        return {"loss": loss, "jepa": jepa.detach(), "contrastive": con.detach(), **out}

    def training_step(self, batch: PretrainBatch, batch_idx: int) -> torch.Tensor:
        """Losses of one batch, logged as ``train/loss``, ``train/jepa``, ``train/contrastive``, ``train/lr`` and
        ``train/momentum``."""
        # The student's dropout (L-TAE) draws from the global RNG: it is seeded per step from the same key (and the
        # global state restored after), so that a run resumed from a checkpoint draws what the uninterrupted run drew.
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            seed = self._step_seed(_DROPOUT, batch_idx)
            torch.random.default_generator.manual_seed(seed)
            if devices:
                torch.cuda.manual_seed(seed)  # this rank's device
            losses = self.compute_losses(batch, self._generator(_TRAIN, batch_idx))
        B = batch["context"].shape[0]
        for name, value in losses.items():
            self.log(f"train/{name}", value, batch_size=B, prog_bar=name == "loss")
        optimizer = self.optimizers()
        if not isinstance(optimizer, list):
            self.log("train/lr", float(optimizer.param_groups[0]["lr"]), batch_size=B)
        self.log("train/momentum", self.momentum_at(self.global_step), batch_size=B)
        return losses["loss"]

    def validation_step(self, batch: PretrainBatch, batch_idx: int) -> torch.Tensor:
        """The same losses without updates (seeded by the batch index only), logged as ``val/*``."""
        key = (int(self.hparams["seed"]) * 1_000_003 + _VAL) * 1_000_003 + batch_idx
        losses = self.compute_losses(batch, torch.Generator(device=self.device).manual_seed(key % (2**61 - 1)))
        B = batch["context"].shape[0]
        for name, value in losses.items():
            self.log(f"val/{name}", value, batch_size=B, prog_bar=name == "loss", sync_dist=True)
        return losses["loss"]

    # ------------------------------------------------------------------ optimisation
    def trainable_parameters(self) -> list[nn.Parameter]:
        """Student (those with ``requires_grad``), predictor and ``masked_token``; never the teacher."""
        params = [p for p in self.student.parameters() if p.requires_grad]
        heads = [
            h
            for h in (self.tile_head, self.contrastive_head, self.tile_contrastive_head, self.tile_bow_head)
            if h is not None
        ]
        return [*params, *self.predictor.parameters(), self.masked_token, *(p for h in heads for p in h.parameters())]

    def configure_optimizers(self) -> Any:
        """AdamW over :meth:`trainable_parameters` with the warm-up + cosine/constant schedule, stepped per step."""
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.trainable_parameters(), lr=float(hp["lr"]), weight_decay=hp["weight_decay"])
        total = self.schedule_steps()

        def factor(step: int) -> float:
            return lr_factor(
                step,
                total,
                warmup_steps=int(hp["warmup_steps"]),
                kind=hp["lr_schedule"],
                min_ratio=float(hp["min_lr_ratio"]),
            )

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        """The optimiser step, then the EMA update of the teacher with the momentum of this step."""
        step = self.global_step
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        self.ema_update(self.momentum_at(step))

    @torch.no_grad()
    def ema_update(self, momentum: float) -> None:
        """``teacher = momentum * teacher + (1 - momentum) * student`` for every parameter; buffers copied."""
        t_params: list[torch.Tensor] = list(self.teacher.parameters())
        s_params = [p.detach() for p in self.student.parameters()]
        torch._foreach_mul_(t_params, momentum)
        torch._foreach_add_(t_params, s_params, alpha=1.0 - momentum)
        for tb, sb in zip(self.teacher.buffers(), self.student.buffers()):
            tb.copy_(sb)


def pixel_statistics(plan: BatchPlan, modalities: list[str]) -> torch.Tensor:
    """Per-pixel temporal statistics of a batch: ``(B, G * G, F)`` on the grid of the finest time series of
    ``plan`` (G px a side), ``F = sum 2 C`` over ``modalities`` (in that order).

    For every modality and band: the mean and the standard deviation over the pixel's valid dates (the plan's
    mask; 0 where no date is valid).  A coarser grid is repeated onto the finest one (nearest), a finer one (VHR)
    averaged onto it; single images count as one date; a modality absent from ``plan`` gives zeros.
    """
    B = plan.batch_size
    series = [plan.images[m] for m in modalities if m in plan.images and plan.images[m].dim() == 5]
    side = max((x.shape[-1] for x in series), default=1)
    ref = plan.images[plan.modalities[0]]
    per: list[torch.Tensor] = []
    for m in modalities:
        if m not in plan.images:
            per.append(ref.new_zeros(B, 2 * MODALITIES[m].num_bands, side, side, dtype=torch.float32))
            continue
        x = plan.images[m].float()
        mask = plan.masks.get(m)
        valid = mask.expand(x.shape).float() if mask is not None else torch.ones_like(x)
        if x.dim() == 4:
            x, valid = x[:, None], valid[:, None]
        n = valid.sum(1).clamp_min(1.0)
        mean = (x * valid).sum(1) / n
        std = (((x - mean[:, None]) ** 2 * valid).sum(1) / n).sqrt()
        f = torch.cat([mean, std], dim=1)  # (B, 2C, H, W)
        if f.shape[-1] > side:
            f = nn.functional.adaptive_avg_pool2d(f, side)
        elif f.shape[-1] < side:
            f = nn.functional.interpolate(f, size=(side, side), mode="nearest")
        per.append(f)
    return torch.cat(per, dim=1).flatten(2).transpose(1, 2)


def _mlp(dim: int, out: int | None = None) -> nn.Module:
    """A small MLP head ``D -> 2D -> out`` (default ``out = D``; LayerNorm, GELU), for the optional objectives."""
    return nn.Sequential(nn.Linear(dim, 2 * dim), nn.LayerNorm(2 * dim), nn.GELU(), nn.Linear(2 * dim, out or dim))


def _check_arguments(args: Mapping[str, Any]) -> None:
    """ConfigError for constructor arguments out of range (what came in, what is expected)."""
    if not 0.0 < args["date_keep"] <= 1.0:
        raise ConfigError(f"date_keep={args['date_keep']}; expected a fraction in (0, 1] (0.5 in the paper)")
    if not 0.0 <= args["modality_keep"] <= 1.0:
        raise ConfigError(f"modality_keep={args['modality_keep']}; expected a fraction in [0, 1] (0.5 in the paper)")
    if args["tau"] <= 0:
        raise ConfigError(f"tau={args['tau']}; expected a positive temperature (0.1 in the paper)")
    if args["lr"] <= 0 or args["weight_decay"] < 0:
        raise ConfigError(f"lr={args['lr']}, weight_decay={args['weight_decay']}; expected lr > 0, weight_decay >= 0")
    if (
        args["jepa_weight"] < 0
        or args["contrastive_weight"] < 0
        or args["jepa_weight"] + args["contrastive_weight"] == 0
    ):
        raise ConfigError(
            f"jepa_weight={args['jepa_weight']}, contrastive_weight={args['contrastive_weight']}; expected "
            "non-negative weights, not both 0 (1.0 and 1.0 in the paper)"
        )
    extra = ("tile_weight", "variance_weight", "tile_variance_weight", "tile_contrastive_weight", "tile_bow_weight")
    if min(args[k] for k in extra) < 0:
        raise ConfigError(", ".join(f"{k}={args[k]}" for k in extra) + "; expected non-negative weights (0 = off)")
    if args["tile_tau"] <= 0:
        raise ConfigError(f"tile_tau={args['tile_tau']}; expected a positive temperature (e.g. 0.1)")
    if args["bow_view"] not in ("context", "full"):
        raise ConfigError(f"bow_view={args['bow_view']!r}; expected 'context' or 'full'")
    if args["bow_words"] < 2:
        raise ConfigError(f"bow_words={args['bow_words']}; expected a vocabulary of at least 2 words (e.g. 64)")
    ema = args["ema"]
    if len(ema) != 2 or not all(0.0 <= float(v) <= 1.0 for v in ema):
        raise ConfigError(f"ema={ema!r}; expected (start, end) momenta in [0, 1], e.g. (0.996, 1.0)")
    if args["total_steps"] is not None and args["total_steps"] < 1:
        raise ConfigError(f"total_steps={args['total_steps']}; expected at least 1 or None (the trainer's length)")
    mods = args["modalities"]
    if mods is not None:
        if isinstance(mods, str):
            raise ConfigError(f"modalities={mods!r} is a string; give a list of names, e.g. ['s2', 's1-asc']")
        for m in mods:
            MODALITIES[m]  # UnknownModalityError listing the valid names


def _check_indices(batch: PretrainBatch, plan: BatchPlan, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's context ``(B, K)`` and targets ``(B, n, Kt)`` as int64 on ``device``, checked against the grid."""
    B, P = plan.batch_size, plan.grid * plan.grid
    context, targets = batch["context"], batch["targets"]
    if not isinstance(context, torch.Tensor) or context.dim() != 2 or context.shape[0] != B:
        got = tuple(context.shape) if isinstance(context, torch.Tensor) else type(context).__name__
        raise InputShapeError(f"batch['context'] is {got}; expected a (B={B}, K) LongTensor of raster indices")
    if not isinstance(targets, torch.Tensor) or targets.dim() != 3 or targets.shape[0] != B:
        got = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
        raise InputShapeError(f"batch['targets'] is {got}; expected a (B={B}, n_targets, Kt) LongTensor")
    for name, t in (("context", context), ("targets", targets)):
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise InputShapeError(f"batch[{name!r}] has dtype {t.dtype}; expected int64 raster indices")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= P):
            raise InputShapeError(
                f"batch[{name!r}] ranges over [{int(t.min())}, {int(t.max())}]; expected indices in [0, {P}) for the "
                f"{plan.grid} x {plan.grid} grid of patch_size_m={batch['patch_size_m']} (masks sampled for another "
                "patch size?)"
            )
    return context.to(device=device, dtype=torch.long), targets.to(device=device, dtype=torch.long)
