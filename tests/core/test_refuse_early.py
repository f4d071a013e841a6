"""Refuse early (#9, point 7 and parts of 8): memory bombs are refused before anything is allocated or written, an
unreachable Dask scheduler is named within seconds, an all-nodata scene is refused before any output, and degenerate
analysis inputs (one class, 1-3 cells) get a clear error.

Refusal times are printed (``pytest -s``) as a report, never asserted; what is asserted is that nothing was written.
"""

from __future__ import annotations

import math
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import xarray as xr
from affine import Affine

import anysat_core as ac
from anysat_core import AnySat, RasterSource, infer_scene, open_rasters
from anysat_core.data.geoplex_mini import GeoPlexMini
from anysat_core.data.raster.survey import has_valid_data
from anysat_core.errors import (
    CheckpointMismatchError,
    ConfigError,
    EmptyTileError,
    InputShapeError,
    MemoryLimitError,
    ProbeError,
    SchedulerUnreachableError,
)
from anysat_core.inference import runners
from anysat_core.memory import ENV_VAR, check_memory, memory_limit_bytes, physical_memory_bytes, set_memory_share
from anysat_core.model.checkpoint import FORMAT
from tests.helpers.scenes import C_S2, UTM, X0, Y0, write_s2_series


@pytest.fixture(autouse=True)
def default_share(monkeypatch):
    """Every test starts from the default share (no variable, no set_memory_share) and leaves it so."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    set_memory_share(None)
    yield
    set_memory_share(None)


def refused(what: str, call, error: type[BaseException] = MemoryLimitError) -> pytest.ExceptionInfo:
    """Run ``call`` expecting ``error``; print how long the refusal took (a report, not a check)."""
    t0 = time.perf_counter()
    with pytest.raises(error) as info:
        call()
    print(f"\n{what}: refused in {1000 * (time.perf_counter() - t0):.1f} ms: {type(info.value).__name__}")
    return info


def nothing_written(folder: Path, keep: set[str]) -> None:
    """``folder`` holds only ``keep`` (no output, no partial store, no temporary file)."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(keep)


# ------------------------------------------------------------------------------------------- the memory limit
def test_memory_share_from_variable_and_setter(monkeypatch):
    phys = physical_memory_bytes()
    assert phys is not None  # Linux: sysconf knows it
    total = phys[0]
    assert memory_limit_bytes() == int(0.5 * total)  # default: half
    monkeypatch.setenv(ENV_VAR, "0.25")
    assert memory_limit_bytes() == int(0.25 * total)
    set_memory_share(1.0)  # the setter wins over the variable
    assert memory_limit_bytes() == total
    set_memory_share(None)  # back to the variable
    assert memory_limit_bytes() == int(0.25 * total)
    for bad in ("abc", "0", "-0.5", "1.5", "nan", "inf"):
        monkeypatch.setenv(ENV_VAR, bad)
        with pytest.raises(ConfigError, match=rf"{ENV_VAR}=.*expected .* number in \(0, 1\]"):
            memory_limit_bytes()
    monkeypatch.delenv(ENV_VAR)
    for bad in (0, -1, 1.01, math.nan, True, "0.5", None.__class__):
        with pytest.raises(ConfigError, match=r"set_memory_share\(share\)="):
            set_memory_share(bad)  # type: ignore[arg-type]
    assert memory_limit_bytes() == int(0.5 * total)  # a refused value changes nothing
    assert ac.check_memory is check_memory and ac.set_memory_share is set_memory_share


def test_check_memory_message():
    limit = memory_limit_bytes()
    check_memory(limit * 0.9, "a small request", "no fix needed")  # under the limit: nothing happens
    with pytest.raises(MemoryLimitError, match=r"^a big request needs ~[\d.]+ [KMGTP]iB; this machine allows") as e:
        check_memory(limit * 4, "a big request", "ask for less")
    msg = str(e.value)
    assert "50 % of" in msg and ENV_VAR in msg and msg.endswith("; ask for less")
    assert isinstance(e.value, MemoryError)  # the builtin it refines
    set_memory_share(0.9)
    check_memory(limit * 1.5, "the same request", "-")  # allowed with a larger share
    with pytest.raises(MemoryLimitError, match=r"90 % of .*set by set_memory_share\(\)"):
        check_memory(limit * 4, "a big request", "ask for less")


