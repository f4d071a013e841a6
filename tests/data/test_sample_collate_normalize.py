"""The shared sample format: GeoInfo windows, padding collate, normalisation statistics."""

from __future__ import annotations

import json

import pytest
import torch

from anysat_core import AnySat, BatchSizeMismatchError, ChannelMismatchError, InputShapeError
from anysat_core.data.collate import collate
from anysat_core.data.normalize import Normalize, compute_stats, load_or_compute_stats, read_stats, stats_path
from anysat_core.data.sample import GeoInfo, sample_extent_m
from anysat_core.data.synthetic import random_batch
from anysat_core.errors import CorruptFileError, DatasetNotFoundError
from anysat_core.modalities import MODALITIES, NormStats


def _sample(T: int, seed: int, label: int) -> dict:
    s = {k: v[0] for k, v in random_batch(["s2", "aerial"], extent_m=40, dates=T, seed=seed).items()}
    s["s2_mask"] = torch.rand(T, 10, 4, 4, generator=torch.Generator().manual_seed(seed)) > 0.2
    s["label"] = torch.tensor(label)
    s["meta"] = GeoInfo("test", f"t{seed}", "EPSG:32631", (10.0, 0.0, 500000.0, 0.0, -10.0, 4800000.0), 10.0, (4, 4))
    return s


def test_geoinfo_bounds_and_windows():
    g = GeoInfo("d", "t", "EPSG:32631", (0.2, 0.0, 1000.0, 0.0, -0.2, 2000.0), 0.2, (300, 300))
    assert g.bounds == pytest.approx((1000.0, 1940.0, 1060.0, 2000.0))
    w = g.with_window(100, 50, 100, 100)
    assert w.bounds == pytest.approx((1010.0, 1960.0, 1030.0, 1980.0))
    assert g.bounds is not None and GeoInfo("d", "t").bounds is None


def test_collate_pads_series_and_marks_real_dates():
    a, b = _sample(3, 1, 0), _sample(5, 2, 1)
    batch = collate([a, b])
    assert batch["s2"].shape == (2, 5, 10, 4, 4) and batch["aerial"].shape == (2, 4, 200, 200)
    assert batch["s2_dates"][0].tolist()[3:] == [0, 0] and batch["s2_dates"][0, :3].tolist() == a["s2_dates"].tolist()
    assert batch["s2_date_mask"].tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert not batch["s2_mask"][0, 3:].any() and torch.equal(batch["s2_mask"][1], b["s2_mask"])
    assert torch.equal(batch["s2"][0, 3:], torch.zeros(2, 10, 4, 4))
    assert batch["label"].tolist() == [0, 1] and [m.tile_id for m in batch["meta"]] == ["t1", "t2"]
    assert sample_extent_m(batch) == 40.0


def test_collated_batch_feeds_the_model_directly():
    batch = collate([_sample(3, 1, 0), _sample(5, 2, 1)])
    model = AnySat(size="test").eval()
    with torch.no_grad():
        assert model(batch, patch_size_m=20, output="patch").shape == (2, 2, 2, model.embed_dim)


def test_collate_errors():
    a, b = _sample(3, 1, 0), _sample(3, 2, 1)
    del b["aerial"]
    with pytest.raises(BatchSizeMismatchError, match="same modalities"):
        collate([a, b])
    c = _sample(3, 3, 0)
    c["aerial"] = c["aerial"][:, :100, :100]
    with pytest.raises(InputShapeError, match="cannot stack 'aerial'"):
        collate([_sample(3, 1, 0), c])
    with pytest.raises(InputShapeError):
        collate([])


def test_compute_stats_is_the_mean_of_per_sample_stats():
    g = torch.Generator().manual_seed(0)
    samples = [{"s1-asc": torch.randn(4, 2, 3, 3, generator=g) * (i + 1) + 10 * i} for i in range(3)]
    st = compute_stats(samples, "s1-asc")
    per_mean = torch.stack([s["s1-asc"].double().transpose(0, 1).reshape(2, -1).mean(1) for s in samples]).mean(0)
    per_std = torch.stack([s["s1-asc"].double().transpose(0, 1).reshape(2, -1).std(1, correction=0) for s in samples])
    assert st.mean == pytest.approx(per_mean.tolist()) and st.std == pytest.approx(per_std.mean(0).tolist())


def test_compute_stats_ignores_masked_values():
    x = torch.ones(2, 2, 2, 2)
    x[0] = 1000.0
    mask = torch.ones(2, 2, 2, 2, dtype=torch.bool)
    mask[0] = False
    st = compute_stats([{"s1-asc": x, "s1-asc_mask": mask}], "s1-asc")
    assert st.mean == pytest.approx((1.0, 1.0))


def test_stats_cache_round_trip_and_errors(tmp_path):
    samples = [{"s1-asc": torch.full((2, 2, 2, 2), float(i))} for i in range(4)]
    st = load_or_compute_stats(tmp_path, "s1-asc", samples)
    assert stats_path(tmp_path, "s1-asc").exists() and st.mean == pytest.approx((1.5, 1.5))
    assert load_or_compute_stats(tmp_path, "s1-asc").mean == pytest.approx((1.5, 1.5))  # from the file
    folds = tmp_path / "folds.json"
    folds.write_text(json.dumps({"Fold_1": {"mean": [1, 2], "std": [1, 1]}, "Fold_2": {"mean": [3, 4], "std": [3, 3]}}))
    assert read_stats(folds, "s1-asc").mean == (2.0, 3.0)
    with pytest.raises(ChannelMismatchError, match="expected 10"):
        read_stats(folds, "s2")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CorruptFileError, match=r"bad\.json"):
        read_stats(bad, "s1-asc")


def test_bad_input_raises_anysat_errors(tmp_path):
    with pytest.raises(InputShapeError, match="spatial extent"):
        sample_extent_m({"modis": torch.zeros(1, MODALITIES["modis"].num_bands, 1, 1)})
    with pytest.raises(InputShapeError, match="no samples"):
        compute_stats([], "s1-asc")
    with pytest.raises(DatasetNotFoundError, match=r"NORM_s1-asc_patch\.json"):
        load_or_compute_stats(tmp_path, "s1-asc")


def test_normalize_from_registry():
    norm = Normalize.from_registry("treesatai-ts", ["aerial", "s2", "s1-asc"])
    assert set(norm.stats) == {"aerial", "s2"}  # s1-asc has no TreeSatAI-TS statistics in the registry
    s = {"aerial": torch.full((4, 2, 2), 150.89349365234375), "s2": torch.zeros(3, 10, 1, 1)}
    out = norm(s)
    assert out["aerial"][0].abs().max() < 1e-6
    assert out["s2"][0, :, 0, 0] == pytest.approx(
        [
            -m / sd
            for m, sd in zip(MODALITIES["s2"].stats["treesatai-ts"].mean, MODALITIES["s2"].stats["treesatai-ts"].std)
        ]
    )
    with pytest.raises(ChannelMismatchError):
        Normalize({"s2": NormStats((0.0,), (1.0,), "x")})


def test_never_valid_channel_gets_unit_stats():
    x = torch.randn(3, 2, 2, 2) + 5
    mask = torch.ones(3, 2, 2, 2, dtype=torch.bool)
    mask[:, 1] = False  # a placeholder band, always masked
    st = compute_stats([{"s1-asc": x, "s1-asc_mask": mask}], "s1-asc")
    assert st.mean[1] == 0.0 and st.std[1] == 1.0 and 4 < st.mean[0] < 6
