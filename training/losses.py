"""Pretraining losses of AnySat (model spec §2.3 step 5).

* :func:`jepa_loss`: smooth-L1 (beta 1, mean) between predictions and layer-normed teacher targets (the original
  config calls it "mse"; it is smooth-L1).
* :func:`contrastive_loss`: cross-modal MIL-NCE over per-modality patch tokens: a patch's token in one modality
  must find the same patch of the same tile in the other modalities among all tokens of the batch.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from anysat_core.errors import InputShapeError

__all__ = ["contrastive_loss", "jepa_loss", "normalize_targets", "variance_loss"]


def normalize_targets(target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm over the last axis without affine parameters (``(..., D) -> (..., D)``)."""
    return F.layer_norm(target, target.shape[-1:], eps=eps)


def jepa_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Smooth-L1 (beta 1, mean over every element) between ``pred`` and ``normalize_targets(target)``.

    Args:
        pred: predictor output ``(..., D)``.
        target: raw teacher tokens of the same shape (normalised here, without gradient).

    Returns:
        Scalar float32 loss (computed in float32 under mixed precision).

    Raises:
        InputShapeError: ``pred`` and ``target`` differ in shape.
    """
    if pred.shape != target.shape:
        raise InputShapeError(
            f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ; expected the same "
            "(batch, target blocks, tokens, D)"
        )
    return F.smooth_l1_loss(pred.float(), normalize_targets(target.detach().float()), beta=1.0)


def contrastive_loss(
    tokens: Mapping[str, torch.Tensor],
    valid: Mapping[str, torch.Tensor] | None = None,
    tau: float = 0.1,
) -> torch.Tensor:
    """Cross-modal MIL-NCE over the patch tokens of M modalities.

    All N = M * B * P tokens are compared by cosine similarity / ``tau``.  For the token of modality k, sample b,
    patch p (the anchor), pairs with tokens of the same sample *and* the same modality (itself included) are
    excluded; the positives are the tokens of the same (b, p) in the other modalities; the loss of the anchor is
    ``-log(sum_pos exp(sim) / sum_kept exp(sim))`` (both sums as log-sum-exp), averaged over anchors.  Invalid
    patches are removed as anchors and as candidates; an anchor without any valid positive is skipped.  Pass only
    gridded modalities (MODIS has one token per tile and is not part of this loss).

    Args:
        tokens: ``{modality: (B, P, D)}`` (the student's spatial-encoder outputs, before PE and masking).
        valid: optional ``{modality: (B, P)}`` bool, True = the patch holds valid data; missing modalities are
            all valid.
        tau: temperature.

    Returns:
        Scalar loss; 0 (still attached to the graph) when no anchor has a positive (e.g. one modality).

    Memory: an N x N similarity matrix (N = M * B * P); 13 824 tokens (M 3, B 128, P 36) take ~0.8 GB in float32.

    Raises:
        InputShapeError: the modalities' token tensors differ in batch size, patch count or width.
    """
    names = list(tokens)
    if not names:
        raise InputShapeError("contrastive_loss got no tokens; expected {modality: (B, P, D)} for 2+ modalities")
    shapes = {m: tuple(tokens[m].shape) for m in names}
    if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 3:
        raise InputShapeError(
            f"contrastive_loss token shapes {shapes}; expected the same (B, P, D) for every modality "
            "(leave MODIS, one token per tile, out)"
        )
    first = tokens[names[0]]
    M, (B, P, _) = len(names), first.shape
    z = F.normalize(torch.stack([tokens[m] for m in names]).flatten(0, 2).float(), dim=-1)  # (N, D), (m, b, p)
    dev = z.device
    mod = torch.arange(M, device=dev).repeat_interleave(B * P)
    sample = torch.arange(B, device=dev).repeat_interleave(P).repeat(M)
    patch = torch.arange(P, device=dev).repeat(M * B)
    if valid is None:
        ok = torch.ones(M * B * P, dtype=torch.bool, device=dev)
    else:
        ok = torch.stack(
            [
                valid[m].to(device=dev, dtype=torch.bool).expand(B, P)
                if m in valid
                else torch.ones(B, P, dtype=torch.bool, device=dev)
                for m in names
            ]
        ).flatten()
    same_sample = sample[:, None] == sample[None, :]
    kept = ~(same_sample & (mod[:, None] == mod[None, :])) & ok[None, :]
    positive = same_sample & (patch[:, None] == patch[None, :]) & (mod[:, None] != mod[None, :]) & ok[None, :]
    anchors = ok & positive.any(dim=1)
    if not bool(anchors.any()):
        return z.sum() * 0.0
    sim = (z[anchors] @ z.t()) / tau  # (A, N)
    neg_inf = torch.finfo(sim.dtype).min
    log_pos = sim.masked_fill(~positive[anchors], neg_inf).logsumexp(dim=1)
    log_all = sim.masked_fill(~kept[anchors], neg_inf).logsumexp(dim=1)
    return (log_all - log_pos).mean()


def variance_loss(tokens: torch.Tensor, target_std: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """VICReg-style variance term: ``mean_d relu(target_std - std_d)`` over the rows of ``tokens`` ``(N, D)``.

    0 when every feature's standard deviation across the N rows reaches ``target_std``; it grows as the rows become
    alike (collapse), so a loss that can fall by making all tokens equal is kept from doing so.
    """
    z = tokens.reshape(-1, tokens.shape[-1]).float()
    if z.shape[0] < 2:
        return z.sum() * 0.0
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(target_std - std).mean()
