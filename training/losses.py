"""Pretraining losses of AnySat (model spec §2.3 step 5).

* :func:`jepa_loss`: smooth-L1 (beta 1, mean) between predictions and layer-normed teacher targets (the original
  config calls it "mse"; it is smooth-L1).
* :func:`contrastive_loss`: cross-modal MIL-NCE over per-modality patch tokens: a patch's token in one modality
  must find the same patch of the same tile in the other modalities among all tokens of the batch.
* :func:`tile_contrastive_loss`: CLIP-style symmetric InfoNCE over per-modality *tile* embeddings: the tile
  embedding computed from one modality must find the same tile's embedding from another modality among the tiles
  of the batch (optional, see ``AnySatJEPA(tile_contrastive_weight=...)``).
* :func:`bow_histogram` / :func:`kmeans_update` / :func:`bow_loss`: bag-of-words tile objective: a tile's
  histogram of per-pixel features over an online k-means vocabulary, predicted from the student's tile token
  (optional, see ``AnySatJEPA(tile_bow_weight=...)``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from anysat_core.errors import InputShapeError

__all__ = [
    "bow_histogram",
    "bow_loss",
    "contrastive_loss",
    "jepa_loss",
    "kmeans_update",
    "normalize_targets",
    "tile_contrastive_loss",
    "variance_loss",
]


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


def tile_contrastive_loss(embeddings: Mapping[str, torch.Tensor], tau: float = 0.1) -> torch.Tensor:
    """Symmetric cross-modal InfoNCE over tile embeddings (CLIP / CROMA style).

    For every ordered pair of modalities (i, j), i != j, the embedding of tile b from modality i is the anchor, the
    embedding of tile b from modality j the positive and those of the other tiles from modality j the negatives:
    ``cross_entropy(cos(z_i, z_j) / tau, arange(B))``; the loss is the mean over the ``M (M - 1)`` ordered pairs
    (for two modalities: CLIP's symmetric loss).  Chance level is ``log B``.

    Args:
        embeddings: ``{modality: (B, D)}``, e.g. the tile token computed from that modality only, through a head.
        tau: temperature.

    Returns:
        Scalar float32 loss; 0 (attached to the graph) with fewer than two modalities or fewer than two tiles.

    Raises:
        InputShapeError: the embeddings differ in shape or are not ``(B, D)``.
    """
    names = list(embeddings)
    if not names:
        raise InputShapeError("tile_contrastive_loss got no embeddings; expected {modality: (B, D)}")
    shapes = {m: tuple(embeddings[m].shape) for m in names}
    if len(set(shapes.values())) != 1 or len(shapes[names[0]]) != 2:
        raise InputShapeError(f"tile_contrastive_loss shapes {shapes}; expected the same (B, D) for every modality")
    z = {m: F.normalize(embeddings[m].float(), dim=-1) for m in names}
    B = shapes[names[0]][0]
    if len(names) < 2 or B < 2:
        return torch.stack([v.sum() for v in z.values()]).sum() * 0.0
    labels = torch.arange(B, device=z[names[0]].device)
    terms = [F.cross_entropy(z[a] @ z[b].t() / tau, labels) for a in names for b in names if a != b]
    return torch.stack(terms).mean()


@torch.no_grad()
def bow_histogram(features: torch.Tensor, vocabulary: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bag-of-words histogram of every tile from per-pixel features (no gradient).

    Args:
        features: ``(B, N, F)`` per-pixel features of B tiles.
        vocabulary: ``(K, F)`` word centres.

    Returns:
        ``(histograms (B, K), words (B, N))``: each pixel's nearest word (Euclidean) and, per tile, the fraction of
        its pixels assigned to each word (rows sum to 1).
    """
    f, v = features.float(), vocabulary.float()
    d2 = (f * f).sum(-1, keepdim=True) - 2 * f @ v.t() + (v * v).sum(-1)
    words = d2.argmin(dim=-1)
    hist = F.one_hot(words, v.shape[0]).float().mean(dim=1)
    return hist, words


@torch.no_grad()
def kmeans_update(
    vocabulary: torch.Tensor, features: torch.Tensor, words: torch.Tensor, momentum: float = 0.95
) -> torch.Tensor:
    """One online k-means step (in place): every word that received pixels moves towards their mean,
    ``c = momentum * c + (1 - momentum) * mean``; words without pixels stay.  Returns ``vocabulary``."""
    f = features.reshape(-1, features.shape[-1]).float()
    w = words.reshape(-1)
    K = vocabulary.shape[0]
    sums = torch.zeros(K, f.shape[1], device=f.device).index_add_(0, w, f)
    counts = torch.bincount(w, minlength=K).float()
    hit = counts > 0
    means = sums[hit] / counts[hit, None]
    vocabulary[hit] = (momentum * vocabulary[hit].float() + (1 - momentum) * means).to(vocabulary.dtype)
    return vocabulary


def bow_loss(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the predicted word distribution ``softmax(logits)`` ``(B, K)`` against the target
    histograms ``(B, K)`` (mean over tiles), and the KL divergence (the same minus the targets' entropy; 0 for a
    perfect prediction).

    Raises:
        InputShapeError: logits and target differ in shape.
    """
    if logits.shape != target.shape:
        raise InputShapeError(
            f"bow logits {tuple(logits.shape)} and target {tuple(target.shape)}; expected the same (B, K)"
        )
    t = target.detach().float()
    ce = -(t * logits.float().log_softmax(dim=-1)).sum(dim=-1).mean()
    entropy = -(t * t.clamp_min(1e-12).log()).sum(dim=-1).mean()
    return ce, ce - entropy


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