# ------------------------------------------------------------------------------------------- checkpoints
def _save_with_config(path: Path, config: dict, state_dict: dict) -> Path:
    torch.save({"format": FORMAT, "format_version": 1, "config": config, "state_dict": state_dict}, path)
    return path


def test_checkpoint_with_a_huge_config_is_refused_before_building(tmp_path):
    cfg = AnySat(size="test").config.to_dict() | {"size": "custom", "embed_dim": 64 * 15625, "num_heads": 15625}
    path = _save_with_config(tmp_path / "bomb.pth", cfg, {"cls_token": torch.zeros(1, 1, 64)})
    assert path.stat().st_size < 4096  # a few KB that declare a ~100 TiB model
    info = refused("checkpoint with embed_dim=1e6", lambda: AnySat.from_checkpoint(path))
    msg = str(info.value)
    assert "embed_dim 1000000" in msg and "bomb.pth" in msg and "the file's tensors hold 256 bytes" in msg
    nothing_written(tmp_path, {"bomb.pth"})


def test_checkpoint_config_that_does_not_match_its_tensors(tmp_path):
    model = AnySat(size="test")
    sd = model.state_dict()
    wider = _save_with_config(tmp_path / "wider.pth", model.config.to_dict() | {"embed_dim": 128}, sd)
    info = refused("config wider than the tensors", lambda: AnySat.from_checkpoint(wider), CheckpointMismatchError)
    e = info.value
    assert ("cls_token", (1, 1, 64), (1, 1, 128)) in e.mismatched
    assert "does not describe its tensors" in str(e) and "AnySat.save()" in str(e)
    deeper = _save_with_config(tmp_path / "deeper.pth", model.config.to_dict() | {"depth": 2}, sd)
    e = refused("config deeper than the tensors", lambda: AnySat.from_checkpoint(deeper), CheckpointMismatchError).value
    assert "blocks.1.attn.qkv.weight" in e.missing and "spatial_encoder.predictor_blocks.1.mlp.fc1.weight" in e.missing
    fewer = _save_with_config(tmp_path / "fewer.pth", model.config.to_dict() | {"modalities": ["s2"]}, sd)
    e = refused("config with fewer modalities", lambda: AnySat.from_checkpoint(fewer), CheckpointMismatchError).value
    assert any(k.startswith("projector_aerial.") for k in e.unexpected)
    # the matching config still loads, to the same weights
    same = _save_with_config(tmp_path / "same.pth", model.config.to_dict(), sd)
    loaded = AnySat.from_checkpoint(same)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in sd.items())


# ------------------------------------------------------------------------------------------- GeoPlex-mini
@pytest.mark.parametrize(
    "kwargs",
    [
        {"tiles": 200_000},  # a world of 4e10 tiles
        {"tiles": 2, "tile_m": 60_000.0},  # a 0.2 m aerial tile of 300 000 x 300 000 pixels
        {"tiles": 4, "parcel_m": 0.001},  # billions of parcels
    ],
    ids=["tiles", "tile_m", "parcel_m"],
)
def test_geoplex_mini_huge_grid_is_refused_before_generating(tmp_path, kwargs):
    cache = tmp_path / "cache"
    info = refused(f"GeoPlex-mini {kwargs}", lambda: GeoPlexMini(normalize=True, cache_dir=cache, **kwargs))
    assert "GeoPlex-mini with tiles=" in str(info.value) and "needs ~" in str(info.value)
    assert not cache.exists()
    with pytest.raises(ConfigError, match="tile_m=inf"):
        GeoPlexMini(tile_m=math.inf)


def test_geoplex_mini_default_is_within_limits():
    from anysat_core.data.geoplex_mini.dataset import memory_estimate

    est = memory_estimate(16, 16, 60.0, 120.0, ("aerial", "s2", "s1-asc"))
    assert 0 < sum(est.values()) < 256 * 2**20  # tens of MiB


