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


# ---------------------------------------------------------------- found by the hostile matrix and real rasters (#9)
def _write_tif(path, data, *, res, crs="EPSG:32618", nodata=None, colorinterp=None):
    """A GeoTIFF like rasterio's RGB.byte.tif: north-up, ``res`` m pixels, optional nodata and colour bands."""
    import rasterio
    from affine import Affine

    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[-1],
        height=data.shape[-2],
        count=data.shape[0],
        dtype=data.dtype,
        crs=crs,
        transform=Affine(res, 0, 101985.0, 0, -res, 2826915.0),
        nodata=nodata,
    ) as f:
        f.write(data)
        if colorinterp is not None:
            f.colorinterp = colorinterp
    return path


def test_a_raster_far_coarser_than_its_modality_is_refused_at_once(tmp_path):
    # RGB.byte.tif (300 m pixels) given as 1 m SPOT: was a 300x upsampling and len(scene) ran for hours
    path = _write_tif(tmp_path / "rgb.tif", np.full((3, 40, 40), 7, np.uint8), res=300.0, nodata=0)
    source = ac.RasterSource(path, modality="spot")
    with pytest.raises(InputShapeError, match=r"300 m pixels but spot is a 1 m modality.*resampling='bilinear'"):
        ac.open_rasters(source, tile_m=60)
    with pytest.raises(InputShapeError, match="upsampled 300x"):
        ac.infer_scene(ac.AnySat(size="test"), source, patch_size_m=10, window_m=60, overlap_m=0, progress=False)
    assert list(tmp_path.iterdir()) == [path]
    # an explicit resampling= asks for it
    scene = ac.open_rasters(ac.RasterSource(path, modality="spot", resampling="bilinear"), tile_m=60)
    assert scene.tile(10, 10)["spot"].shape == (3, 60, 60)


def test_colour_bands_are_found_by_name_through_their_colour_interpretation(tmp_path):
    from rasterio.enums import ColorInterp as CI

    # like RGB.byte.tif / RGBA.uint16.tif: no band descriptions, only GDAL colour interpretations (here B, G, R, alpha)
    data = np.stack([np.full((20, 20), v, np.uint16) for v in (1, 2, 3, 255)])
    path = _write_tif(tmp_path / "bgra.tif", data, res=1.0, colorinterp=[CI.blue, CI.green, CI.red, CI.alpha])
    scene = ac.open_rasters(ac.RasterSource(path, modality="spot", bands=["R", "G", "B"]), tile_m=20, normalize=None)
    assert scene.tile(0, 0)["spot"][:, 0, 0].tolist() == [3.0, 2.0, 1.0]  # was: "band name 'R' not found"
    with pytest.raises(ac.ChannelMismatchError, match=r"'NIR' not found; its bands are named \['blue', 'green'"):
        ac.open_rasters(ac.RasterSource(path, modality="naip", bands=["R", "G", "B", "NIR"]), tile_m=20)
    # without bands=, file order (GDAL labels most 3-4 band byte files RGB(A), whatever they hold)
    scene = ac.open_rasters(ac.RasterSource(path, modality="naip"), tile_m=20, normalize=None)
    assert scene.tile(0, 0)["naip"][:, 0, 0].tolist() == [1.0, 2.0, 3.0, 255.0]


@pytest.mark.parametrize("resampling", [99, True, 1.5, [1]])
def test_bad_resampling_values(resampling):
    with pytest.raises(ac.ConfigError, match="resampling="):
        ac.RasterSource(["s2.tif"], modality="s2", resampling=resampling)


@pytest.mark.parametrize(
    ("stats", "match"),
    [
        ({"mean": [0] * 10, "std": [1e-300] + [1] * 9}, "float32 range"),  # was accepted: NaN tiles
        ({"mean": [1e39] + [0] * 9, "std": [1] * 10}, "float32 range"),
        ({"mean": [True] + [0] * 9, "std": [1] * 10}, "expected NormStats"),
    ],
)
def test_statistics_outside_float32_or_booleans(files, stats, match):
    with pytest.raises(ac.ConfigError, match=match):
        ac.open_rasters(ac.RasterSource(files, modality="s2"), tile_m=120, normalize={"s2": stats})


class _Classes:
    def __init__(self, classes, proba=None):
        self.classes_ = np.asarray(classes)
        self._proba = proba

    def predict_proba(self, X):
        k = len(self.classes_)
        return np.full((len(X), k), np.nan if self._proba == "nan" else 1 / k)


@pytest.mark.parametrize(
    ("probe", "match"),
    [
        (_Classes(["forest", "water"]), "classes_ \\['forest', 'water'\\].*LabelEncoder"),
        (_Classes([0, 70000]), "0..32767"),
        (_Classes([-1, 0]), "0..32767"),
        (_Classes([0, 1], proba="nan"), "finite"),
    ],
)
def test_probes_with_unusable_classes_or_probabilities(files, tmp_path, probe, match):
    with pytest.raises(ac.OutputError, match=match):
        ac.infer_scene(
            ac.AnySat(size="test"),
            ac.RasterSource(files, modality="s2"),
            patch_size_m=20,
            window_m=120,
            overlap_m=0,
            output="patch",
            probe=probe,
            out=tmp_path / "p.tif",
            progress=False,
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kw", "error"),
    [({"callback": 5}, ac.ConfigError), ({"out": 123}, ac.OutputError), ({"out": ""}, ac.OutputError)],
)
def test_callback_and_out_are_checked_before_any_work(files, tmp_path, kw, error):
    kw = {"out": tmp_path / "o.tif", **kw}
    with pytest.raises(error, match="expected"):
        ac.infer_scene(
            ac.AnySat(size="test"),
            ac.RasterSource(files, modality="s2"),
            patch_size_m=20,
            window_m=120,
            overlap_m=0,
            progress=False,
            **kw,
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", [b"", b"II*\x00" + bytes(100), b"hello world"])
def test_a_checkpoint_that_is_not_a_torch_file(tmp_path, content):
    path = tmp_path / "w.pth"
    path.write_bytes(content)
    with pytest.raises(ac.CheckpointError, match=r"is not a PyTorch file.*\.pth file"):
        ac.AnySat.from_checkpoint(path)
