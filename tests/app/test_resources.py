"""Process-wide resources: weights choices, precision, the feature cache."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from anysat_core.errors import ConfigError
from anysat_core.precision import native_bf16, precision_context
from app.config import AppConfig, PathOutsideRootsError
from app.resources import FeatureCache, get_model, list_weights


@pytest.mark.parametrize(
    ("flags", "cap", "expected"),
    [
        ("fpu sse avx2 avx512f", None, False),
        ("fpu avx512f avx512_bf16", None, True),
        ("fpu amx_bf16 amx_tile", None, True),
        ("avx512_bf16", (7, 5), False),  # a Turing GPU: no bf16 tensor cores
        ("", (8, 0), True),
        ("", (9, 0), True),
    ],
)
def test_bf16_is_offered_only_where_native(flags: str, cap, expected: bool) -> None:
    assert native_bf16(flags, cap) is expected


def test_precision_context() -> None:
    with precision_context("fp32"):
        pass
    with pytest.raises(ConfigError, match="precision"), precision_context("fp16"):
        pass


def test_bf16_features_stay_close_to_fp32(state) -> None:
    import dataclasses

    from app.compute import compute_features

    req = state.request()
    a = compute_features(req, state.config).values
    b = compute_features(dataclasses.replace(req, precision="bf16"), state.config).values
    a2, b2 = a.reshape(a.shape[0], -1).T, b.reshape(b.shape[0], -1).T
    cos = (a2 * b2).sum(1) / np.linalg.norm(a2, axis=1) / np.linalg.norm(b2, axis=1)
    assert cos.min() > 0.99


def test_checkpoints_under_a_data_root_are_offered_and_load(tmp_path: Path) -> None:
    from anysat_core import AnySat

    (tmp_path / "checkpoints").mkdir()
    AnySat(size="test", modalities=("s2",)).save(tmp_path / "checkpoints" / "mine.pt")
    cfg = AppConfig(data_roots=(tmp_path,), size="test")
    choices = list_weights(cfg)
    key = f"file:{tmp_path / 'checkpoints' / 'mine.pt'}"
    assert key in choices.values() and "random" in choices.values() and "geoplex-mini" in choices.values()
    loaded = get_model(key, cfg)
    assert loaded.modalities == ("s2",) and "mine.pt" in loaded.label
    with pytest.raises(PathOutsideRootsError):
        get_model("file:/etc/passwd", cfg)


def test_feature_cache_computes_each_key_once_under_concurrency() -> None:
    cache = FeatureCache(max_items=2)
    calls = []

    def slow() -> int:
        calls.append(1)
        threading.Event().wait(0.05)
        return 7

    threads = [threading.Thread(target=cache.get_or_compute, args=("k", slow)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and cache.misses == 1 and cache.hits == 5
    cache.get_or_compute("a", lambda: 1)
    cache.get_or_compute("b", lambda: 2)
    assert len(cache) == 2  # least recently used evicted