# ------------------------------------------------------------------------------------------- scene inference
def test_huge_window_is_refused_before_any_output(tmp_path):
    paths = write_s2_series(tmp_path / "in")
    model = AnySat(size="test").eval()
    scene = open_rasters(RasterSource(paths, modality="s2"), tile_m=120)
    for given, out in ((scene, tmp_path / "features.tif"), (RasterSource(paths, modality="s2"), tmp_path / "f.zarr")):
        info = refused(
            f"infer_scene window_m=200000 on a {type(given).__name__} -> {out.suffix}",
            lambda given=given, out=out: infer_scene(
                model, given, patch_size_m=20, window_m=200_000, overlap_m=0, out=out, progress=False
            ),
        )
        msg = str(info.value)
        if given is scene:  # the plan's estimate (sources are refused already when opened with tile_m=window_m)
            assert "window_m=200000" in msg and "accumulator" in msg and "lower window_m (window_m=" in msg
        nothing_written(tmp_path, {"in"})  # neither the output nor a partial store beside it
    with pytest.raises(MemoryLimitError, match="in memory"):  # out=None: the result itself is counted
        ac.plan_scene(model, scene, patch_size_m=20, window_m=200_000, overlap_m=0, in_memory=True)


def test_plan_scene_counts_the_result_kept_in_memory(tmp_path):
    scene = open_rasters(RasterSource(write_s2_series(tmp_path), modality="s2"), tile_m=120)
    model = AnySat(size="test")
    plan = ac.plan_scene(model, scene, patch_size_m=20, window_m=120, overlap_m=0, in_memory=True)
    assert plan.n_windows == 6
    from anysat_core.inference.plan import scene_memory

    parts = scene_memory(
        model,
        scene,
        window_m=120,
        patch_size_m=20,
        n_features=128,
        window_cells=12,
        overlap_cells=0,
        panel_cells=36,
        grid_shape=(24, 36),
        batch_size=4,
        in_memory=True,
    )
    assert (
        parts["result"] == 4 * 128 * 24 * 36 and parts["accumulator"] == 4 * 258 * 12 * 36
    )  # sums, weights, valid fraction, output


def _write_s2(folder: Path, data: np.ndarray, nodata: float | None, name: str = "s2_20200110.tif") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    _, h, w = data.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=h,
        width=w,
        count=C_S2,
        dtype=data.dtype,
        crs=UTM,
        transform=Affine(10, 0, X0, 0, -10, Y0),
        nodata=nodata,
    ) as f:
        f.write(data)
    return path


@pytest.mark.parametrize("kind", ["uint16-nodata-0", "float32-nan"])
def test_all_nodata_scene_is_refused_before_any_output(tmp_path, kind):
    if kind == "uint16-nodata-0":
        data, nodata = np.zeros((C_S2, 24, 36), np.uint16), 0.0
    else:
        data, nodata = np.full((C_S2, 24, 36), np.nan, np.float32), None
    paths = [_write_s2(tmp_path / "in", data, nodata, f"s2_2020{m}10.tif") for m in ("01", "04")]
    model = AnySat(size="test").eval()
    out = tmp_path / "features.zarr"
    info = refused(
        f"all-nodata scene ({kind})",
        lambda: infer_scene(
            model,
            RasterSource(paths, modality="s2"),
            patch_size_m=20,
            window_m=120,
            overlap_m=0,
            out=out,
            progress=False,
        ),
        EmptyTileError,
    )
    assert "the scene has no valid pixel" in str(info.value) and "s2_20200110.tif" in str(info.value)
    nothing_written(tmp_path, {"in"})


def test_survey_finds_a_single_valid_pixel(tmp_path):
    data = np.zeros((C_S2, 24, 36), np.uint16)
    data[:, 23, 35] = 7  # one valid pixel, in the last row and column
    path = _write_s2(tmp_path, data, 0.0)
    scene = open_rasters(RasterSource([path], modality="s2", dates=["2020-01-10"]), tile_m=120, normalize=None)
    assert has_valid_data(scene)
    assert has_valid_data(scene, strip_bytes=1)  # one row at a time, from the middle out
    data[:, 23, 35] = 0
    empty = open_rasters(
        RasterSource([_write_s2(tmp_path / "b", data, 0.0)], modality="s2", dates=["2020-01-10"]),
        tile_m=120,
        normalize=None,
    )
    assert not has_valid_data(empty, strip_bytes=1)
    # with nodata= overriding the file's, zeros are data
    zeros = RasterSource([tmp_path / "b" / "s2_20200110.tif"], modality="s2", dates=["2020-01-10"], nodata=-1)
    assert has_valid_data(open_rasters(zeros, tile_m=120, normalize=None))


