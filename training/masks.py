"""JEPA multi-block masks (anysat-model.md §2.3 step 1): target blocks to predict and a context block that avoids them.

For a ``g x g`` patch grid (``g = tile extent / patch_size_m``), one call draws:

* **one block size shared by the batch**: the target size from one uniform draw ``u`` reused for the area and the
  aspect ratio (``area = lo + u (hi - lo)``, ``ar = lo + u (hi - lo)``), ``h = round(sqrt(area g^2 ar))``,
  ``w = round(sqrt(area g^2 / ar))``, each clipped to ``[1, g - 1]``; the context size from its own area with aspect 1;
* **per image**: ``n_targets`` target blocks at uniform positions (they may overlap each other), then a context block
  at a uniform position, minus every target patch.  A placement is valid when at least ``max(min_keep, 1)`` context
  patches remain.

Indices are raster indices ``row * g + col`` into the patch grid, sorted.  Every target block holds ``h * w``
indices; context lists are truncated to the shortest one of the batch (first indices in raster order), as the
original collator does.

Randomness comes only from private generators (never the global RNG): the block sizes from one seeded by
``(seed, call)``, the positions from one seeded by ``(seed, call, rank)``, where ``call`` is the collator's own call
counter (or an explicit call id, see :meth:`MultiBlockMasks.__call__`).  The same seed and call give the same masks
on any machine and in any DataLoader worker; :meth:`MultiBlockMasks.state_dict` carries the counter across a resume.

Differences from the original (I-JEPA / AnySat) collator, on purpose:

* the context **never** contains a target patch.  The original relaxes a failed placement by dropping the
  "avoid target k" constraints one by one, which lets the context see target patches (a leak).  Here a failed
  placement is relaxed without a leak: after ``max_tries`` context-block positions the context becomes every patch
  that is not a target (the block-shape constraint is dropped); when the targets cover the whole grid, the image's
  target positions are drawn again; after ``max_tries`` such draws a :class:`~anysat_core.errors.ConfigError` says
  how to make room (it does not happen for grids of 2 or more with the defaults, but can with large
  ``n_targets``/``target_area`` and ``min_keep``);
* block positions range over every placement (``0 .. g - h``); the original's ``randint(0, g - h)`` never put a
  block on the last row or column;
* a grid of 1 patch (``g < 2``) cannot hold a target and a context and is a ConfigError naming the patch size fix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from anysat_core.errors import ConfigError

__all__ = ["MaskSpec", "MultiBlockMasks", "seeded_rng"]


def _entropy(values: Sequence[int]) -> list[int]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ConfigError(f"seed/call ids must be non-negative integers; got {v!r} in {tuple(values)!r}")
        out.append(int(v))
    return out


def seeded_rng(*entropy: int) -> np.random.Generator:
    """A private NumPy generator seeded by a tuple of non-negative ints (``seeded_rng(seed, epoch, step)``).

    Distinct tuples give independent streams (NumPy ``SeedSequence``); the global RNGs are never touched.

    Raises:
        ConfigError: a negative or non-integer entry.
    """
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(_entropy(entropy))))


def _range(name: str, value: Any, *, upper: float | None) -> tuple[float, float]:
    """``value`` as a ``(lo, hi)`` float pair with ``0 < lo <= hi (<= upper)``; ConfigError otherwise."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r}; expected a (low, high) pair of numbers, e.g. (0.2, 0.8)") from None
    if not (0 < lo <= hi) or (upper is not None and hi > upper) or not math.isfinite(hi):
        bound = f" <= {upper:g}" if upper is not None else ""
        raise ConfigError(f"{name}={value!r}; expected 0 < low <= high{bound}")
    return lo, hi


