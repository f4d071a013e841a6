"""Model configuration: a frozen dataclass and the named size presets.

This module imports only the errors and the modality registry (it is a leaf of the model).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from anysat_core.errors import ConfigError
from anysat_core.modalities import MODALITIES

__all__ = ["ATTENTION_MODES", "SIZES", "AnySatConfig", "AttentionMode", "config_for_size"]

#: Attention behaviour of the main transformer blocks (see :class:`~anysat_core.model.attention.SelfAttention`).
AttentionMode = Literal["standard", "flash-compat"]
#: The values of :data:`AttentionMode`.
ATTENTION_MODES: tuple[str, ...] = get_args(AttentionMode)

#: Width, depth and heads of the released sizes (head width is 64 in all of them), and of ``test``: a model of the
#: same architecture small enough for fast unit tests (like timm's ``test_vit``; no released weights).
SIZES: dict[str, dict[str, int]] = {
    "test": {"embed_dim": 64, "depth": 1, "num_heads": 2},
    "tiny": {"embed_dim": 256, "depth": 2, "num_heads": 4},
    "small": {"embed_dim": 512, "depth": 4, "num_heads": 8},
    "base": {"embed_dim": 768, "depth": 6, "num_heads": 12},
}


@dataclass(frozen=True)
class AnySatConfig:
    """Everything needed to build an :class:`~anysat_core.AnySat` model.

    Attributes:
        size: preset name, or ``"custom"``.
        embed_dim: token width D.
        depth: number of blocks of the shared spatial encoder and of the main transformer.
        num_heads: attention heads (D must be divisible by it).
        mlp_ratio: hidden width of transformer MLPs, as a multiple of D.
        modalities: modalities that get a projector (all 11 in the released checkpoint).
        attention: ``"standard"`` (softmax over tokens, what the official demo/hub path uses) or
            ``"flash-compat"`` (the head/token-transposed attention the official code computes when
            ``flash_attn=True``, used in its pretraining; tokens do not mix in the main blocks).
    """

    size: str = "tiny"
    embed_dim: int = 256
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    modalities: tuple[str, ...] = field(default_factory=lambda: tuple(MODALITIES))
    attention: AttentionMode = "standard"

    def __post_init__(self) -> None:
        for name in ("embed_dim", "depth", "num_heads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"{name}={v!r}; expected an integer (e.g. the 'tiny' preset: {SIZES['tiny'][name]})")
        if isinstance(self.mlp_ratio, bool) or not isinstance(self.mlp_ratio, (int, float)):
            raise ConfigError(f"mlp_ratio={self.mlp_ratio!r}; expected a number (4.0 in every released size)")
        if not isinstance(self.size, str) or not isinstance(self.attention, str):
            raise ConfigError(f"size={self.size!r}, attention={self.attention!r}; expected strings")
        if self.num_heads < 1:
            raise ConfigError(f"num_heads={self.num_heads} must be at least 1")
        if self.embed_dim <= 0 or self.embed_dim % self.num_heads:
            raise ConfigError(f"embed_dim={self.embed_dim} must be a positive multiple of num_heads={self.num_heads}")
        if self.embed_dim % 64:
            raise ConfigError(
                f"embed_dim={self.embed_dim} must be a multiple of 64 (16 temporal heads with even widths "
                "and 4 sin-cos blocks); use 256, 512 or 768 as the released sizes do"
            )
        if self.depth < 1:
            raise ConfigError(f"depth={self.depth} must be at least 1")
        if self.mlp_ratio <= 0:
            raise ConfigError(f"mlp_ratio={self.mlp_ratio} must be positive (4.0 in the released sizes)")
        if self.attention not in ATTENTION_MODES:
            raise ConfigError(f"attention={self.attention!r}; expected one of {ATTENTION_MODES}")
        if isinstance(self.modalities, str):
            raise ConfigError(f"modalities={self.modalities!r} is a string; give a tuple of names, e.g. ('s2',)")
        for m in self.modalities:
            MODALITIES[m]  # raises UnknownModalityError with the valid names
        if not self.modalities:
            raise ConfigError("modalities is empty; give at least one modality name")
        object.__setattr__(self, "modalities", tuple(self.modalities))

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form, stored in checkpoints."""
        d = dataclasses.asdict(self)
        d["modalities"] = list(self.modalities)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AnySatConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        _check_fields(d)
        d = dict(d)
        if "modalities" in d:
            d["modalities"] = tuple(d["modalities"])
        return cls(**d)

    def replace(self, **changes: Any) -> AnySatConfig:
        """A copy with some fields changed; unknown fields raise :class:`ConfigError`."""
        _check_fields(changes)
        return dataclasses.replace(self, **changes)


def _check_fields(names: Iterable[str]) -> None:
    fields = {f.name for f in dataclasses.fields(AnySatConfig)}
    extra = sorted(set(names) - fields)
    if extra:
        raise ConfigError(f"unknown config fields {extra}; expected a subset of {sorted(fields)}")


def config_for_size(size: str, **overrides: Any) -> AnySatConfig:
    """Config of a size preset (``test``, ``tiny``, ``small``, ``base``), with optional field overrides."""
    if size not in SIZES:
        raise ConfigError(f"unknown size {size!r}; expected one of {', '.join(SIZES)}")
    _check_fields(overrides)
    return AnySatConfig(size=size, **{**SIZES[size], **overrides})
