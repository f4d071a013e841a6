"""Hostile values on user-input paths end in a specific AnySatError (never a bare ValueError/TypeError/IndexError)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import xarray as xr

import anysat_core as ac
from anysat_core.errors import AnySatError, InputShapeError, PatchSizeError, ProbeError, TileIndexError
from tests.helpers.scenes import write_s2_series


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_s2_series(tmp_path_factory.mktemp("s2"), height=12, width=12)


@pytest.mark.parametrize("patch", [math.nan, "20", True, -20])
def test_bad_patch_sizes_of_scenes(files, patch):
    source = ac.RasterSource(files, modality="s2")
    with pytest.raises(PatchSizeError, match="patch_size_m="):
        ac.open_rasters(source, tile_m=120, patch_size_m=patch)
    with pytest.raises(PatchSizeError, match="patch_size_m="):
        ac.infer_scene(ac.AnySat(size="test"), source, patch_size_m=patch, window_m=120, overlap_m=0, progress=False)


@pytest.mark.parametrize("where", [(5, 0), (0, -1), ("a", 0), (0.5, 0)])
def test_tile_positions_outside_the_grid(files, where):
    scene = ac.open_rasters(ac.RasterSource(files, modality="s2"), tile_m=60)
    with pytest.raises(TileIndexError, match="outside the 2 x 2 tile grid") as info:
        scene.tile(*where)
    assert isinstance(info.value, IndexError)
    with pytest.raises(TileIndexError, match="out of range"):
        scene[len(scene)]


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: ac.PCARGB(seed="a"), InputShapeError),
        (lambda: ac.PCARGB(max_samples=1.5), InputShapeError),
        (lambda: ac.TileProbe(max_iter="a"), ProbeError),
        (lambda: ac.TileProbe(C=True), ProbeError),
        (lambda: ac.TileProbe(cv=1), ProbeError),
        (lambda: ac.PixelProbe(3, seed="x"), ProbeError),
        (lambda: ac.PixelProbe(3, C=math.inf), ProbeError),
    ],
)
def test_bad_analysis_settings(make, error):
    with pytest.raises(error, match="expected"):
        make()


def test_a_custom_model_with_the_wrong_output_shape(files):
    class Wrong(torch.nn.Module):
        config = ac.AnySat(size="test").config

        def forward(self, batch, patch_size_m, output, output_modality=None):
            return torch.zeros(batch["s2"].shape[0], 2, 2, 64)

    with pytest.raises(AnySatError, match="the model returned a window output of shape"):
        ac.infer_scene(
            Wrong(),
            ac.RasterSource(files, modality="s2"),
            patch_size_m=20,
            window_m=120,
            overlap_m=0,
            output="patch",
            progress=False,
        )


def test_kmeans_settings():
    fmap = xr.DataArray(np.random.default_rng(0).normal(size=(4, 5, 5)), dims=("feature", "y", "x"))
    for bad in ({"k": 0}, {"k": 2, "n_init": 0}, {"k": 2, "seed": "s"}):
        with pytest.raises(InputShapeError, match="expected"):
            ac.kmeans_map(fmap, **bad)


@pytest.mark.parametrize("patch", [math.nan, math.inf, "20"])
def test_bad_patch_sizes_of_the_model(patch):
    with pytest.raises(PatchSizeError, match="expected a number of metres"):
        ac.AnySat(size="test")(ac.random_batch(["s2"]), patch_size_m=patch)


def test_probes_in_scene_inference_are_checked_before_any_work(files, tmp_path):
    from sklearn.linear_model import LogisticRegression

    model = ac.AnySat(size="test")
    source = ac.RasterSource(files, modality="s2")
    kw = {"patch_size_m": 20, "window_m": 120, "overlap_m": 0, "output": "patch", "progress": False}
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 64)), np.arange(40) % 3
    for probe in (
        ac.TileProbe("multiclass").fit(X, y),
        ac.PixelProbe(3).fit_pixels(X, y),
        LogisticRegression().fit(X, y),
    ):
        ds = ac.infer_scene(model, source, probe=probe, **kw)
        assert set(np.unique(ds["prediction"].values)) <= {0, 1, 2} and ds.attrs["probe"] == type(probe).__name__
    bad = [object(), ac.PixelProbe(3), LogisticRegression(), ac.TileProbe("multiclass").fit(X[:, :8], y)]
    for probe in bad:  # no predict_proba, not fitted (ours and scikit-learn's), fitted on another width
        out = tmp_path / f"{type(probe).__name__}.zarr"
        with pytest.raises(ac.OutputError, match="probe"):
            ac.infer_scene(model, source, probe=probe, out=out, **kw)
        assert list(tmp_path.iterdir()) == [], "nothing may be written before the probe is accepted"


@pytest.mark.parametrize(
    "content",
    ['{"mean": [0, 0], "std": [1, 0]}', '{"mean": [0, NaN], "std": [1, 1]}', '{"mean": "ab", "std": [1, 1]}', "[1, 2]"],
)
def test_statistics_files_are_validated(tmp_path, content):
    from anysat_core.data.normalize import read_stats

    path = tmp_path / "NORM_s1-asc_patch.json"
    path.write_text(content)
    with pytest.raises(ac.CorruptFileError, match=r"NORM_s1-asc_patch\.json"):
        read_stats(path, "s1-asc")


def test_user_statistics_are_validated():
    from anysat_core.data.normalize import Normalize

    with pytest.raises(ac.ConfigError, match="std 0"):
        Normalize({"s1-asc": ac.NormStats(mean=(0.0, 0.0), std=(1.0, 0.0), source="mine")})


@pytest.mark.parametrize("nodata", ["zero", [0, 1], True])
def test_nodata_must_be_a_number(nodata):
    with pytest.raises(ac.ConfigError, match="nodata="):
        ac.RasterSource(["s2.tif"], modality="s2", nodata=nodata)


@pytest.mark.parametrize("config", [{"embed_dim": "64"}, {"depth": 1.5}, {"mlp_ratio": "4"}, {"attention": 3}])
def test_checkpoint_configs_of_the_wrong_type(tmp_path, config):
    model = ac.AnySat(size="test")
    path = tmp_path / "c.pth"
    payload = {"format": "anysat_core", "format_version": 1, "state_dict": model.state_dict()}
    torch.save({**payload, "config": {**model.config.to_dict(), **config}}, path)
    with pytest.raises(ac.ConfigError, match=next(iter(config))):
        ac.AnySat.from_checkpoint(path)