@dataclass(frozen=True)
class MaskSpec:
    """Settings of the multi-block masks (defaults: the AnySat GeoPlex recipe, anysat-model.md §2.3).

    Attributes:
        n_targets: target blocks per image.
        target_area: range of a target block's area, as a fraction of the grid.
        target_aspect: range of a target block's aspect ratio ``h / w``.
        context_area: range of the context block's area (aspect 1), before the targets are cut out.
        max_tries: context-block positions tried per target draw, and target draws per image, before giving up.
        min_keep: fewest context patches an image may keep (at least 1 is always required).

    Raises:
        ConfigError: a value out of range (the message names it and the accepted range).
    """

    n_targets: int = 4
    target_area: tuple[float, float] = (0.2, 0.8)
    target_aspect: tuple[float, float] = (0.75, 1.5)
    context_area: tuple[float, float] = (0.85, 1.0)
    max_tries: int = 20
    min_keep: int = 1

    def __post_init__(self) -> None:
        for name, lowest in (("n_targets", 1), ("max_tries", 1), ("min_keep", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lowest:
                raise ConfigError(f"MaskSpec {name}={v!r}; expected an integer >= {lowest}")
        object.__setattr__(self, "target_area", _range("MaskSpec target_area", self.target_area, upper=1.0))
        object.__setattr__(self, "target_aspect", _range("MaskSpec target_aspect", self.target_aspect, upper=None))
        object.__setattr__(self, "context_area", _range("MaskSpec context_area", self.context_area, upper=1.0))

    @classmethod
    def coerce(cls, value: MaskSpec | Mapping[str, Any] | None) -> MaskSpec:
        """A MaskSpec from itself, a dict of its fields (YAML) or None (the defaults).

        Raises:
            ConfigError: an unknown key or a bad value.
        """
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(cls.__dataclass_fields__))
            if unknown:
                raise ConfigError(
                    f"mask has unknown key(s) {unknown}; expected some of {', '.join(cls.__dataclass_fields__)}"
                )
            return cls(**value)
        raise ConfigError(f"mask={value!r}; expected a MaskSpec or a dict of its fields")


def _block_size(
    rng: np.random.Generator, g: int, area: tuple[float, float], aspect: tuple[float, float]
) -> tuple[int, int]:
    """``(h, w)`` of a block on a ``g x g`` grid: one uniform draw for both area and aspect, clipped to [1, g-1]."""
    u = float(rng.random())
    a = area[0] + u * (area[1] - area[0])
    ar = aspect[0] + u * (aspect[1] - aspect[0])
    h = round(math.sqrt(a * g * g * ar))
    w = round(math.sqrt(a * g * g / ar))
    return min(max(h, 1), g - 1), min(max(w, 1), g - 1)


def _rect(g: int, top: int, left: int, h: int, w: int) -> np.ndarray:
    m = np.zeros((g, g), dtype=bool)
    m[top : top + h, left : left + w] = True
    return m


class MultiBlockMasks:
    """Multi-block JEPA mask sampler (see the module docstring for the rules and the seeding scheme).

    Args:
        spec: the mask settings (a :class:`MaskSpec`, a dict of its fields or None for the defaults).
        seed: non-negative seed of every draw.

    Example:
        >>> masks = MultiBlockMasks(MaskSpec(), seed=0)
        >>> context, targets = masks(8, 6)  # (8, K), (8, 4, Kt): raster indices into a 6 x 6 patch grid
    """

    def __init__(self, spec: MaskSpec | Mapping[str, Any] | None = None, seed: int = 0) -> None:
        self.spec = MaskSpec.coerce(spec)
        self.seed = _entropy([seed])[0]
        self.calls = 0

    def __repr__(self) -> str:
        return f"MultiBlockMasks({self.spec}, seed={self.seed}, calls={self.calls})"

    def block_sizes(self, grid: int, call: int | Sequence[int]) -> tuple[tuple[int, int], tuple[int, int]]:
        """``((th, tw), (ch, cw))``: the target and context block sizes of call ``call`` on a ``grid`` side grid."""
        ids = [call] if isinstance(call, (int, np.integer)) else list(call)
        rng = seeded_rng(self.seed, *ids)
        s = self.spec
        return _block_size(rng, grid, s.target_area, s.target_aspect), _block_size(rng, grid, s.context_area, (1, 1))

    def __call__(
        self, batch_size: int, grid: int, *, call: int | Sequence[int] | None = None, rank: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks of one batch.

        Args:
            batch_size: number of images ``B``.
            grid: side ``g`` of the patch grid (``tile extent / patch_size_m``); indices lie in ``[0, g*g)``.
            call: id of this draw (an int or a tuple of ints, e.g. ``(epoch, step)``); None uses and advances the
                sampler's own call counter.  Block sizes depend on ``(seed, call)`` only, so every DDP rank with the
                same call draws the same sizes (and so the same ``K``/``Kt``).
            rank: extra entropy for the per-image positions (the DDP rank), so ranks mask their images differently.

        Returns:
            ``context`` int64 ``(B, K)`` and ``targets`` int64 ``(B, n_targets, Kt)``, sorted raster indices; no
            context index of an image is in any of its targets.

        Raises:
            ConfigError: ``grid < 2`` or a bad ``batch_size``, or no valid context after the relaxations (the message
                says which setting to change).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r}; expected a positive integer")
        if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)) or grid < 2:
            raise ConfigError(
                f"the patch grid is {grid!r} x {grid!r} patches; JEPA masks need at least 2 x 2 (a target and a "
                "context). Use a smaller patch_size_m (scales_m) so that the tile holds at least 2 patches a side."
            )
        g = int(grid)
        if call is None:
            ids = [self.calls]
            self.calls += 1
        else:
            ids = [call] if isinstance(call, (int, np.integer)) else list(call)
        (th, tw), (ch, cw) = self.block_sizes(g, ids)
        rng = seeded_rng(self.seed, *ids, _entropy([rank])[0], 1)
        contexts, targets = [], []
        for _ in range(int(batch_size)):
            c, t = self._image(rng, g, (th, tw), (ch, cw))
            contexts.append(c)
            targets.append(t)
        k = min(len(c) for c in contexts)
        context = torch.from_numpy(np.stack([c[:k] for c in contexts])).long()
        return context, torch.from_numpy(np.stack(targets)).long()

    def _image(
        self, rng: np.random.Generator, g: int, target: tuple[int, int], context: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Context indices ``(K_i,)`` and target indices ``(n_targets, th*tw)`` of one image."""
        s = self.spec
        need = max(s.min_keep, 1)
        (th, tw), (ch, cw) = target, context
        for _ in range(s.max_tries):
            covered = np.zeros((g, g), dtype=bool)
            blocks = []
            for _ in range(s.n_targets):
                top, left = int(rng.integers(0, g - th + 1)), int(rng.integers(0, g - tw + 1))
                m = _rect(g, top, left, th, tw)
                covered |= m
                blocks.append(np.flatnonzero(m))
            free = ~covered
            if free.sum() < need:
                continue  # the targets leave no room: draw them again
            for _ in range(s.max_tries):
                top, left = int(rng.integers(0, g - ch + 1)), int(rng.integers(0, g - cw + 1))
                kept = _rect(g, top, left, ch, cw) & free
                if kept.sum() >= need:
                    return np.flatnonzero(kept), np.stack(blocks)
            return np.flatnonzero(free), np.stack(blocks)  # relaxed: drop the block shape, never the targets
        raise ConfigError(
            f"no context of at least {need} patch(es) avoids {s.n_targets} target blocks of {th} x {tw} on a "
            f"{g} x {g} patch grid after {s.max_tries} target draws; make room: a smaller patch_size_m (a larger "
            f"grid), a smaller target_area (now {s.target_area}), fewer n_targets (now {s.n_targets}) or a smaller "
            f"min_keep (now {s.min_keep})"
        )

    # ---------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        """``{"seed", "calls", "spec"}``: what a resumed run needs to continue the same mask sequence."""
        return {"seed": self.seed, "calls": self.calls, "spec": asdict(self.spec)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the sequence saved by :meth:`state_dict`.

        Raises:
            ConfigError: the state was saved with another seed or mask settings (resume with the same ones).
        """
        if int(state["seed"]) != self.seed:
            raise ConfigError(
                f"the mask state was saved with seed {state['seed']} but this run has seed {self.seed}; resume with "
                "the seed of the saved run"
            )
        saved = state.get("spec")
        if saved is not None and MaskSpec.coerce(saved) != self.spec:
            raise ConfigError(
                f"the mask state was saved with {MaskSpec.coerce(saved)} but this run has {self.spec}; resume with "
                "the mask settings of the saved run"
            )
        self.calls = int(state["calls"])