# ------------------------------------------------------------------------------------------- Dask scheduler
def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_unreachable_scheduler_is_named_within_seconds(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    address = f"tcp://127.0.0.1:{_closed_port()}"
    monkeypatch.setattr(runners, "CONNECT_TIMEOUT_S", 1.0)  # the module's setting (5 s by default)
    info = refused("unreachable scheduler", lambda: runners.connect_client(address), SchedulerUnreachableError)
    assert address in str(info.value) and "within 1 s" in str(info.value)
    assert isinstance(info.value, ConnectionError)
    paths = write_s2_series(tmp_path / "in")
    info = refused(
        "infer_scene(client=unreachable)",
        lambda: infer_scene(
            AnySat(size="test").eval(),
            RasterSource(paths, modality="s2"),
            patch_size_m=20,
            window_m=120,
            overlap_m=0,
            client=address,
            progress=False,
        ),
        SchedulerUnreachableError,
    )
    assert address in str(info.value)
    with pytest.raises(ConfigError, match=r"expected a distributed\.Client or the address"):
        runners.connect_client(object())
    with pytest.raises(ConfigError, match="connect_timeout_s=0"):
        runners.connect_client(address, 0)


# ------------------------------------------------------------------------------------------- analysis inputs
def _map(h: int, w: int, seed: int = 0) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    x0, y0, res = 500_000.0, 4_800_000.0, 10.0
    da = xr.DataArray(
        rng.normal(size=(8, h, w)).astype(np.float32),
        dims=("feature", "y", "x"),
        coords={"feature": np.arange(8), "y": y0 - res * (np.arange(h) + 0.5), "x": x0 + res * (np.arange(w) + 0.5)},
    )
    return da.rio.write_transform(Affine(res, 0.0, x0, 0.0, -res, y0)).rio.write_crs(UTM)


def test_fit_from_points_with_one_class():
    da = _map(4, 4)
    xs, ys = da.x.values, da.y.values
    with pytest.raises(ProbeError, match=r"hold only class 2; a probe needs labels of at least two classes") as e:
        ac.fit_from_points(da, [(xs[0], ys[0], 2), (xs[1], ys[1], 2), (xs[2], ys[3], 2)])
    assert "Add points or polygons of another class, e.g. (x, y, 0)" in str(e.value) and "3 label(s)" in str(e.value)
    probe = ac.fit_from_points(da, [(xs[0], ys[0], 2), (xs[3], ys[3], 0)])
    assert probe.n_fitted_ == 2


@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (1, 3)])
def test_pca_on_too_few_cells(shape):
    da = _map(*shape)
    n = shape[0] * shape[1]
    with pytest.raises(InputShapeError, match=rf"PCARGB.fit got {n} valid cell\(s\).*at least 4 cells"):
        ac.PCARGB().fit(da)


def test_pca_counts_valid_cells_and_works_from_four():
    da = _map(2, 3)
    holed = da.where(da.x < da.x.values[1])  # two valid cells of six
    with pytest.raises(InputShapeError, match=r"got 2 valid cell\(s\) \(6 cell\(s\) in 1 map\(s\), 4 masked\)"):
        ac.PCARGB().fit(holed)
    rgb = ac.PCARGB(percentiles=(0, 100)).fit_transform(_map(2, 2))  # four cells: three axes of variation
    assert rgb.shape == (3, 2, 2)
    assert all(float(rgb.sel(band=b).std()) > 0.1 for b in ("r", "g", "b"))  # no flat grey channel
    with pytest.raises(InputShapeError, match="max_samples"):
        ac.PCARGB(max_samples=3)
