"""Schedules as pure functions of the optimiser step (no state, so a resumed run continues exactly).

* :func:`ema_momentum`: teacher EMA momentum, linear from ``start`` to ``end`` over ``total_steps`` (§2.3 step 6 of
  the model spec: 0.996 -> 1.0).
* :func:`lr_factor`: multiplier of the base learning rate: linear warm-up, then cosine decay to ``min_ratio`` or
  constant.  Used through :class:`torch.optim.lr_scheduler.LambdaLR` stepped once per optimiser step.

The original pretraining used no warm-up and ReduceLROnPlateau on ``val/loss``; a warm-up + cosine schedule per
step is the I-JEPA habit and does not need a validation set (``warmup_steps=0, kind="constant"`` gives a flat rate).
"""

from __future__ import annotations

import math
from typing import Literal

from anysat_core.errors import ConfigError

__all__ = ["LRSchedule", "ema_momentum", "lr_factor"]

#: Shape of the learning-rate schedule after warm-up.
LRSchedule = Literal["cosine", "constant"]


def ema_momentum(step: int, total_steps: int, start: float = 0.996, end: float = 1.0) -> float:
    """EMA momentum m at optimiser step ``step`` (0-based): ``start + (end - start) * step / total_steps``.

    Clamped to ``end`` past ``total_steps``.  The teacher update is ``theta_bar = m theta_bar + (1 - m) theta``.

    Raises:
        ConfigError: ``total_steps`` < 1 or momenta outside [0, 1].
    """
    if total_steps < 1:
        raise ConfigError(f"total_steps={total_steps}; expected at least 1 optimiser step")
    if not (0.0 <= start <= 1.0 and 0.0 <= end <= 1.0):
        raise ConfigError(f"ema=({start}, {end}); expected momenta in [0, 1] such as (0.996, 1.0)")
    t = min(max(step, 0), total_steps) / total_steps
    return start + (end - start) * t


def lr_factor(
    step: int,
    total_steps: int,
    *,
    warmup_steps: int = 0,
    kind: LRSchedule = "cosine",
    min_ratio: float = 0.0,
) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based).

    Linear warm-up from ``1 / (warmup_steps + 1)`` to 1 over ``warmup_steps`` steps, then either 1 (``constant``) or
    a half cosine from 1 down to ``min_ratio`` at ``total_steps`` (held there afterwards).

    Raises:
        ConfigError: unknown ``kind``, negative ``warmup_steps`` or ``min_ratio`` outside [0, 1].
    """
    if kind not in ("cosine", "constant"):
        raise ConfigError(f"lr schedule {kind!r}; expected 'cosine' or 'constant'")
    if warmup_steps < 0:
        raise ConfigError(f"warmup_steps={warmup_steps}; expected 0 or more")
    if not 0.0 <= min_ratio <= 1.0:
        raise ConfigError(f"min_lr_ratio={min_ratio}; expected a fraction of the base learning rate in [0, 1]")
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if kind == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))
