"""Process-wide resources shared by every session: models, tile sources and the feature cache.

A Bokeh directory app runs ``main.py`` once per browser session; what is here is built once per process
(thread-safe) and reused: a model is loaded once per weights choice, a dataset is opened once, and features are cached
per request (:class:`FeatureCache`, keyed by everything that changes the result).  Inference runs under one lock per
model so that sessions never run the same model at once on the same cores.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anysat_core.errors import AnySatError, ConfigError, PretrainedWeightsError
from anysat_core.precision import bf16_native
from app.config import AppConfig, resolve_under_roots

__all__ = [
    "FEATURE_CACHE",
    "FeatureCache",
    "LoadedModel",
    "bf16_supported",
    "get_model",
    "list_weights",
    "weights_label",
]

#: seed of the random-init weights (the same random model in every process, so colours and code reproduce).
RANDOM_SEED = 0


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference plus what the page says about it."""

    key: str
    model: Any  # anysat_core.AnySat
    label: str
    modalities: tuple[str, ...]
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, compare=False, repr=False)


_MODELS: dict[tuple[str, str], LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


def weights_label(key: str, size: str) -> str:
    """What the page shows for a weights choice."""
    if key == "geoplex-mini":
        return "AnySat tiny pretrained on GeoPlex-mini (shipped)"
    if key == "random":
        return f"RANDOM INIT AnySat {size} (seed {RANDOM_SEED}): features carry no learned meaning"
    if key == "base":
        return "AnySat base, released weights"
    if key.startswith("file:"):
        return f"checkpoint {Path(key[5:]).name}"
    return key


def base_weights_available() -> bool:
    """True when the released base weights are on this machine (``ANYSAT_WEIGHTS`` or the Hugging Face cache)."""
    from anysat_core.model.checkpoint import pretrained_path

    try:
        pretrained_path("base", local_files_only=True, verify=False)
    except (AnySatError, OSError, ValueError):
        return False
    return True


def list_weights(config: AppConfig) -> dict[str, str]:
    """Weights choices of this process: ``{label: key}`` (the shipped checkpoint, random init, base when local,
    checkpoints ``*.pt``/``*.ckpt`` found directly under a data root or its ``checkpoints/`` folder)."""
    out = {weights_label("geoplex-mini", config.size): "geoplex-mini"}
    if base_weights_available():
        out[weights_label("base", config.size)] = "base"
    for root in config.data_roots:
        for folder in (root, root / "checkpoints"):
            for pattern in ("*.pt", "*.ckpt"):
                for p in sorted(folder.glob(pattern))[:20]:
                    out[weights_label(f"file:{p}", config.size)] = f"file:{p}"
    out[weights_label("random", config.size)] = "random"
    return out


def get_model(key: str, config: AppConfig) -> LoadedModel:
    """The model of a weights choice, loaded once per process.

    Raises:
        PretrainedWeightsError, CheckpointError: weights missing or unreadable.
        PathOutsideRootsError: a checkpoint path outside the data roots.
        ConfigError: an unknown weights key.
    """
    from anysat_core import AnySat

    cache_key = (key, config.size)
    with _MODELS_LOCK:
        hit = _MODELS.get(cache_key)
        if hit is not None:
            return hit
        if key == "geoplex-mini":
            model = AnySat.from_pretrained("geoplex-mini")
        elif key == "base":
            if not base_weights_available():
                raise PretrainedWeightsError(
                    "the released AnySat base weights are not on this machine; set ANYSAT_WEIGHTS to the file "
                    "(AnySat.pth) or run AnySat.from_pretrained('base') once with internet, then restart the app"
                )
            model = AnySat.from_pretrained("base", local_files_only=True)
        elif key == "random":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_SEED)
                model = AnySat(size=config.size)
        elif key.startswith("file:"):
            path = resolve_under_roots(key[5:], config.data_roots)
            model = AnySat.from_checkpoint(path)
        else:
            raise ConfigError(f"weights {key!r}; expected 'geoplex-mini', 'random', 'base' or 'file:<path>'")
        model.eval()
        loaded = LoadedModel(key, model, weights_label(key, config.size), tuple(model.config.modalities))
        _MODELS[cache_key] = loaded
        return loaded


def bf16_supported() -> bool:
    """Whether this machine's CPU (or its first GPU, when the models run there) multiplies bf16 natively
    (:func:`anysat_core.precision.bf16_native`); elsewhere bf16 would be emulated and slower than fp32, so the app
    does not offer it."""
    return bf16_native("cuda" if torch.cuda.is_available() else "cpu")


class FeatureCache:
    """A thread-safe LRU cache of computed results, keyed by a hashable request.

    ``get_or_compute(key, fn)`` returns the cached value or runs ``fn()`` once (concurrent callers of the same key
    wait for the first).  ``hits`` and ``misses`` count look-ups (the tests read them).
    """

    def __init__(self, max_items: int = 128) -> None:
        self.max_items = max_items
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[Hashable, threading.Lock] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.hits = self.misses = 0

    def get_or_compute(self, key: Hashable, fn: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._items:
                    self.hits += 1
                    return self._items[key]
                self.misses += 1
            value = fn()
            with self._lock:
                self._items[key] = value
                self._items.move_to_end(key)
                while len(self._items) > self.max_items:
                    self._items.popitem(last=False)
                self._key_locks.pop(key, None)
            return value


#: the process-wide cache of feature maps (all sessions share it).
FEATURE_CACHE = FeatureCache()


def array_digest(*arrays: np.ndarray) -> str:
    """A short digest of arrays' bytes (for cache keys of uploaded or edited inputs)."""
    h = hashlib.sha1()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def default_cache_dir() -> Path:
    """Where generated GeoPlex-mini tiles are cached (``ANYSAT_CACHE_DIR`` or ``~/.cache/anysat-explorer``)."""
    return Path(os.environ.get("ANYSAT_CACHE_DIR") or Path.home() / ".cache" / "anysat-explorer")
