"""The ``anysat`` command line (anysat_core.cli, ``python -m anysat_core``): arguments become the parameters of
open_rasters + infer_scene, package errors become ``error: ...`` with exit code 2, an interrupt exits 130.

The scene: one date of S2 written by the tests, 12 x 12 pixels at 10 m (one 120 m window); the model: the test-size
AnySat saved to a checkpoint file.  Most runs are in-process (``main([...])``); one subprocess prints ``--help`` and
a slow one runs the ``anysat`` console script end to end.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import rioxarray
import torch
import xarray as xr
from sklearn.linear_model import LogisticRegression

import anysat_core.data.raster as raster_module
import anysat_core.inference as inference_module
from anysat_core import AnySat, RasterSource, infer_scene, open_rasters
from anysat_core.cli import main
from tests.helpers.scenes import DATES, X0, Y0, write_s2_series

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[Path]:
    return write_s2_series(tmp_path_factory.mktemp("cli_scene"), height=12, width=12, dates=DATES[:1])


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("cli_weights") / "test.pth"
    AnySat(size="test").save(path)
    return path


def _args(files: list[Path], weights: Path, out: Path, *extra: str) -> list[str]:
    return [
        "infer",
        "--raster",
        f"s2={files[0].parent}/s2_*.tif",
        "--weights",
        str(weights),
        "--patch-size-m",
        "20",
        "--window-m",
        "120",
        "--output",
        "patch",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


@pytest.fixture(scope="module")
def default_run(files, weights, tmp_path_factory) -> tuple[Path, str]:
    """A run with the default normalisation to a Zarr store: (output, stdout)."""
    out = tmp_path_factory.mktemp("cli_out") / "features.zarr"
    buf = io.StringIO()  # capsys is function-scoped
    with contextlib.redirect_stdout(buf):
        assert main(_args(files, weights, out)) == 0
    return out, buf.getvalue()


# ------------------------------------------------------------------------------------------------ runs
def test_run_prints_the_output_and_a_summary(default_run):
    out, stdout = default_run
    lines = stdout.splitlines()
    assert lines[0] == str(out)
    assert lines[1].startswith("6 x 6 cells, 64 features (patch, fp32)")  # one 120 m window of 20 m patches
    assert "normalised with s2: treesatai-ts" in lines[1] and lines[1].endswith(" s")
    da = xr.open_zarr(out)["anysat_features"]
    assert da.sizes == {"feature": 64, "y": 6, "x": 6}


def test_the_result_equals_open_rasters_plus_infer_scene(default_run, files, weights, tmp_path):
    out, _ = default_run
    scene = open_rasters(RasterSource(files, modality="s2"), tile_m=120, patch_size_m=20)
    direct = infer_scene(
        AnySat.from_checkpoint(weights),
        scene,
        patch_size_m=20,
        window_m=120,
        overlap_m=0,
        output="patch",
        out=tmp_path / "direct.zarr",
        progress=False,
    )
    a, b = xr.open_zarr(out), xr.open_zarr(direct)
    np.testing.assert_array_equal(a["anysat_features"].values, b["anysat_features"].values)
    assert a.attrs == b.attrs


def test_normalize_none_gives_other_features(default_run, files, weights, tmp_path, capsys):
    out, _ = default_run
    raw = tmp_path / "raw.tif"
    assert main(_args(files, weights, raw, "--normalize", "none")) == 0
    assert "normalised with s2: none (raw file values)" in capsys.readouterr().out
    with rioxarray.open_rasterio(raw) as cog:
        raw_values = cog.values
    normalised = xr.open_zarr(out)["anysat_features"].values
    assert raw_values.shape == normalised.shape
    assert not np.allclose(raw_values, normalised)


def test_a_probe_file_adds_classes(files, weights, tmp_path, capsys):
    rng = np.random.default_rng(0)
    probe = LogisticRegression(max_iter=200).fit(rng.normal(size=(40, 64)), np.arange(40) % 3)
    joblib.dump(probe, tmp_path / "probe.joblib")
    out = tmp_path / "classes.zarr"
    assert main(_args(files, weights, out, "--probe", str(tmp_path / "probe.joblib"))) == 0
    ds = xr.open_zarr(out)
    assert set(np.unique(ds["prediction"].values)) <= {0, 1, 2}
    assert ds.attrs["probe"] == "LogisticRegression"


# ------------------------------------------------------------------------------------------------ arguments
class _Called(Exception):
    pass


@pytest.fixture
def recorded(monkeypatch) -> dict[str, Any]:
    """open_rasters and infer_scene replaced by recorders: what the command line passes them."""
    calls: dict[str, Any] = {}

    def fake_open(sources, **kw):
        calls["sources"], calls["open"] = sources, kw
        return open_rasters(sources, **kw)

    def fake_infer(model, scene, **kw):
        calls["model"], calls["infer"] = model, kw
        raise _Called

    monkeypatch.setattr(raster_module, "open_rasters", fake_open)
    monkeypatch.setattr(inference_module, "infer_scene", fake_infer)
    return calls


def test_every_option_reaches_its_parameter(recorded, files, weights, tmp_path):
    argv = _args(files, weights, tmp_path / "o.tif")
    argv += ["--overlap-m", "40", "--output-modality", "s2", "--batch-size", "2", "--buffer-mb", "8"]
    argv += ["--gdal-cache-mb", "32", "--dask", "tcp://127.0.0.1:1", "--overwrite", "--no-resume"]
    argv += ["--normalize", "scene", "--crs", "EPSG:32631", "--origin", str(X0), str(Y0)]
    argv += ["--bands", "s2=1,2,3,4,5,6,7,8,9,10", "--dates", "s2=2020-01-10", "--nodata", "-9999"]
    argv += ["--resampling", "s2=nearest", "--assume-crs", "EPSG:32631", "--min-valid-fraction", "0.25"]
    argv += ["--precision", "auto", "--device", "cpu"]
    with pytest.raises(_Called):
        main(argv)
    (src,) = recorded["sources"]
    assert src.modality == "s2" and [Path(p) for p in src.data] == files
    assert list(src.bands) == list(range(1, 11)) and list(src.dates) == ["2020-01-10"]
    assert src.nodata == -9999 and src.resampling.name == "nearest" and src.crs == "EPSG:32631"
    assert recorded["open"] == {
        "tile_m": 120.0,
        "patch_size_m": 20.0,
        "normalize": "scene",
        "crs": "EPSG:32631",
        "origin": (X0, Y0),
    }
    kw = recorded["infer"]
    assert kw == {
        "patch_size_m": 20.0,
        "window_m": 120.0,
        "overlap_m": 40.0,
        "output": "patch",
        "output_modality": "s2",
        "batch_size": 2,
        "out": str(tmp_path / "o.tif"),
        "overwrite": True,
        "resume": False,
        "progress": False,
        "client": "tcp://127.0.0.1:1",
        "probe": None,
        "buffer_mb": 8.0,
        "gdal_cache_mb": 32.0,
        "min_valid_fraction": 0.25,
        "precision": "auto",
    }
    assert isinstance(recorded["model"], AnySat) and not recorded["model"].training


def test_defaults_are_the_library_defaults(recorded, files, weights, tmp_path):
    with pytest.raises(_Called):
        main(_args(files, weights, tmp_path / "o.zarr", "--normalize", "NONE"))
    assert recorded["open"]["normalize"] is None and recorded["open"]["origin"] is None
    kw = recorded["infer"]
    assert kw["overlap_m"] == 0 and kw["resume"] is True and kw["overwrite"] is False and kw["client"] is None
    assert "min_valid_fraction" not in kw  # infer_scene's own default


def test_size_gives_a_random_model_with_a_warning(recorded, files, tmp_path, capsys):
    argv = _args(files, Path("x"), tmp_path / "o.tif")
    i = argv.index("--weights")
    argv[i : i + 2] = ["--size", "test"]
    with pytest.raises(_Called):
        main(argv)
    assert "RANDOM weights" in capsys.readouterr().err
    assert recorded["model"].size == "test"


# ------------------------------------------------------------------------------------------------ errors
def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and "Traceback" not in captured.err
    return captured.err


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"--patch-size-m": "15"}, "patch_size_m= is --patch-size-m"),  # PatchSizeError, with the option named
        ({"--raster": "s2=/nowhere/*.tif"}, "no file matches"),
        ({"--raster": "s2=/nowhere/a.tif"}, "does not exist"),
        ({"--raster": "s9=/nowhere/a.tif"}, "s9"),  # UnknownModalityError
        ({"--raster": "s2"}, "expected MODALITY=VALUE"),
        ({"--weights": "/nowhere/w.pth"}, "does not exist"),  # CheckpointError
        ({"--out": "features.png"}, "'.tif'"),  # OutputError
        ({"--normalize": "no-such-stats"}, "no-such-stats"),
    ],
)
def test_bad_inputs_are_errors_without_traceback(change, expected, files, weights, tmp_path, capsys):
    argv = _args(files, weights, tmp_path / "o.tif")
    for option, value in change.items():
        if option in argv:
            argv[argv.index(option) + 1] = value
        else:
            argv += [option, value]
    assert expected in _error(argv, capsys)
    assert not (tmp_path / "o.tif").exists()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--bands", "s1=1,2"], "'s1', which has no --raster"),
        (["--nodata", "s2=zero"], "expected a number"),
        (["--nodata", "0", "--nodata", "s2=1"], "given twice"),
        (["--dates", "s2=2020-13-40"], "2020-13-40"),
        (["--resampling", "cubic-ish"], "cubic-ish"),
        (["--probe", "/nowhere/probe.joblib"], "does not exist"),
    ],
)
def test_bad_options_are_errors_without_traceback(extra, expected, files, weights, tmp_path, capsys):
    assert expected in _error(_args(files, weights, tmp_path / "o.tif", *extra), capsys)


def test_a_damaged_probe_file_is_an_error(files, weights, tmp_path, capsys):
    (tmp_path / "probe.joblib").write_bytes(b"not a pickle")
    err = _error(_args(files, weights, tmp_path / "o.tif", "--probe", str(tmp_path / "probe.joblib")), capsys)
    assert "cannot load the probe" in err


def test_usage_errors_are_argparse_errors(files, weights, tmp_path, capsys):
    argv = _args(files, weights, tmp_path / "o.tif")
    with pytest.raises(SystemExit) as e:
        main(argv[: argv.index("--out")])  # --out missing
    assert e.value.code == 2 and "--out" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main([*argv, "--size", "tiny"])  # --weights and --size
    assert e.value.code == 2
    assert main([]) == 2  # no command: the help, on stderr


def test_an_interrupt_exits_130_and_says_how_to_resume(monkeypatch, files, weights, tmp_path, capsys):
    def interrupted(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(inference_module, "infer_scene", interrupted)
    assert main(_args(files, weights, tmp_path / "o.tif")) == 130
    err = capsys.readouterr().err
    assert ".o.tif.partial.zarr" in err and "resume" in err


# ------------------------------------------------------------------------------------------------ processes
def test_python_m_anysat_core_infer_help():
    r = subprocess.run(
        [sys.executable, "-m", "anysat_core", "infer", "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    for option in ("--raster", "--weights", "--patch-size-m", "--window-m", "--overlap-m", "--out", "--probe"):
        assert option in r.stdout
    assert "examples:" in r.stdout and "anysat infer --raster" in r.stdout


@pytest.mark.slow
def test_console_script_end_to_end(files, weights, tmp_path):
    exe = shutil.which("anysat", path=os.path.dirname(sys.executable)) or shutil.which("anysat")
    if exe is None:
        pytest.skip("the anysat console script is not installed (pip install -e .)")
    out = tmp_path / "features.tif"
    argv = _args(files, weights, out, "--overlap-m", "40")
    argv[argv.index("--output") + 1] = "dense"
    r = subprocess.run([exe, *argv], check=False, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == str(out)
    with rioxarray.open_rasterio(out) as cog:
        assert cog.sizes["band"] == 128 and cog.sizes["y"] == 12 and np.isfinite(cog.values).all()
    r = subprocess.run(
        [exe, *argv], check=False, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )  # exists: refused
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr


def test_shipped_weights_by_name(tmp_path, capsys) -> None:
    """``--weights geoplex-mini`` loads the checkpoint shipped in the package (offline)."""
    from anysat_core.cli import _model, build_parser

    args = build_parser().parse_args(
        ["infer", "--raster", "s2=x.tif", "--weights", "geoplex-mini", "--patch-size-m", "20", "--window-m", "120",
         "--out", str(tmp_path / "o.tif")]
    )  # fmt: skip
    model = _model(args)
    assert model.modalities == ("s2", "s1-asc") and model.embed_dim == 256
