"""GeoPlex-mini: determinism, registry-consistent shapes, georeferencing, clouds, change labels, learnability."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from rasterio.crs import CRS as RioCRS
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from anysat_core import AnySat
from anysat_core.data.collate import collate
from anysat_core.data.datasets import dataset_class, get_dataset, list_datasets
from anysat_core.data.geoplex_mini import CLASSES, GeoPlexMini, signals, world
from anysat_core.errors import ConfigError, ExtentMismatchError, UnknownModalityError
from anysat_core.modalities import MODALITIES

MODS = ("aerial", "aerial-flair", "s2", "s1-asc", "l7", "modis")


def _fresh(**kw) -> GeoPlexMini:
    """A new instance with its own world (the module caches worlds by parameters)."""
    world.get_world.cache_clear()
    return GeoPlexMini(**kw)


def _bytes(ds: GeoPlexMini, i: int) -> dict[str, bytes]:
    s = ds[i]
    return {k: v.numpy().tobytes() for k, v in s.items() if isinstance(v, torch.Tensor)}


def test_same_seed_gives_byte_identical_tiles():
    a = _fresh(seed=3, modalities=MODS, tiles=8, split="all", normalize=False)
    b = _fresh(seed=3, modalities=MODS, tiles=8, split="all", normalize=False)
    assert a.world is not b.world
    for i in (0, 9, 63):
        ba, bb = _bytes(a, i), _bytes(b, i)
        assert ba.keys() == bb.keys() and set(MODS) <= set(ba)
        for k in ba:
            assert ba[k] == bb[k], f"tile {i} {k} differs between two instances with the same seed"
    assert np.array_equal(a.class_map(), b.class_map())  # 10 m world maps


def test_different_seed_gives_different_world():
    a = GeoPlexMini(seed=0, modalities=("aerial", "s2"), tiles=8, split="all", normalize=False)
    b = GeoPlexMini(seed=1, modalities=("aerial", "s2"), tiles=8, split="all", normalize=False)
    sa, sb = a[5], b[5]
    for k in ("aerial", "s2"):
        assert sa[k].shape[-3:] == sb[k].shape[-3:]
        assert sa[k].numpy().tobytes() != sb[k].numpy().tobytes()
    assert (a.class_map(10.0) != b.class_map(10.0)).mean() > 0.3


@pytest.mark.parametrize("name", list(MODALITIES))
def test_shapes_and_extents_follow_the_registry(name):
    m = MODALITIES[name]
    ds = GeoPlexMini(modalities=(name,), tiles=2, split="all", normalize=False, task="segmentation")
    for i in (0, 3):
        s = ds[i]
        x = s[name]
        side = 1 if m.tile_token else round(ds.tile_m / m.gsd_m)
        assert x.dtype == torch.float32 and torch.isfinite(x).all()
        if not m.tile_token:
            assert side * m.gsd_m == pytest.approx(ds.tile_m)
        if m.time_series:
            d = s[f"{name}_dates"]
            assert d.dtype == torch.int64 and d.dim() == 1 and x.shape == (d.numel(), m.num_bands, side, side)
            assert int(d.min()) >= 1 and int(d.max()) <= 366 and bool((d[1:] > d[:-1]).all())
            if f"{name}_mask" in s:
                assert s[f"{name}_mask"].dtype == torch.bool and s[f"{name}_mask"].shape == (d.numel(), 1, side, side)
        else:
            assert x.shape == (m.num_bands, side, side)
            assert 1 <= s["meta"].extra["acquisition_doy"][name] <= 366
        meta = s["meta"]
        ref = 10.0 if m.tile_token else m.gsd_m
        assert meta.gsd_m == ref and meta.shape == (round(ds.tile_m / ref),) * 2
        assert s["label"].shape == meta.shape and s["label"].dtype == torch.int64
        left, bottom, right, top = meta.bounds
        assert right - left == pytest.approx(ds.tile_m) and top - bottom == pytest.approx(ds.tile_m)


def test_tiles_cover_the_world_without_gaps_in_a_projected_crs():
    ds = GeoPlexMini(modalities=("s2",), tiles=(5, 7), split="all", normalize=False)
    crs = RioCRS.from_string(ds.crs)
    assert crs.is_projected and crs.linear_units in ("metre", "meter")
    b = {t: ds[t]["meta"].bounds for t in range(ds.n_tiles)}
    for t, (left, bottom, right, top) in b.items():
        r, c = divmod(t, ds.cols)
        if c + 1 < ds.cols:
            assert b[t + 1][0] == right and b[t + 1][1] == bottom  # right neighbour touches
        if r + 1 < ds.rows:
            assert b[t + ds.cols][3] == bottom and b[t + ds.cols][0] == left  # neighbour below touches
    area = sum((r - l) * (t - bo) for l, bo, r, t in b.values())
    L, B, R, T = ds.bounds
    assert area == pytest.approx((R - L) * (T - B))
    assert (min(v[0] for v in b.values()), max(v[3] for v in b.values())) == (L, T)
    assert ds.world_transform[2:6:3] == (L, T)
    assert ds.class_map().shape == (round((T - B) / 10), round((R - L) / 10))
    # the tile's label grid is the matching window of the world class map
    seg = GeoPlexMini(modalities=("s2",), tiles=(5, 7), split="all", normalize=False, task="segmentation")
    cm = seg.class_map()
    r, c = divmod(12, ds.cols)
    assert (seg[12]["label"].numpy() == cm[r * 6 : r * 6 + 6, c * 6 : c * 6 + 6]).mean() > 0.8


@pytest.mark.parametrize("name", ["s2", "l8", "modis"])
def test_cloud_mask_flags_exactly_the_pixels_where_cloud_was_added(name):
    ds = GeoPlexMini(modalities=(name,), tiles=8, split="all", normalize=False)
    mod = MODALITIES[name]
    n_cloudy = 0
    for t in (0, 27, 50):
        cloudy, mask = ds.raw(t, name)
        clear, clear_mask = signals.generate(ds.world, t, mod, clouds=False)
        changed = (cloudy != clear).any(axis=1, keepdims=True)
        assert np.array_equal(changed, ~mask)
        assert clear_mask.all()
        n_cloudy += int((~mask).sum())
        # clouds are bright in the visible bands
        vis = [i for i, b in enumerate(mod.bands) if signals.band_wavelengths(mod)[i] < 600]
        assert (cloudy[:, vis] >= clear[:, vis] - 1e-3)[np.broadcast_to(~mask, cloudy[:, vis].shape)].mean() > 0.95
    assert n_cloudy > 0


def test_change_labels_only_in_change_tiles_and_series_show_the_disturbance():
    ds = GeoPlexMini(modalities=("s2",), tiles=8, split="all", normalize=False, task="change")
    change_tiles = set(ds.change_tiles)
    assert 0 < len(change_tiles) < len(ds)
    n_pos = 0
    for i in range(len(ds)):
        s = ds[i]
        lab = s["label"]
        assert lab.shape == (6, 6) and set(lab.unique().tolist()) <= {0, 1}
        if i not in change_tiles:
            assert lab.sum() == 0 and s["meta"].extra["change_doy"] == ()
        n_pos += int(lab.sum())
    assert n_pos > 0
    # counterfactual world without disturbances: identical before the event date, different after in changed pixels
    quiet = copy.copy(ds.world)
    quiet.events = ()
    mod = MODALITIES["s2"]
    doy = ds.dates("s2")
    t = max(change_tiles, key=lambda k: int(ds[k]["label"].sum()))
    s = ds[t]
    ev_doy = min(s["meta"].extra["change_doy"])
    real, _ = signals.optical(ds.world, t, mod, clouds=False)
    cf, _ = signals.optical(quiet, t, mod, clouds=False)
    before, after = doy <= ev_doy, doy > ev_doy
    assert np.allclose(real[before], cf[before], rtol=1e-4, atol=0.5)
    changed = s["label"].numpy().astype(bool)
    diff = np.abs(real[after] - cf[after]).mean(axis=(0, 1))  # (H, W) mean abs change, reflectance x 10000
    assert diff[changed].min() > 100
    assert diff[changed].mean() > 5 * diff[~changed].mean() if (~changed).any() else True


def test_learnability_linear_probe_on_s2_tile_statistics():
    def features(split: str) -> tuple[np.ndarray, np.ndarray]:
        ds = GeoPlexMini(seed=0, modalities=("s2",), split=split)
        X = []
        for i in range(len(ds)):
            s = ds[i]
            x, m = s["s2"], s["s2_mask"].expand_as(s["s2"]).float()
            series = (x * m).sum((2, 3)) / m.sum((2, 3)).clamp(min=1)  # (T, C) cloud-free tile mean
            valid = m[:, 0].sum((1, 2)) > 0
            series = series[valid]
            X.append(torch.cat([series.mean(0), series.std(0)]).numpy())
        return np.stack(X), ds.dominant_class()

    Xtr, ytr = features("train")
    Xte, yte = features("test")
    sc = StandardScaler().fit(Xtr)
    clf = LogisticRegression(max_iter=2000).fit(sc.transform(Xtr), ytr)
    acc = float((clf.predict(sc.transform(Xte)) == yte).mean())
    chance = 1 / len(CLASSES)
    assert acc > 3 * chance


def test_samples_normalise_and_run_through_anysat(tmp_path):
    ds = GeoPlexMini(modalities=("aerial", "s2", "s1-asc"), tiles=8, cache_dir=tmp_path)
    a, b = ds[0], ds[1]
    assert a["label"].shape == (len(CLASSES),) and a["label"].dtype == torch.float32 and a["label"].sum() >= 1
    assert a["meta"].dataset == "geoplex-mini" and a["meta"].crs == "EPSG:32631" and a["meta"].split == "train"
    s2only = GeoPlexMini(modalities=("s2",), tiles=8)
    s2 = torch.stack([s2only[i]["s2"] for i in range(len(s2only))])
    valid = torch.stack([s2only[i]["s2_mask"] for i in range(len(s2only))]).expand_as(s2)
    # normalised scale (no clouds); since generator version 3 parcels differ more in brightness, vigour and timing,
    # so the 64 tiles spread more around the statistics of 12 (measured std 2.04)
    assert abs(float(s2[valid].mean())) < 0.5 and 0.3 < float(s2[valid].std()) < 2.5
    batch = collate([a, b])
    model = AnySat(size="test").eval()
    with torch.no_grad():
        out = model(batch, patch_size_m=20, output="tile")
    assert out.shape[0] == 2 and torch.isfinite(out).all()
    # cache: files written atomically, a new instance reads identical values back
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert any(f.endswith("_aerial.npz") for f in files) and not any(
        f.endswith(".tmp") or f.startswith(".") for f in files
    )
    again = GeoPlexMini(modalities=("aerial", "s2", "s1-asc"), tiles=8, cache_dir=tmp_path)
    for k in ("aerial", "s2", "s1-asc", "s2_mask"):
        assert torch.equal(again[1][k], b[k])


def test_registered_without_root():
    """get_dataset builds the world from keywords; the class is the one registered; no root is needed."""
    ds = get_dataset(
        "geoplex-mini", seed=2, modalities=("s2",), tiles=(4, 5), tile_m=30.0, split="all", normalize=False
    )
    assert isinstance(ds, GeoPlexMini) and dataset_class("geoplex-mini") is GeoPlexMini
    assert len(get_dataset("geoplex-mini", normalize=False)) > 0  # no root needed
    assert ds.root is None and len(ds) == 20 and ds[0]["s2"].shape[-2:] == (3, 3)
    assert "geoplex-mini" in list_datasets()
    same = GeoPlexMini(seed=2, modalities=("s2",), tiles=(4, 5), tile_m=30.0, split="all", normalize=False)
    assert torch.equal(ds[7]["s2"], same[7]["s2"])


def test_bad_arguments_raise_specific_errors():
    with pytest.raises(ExtentMismatchError, match="30"):
        GeoPlexMini(modalities=("l7",), tile_m=50, normalize=False)
    with pytest.raises(UnknownModalityError):
        GeoPlexMini(modalities=("s3",), normalize=False)
    with pytest.raises(ConfigError, match="task"):
        GeoPlexMini(task="detection", normalize=False)
    with pytest.raises(ConfigError, match="split"):
        GeoPlexMini(split="holdout", normalize=False)
    with pytest.raises(IndexError):
        GeoPlexMini(modalities=("s2",), tiles=2, split="all", normalize=False)[4]
    with pytest.raises(ConfigError, match="normalize"):
        GeoPlexMini(modalities=("s2",), tiles=2, normalize="yes")
    with pytest.raises(TypeError):  # every argument is a keyword: no root, no positional seed
        GeoPlexMini(0)
