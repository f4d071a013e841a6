"""The writers: outputs get the permissions of the process umask, never a partial file, no clobbering."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import xarray as xr

from anysat_core.data.normalize import write_stats
from anysat_core.errors import OutputExistsError
from anysat_core.modalities import NormStats
from anysat_core.writers import write_json, write_png, write_zarr


def _rgb() -> xr.DataArray:
    return xr.DataArray(
        np.full((3, 4, 5), 0.5), dims=("band", "y", "x"), coords={"y": np.arange(4.0), "x": np.arange(5.0)}
    )


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_outputs_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        files = [
            write_png(_rgb(), tmp_path / "a.png"),
            write_json({"k": 1}, tmp_path / "b.json"),
        ]
        write_stats(tmp_path / "c.json", NormStats(mean=(0.0,), std=(1.0,), source="test"))
        files.append(tmp_path / "c.json")
        store = write_zarr(_rgb().rename("rgb"), tmp_path / "d.zarr")
    finally:
        os.umask(old)
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f
    assert stat.S_IMODE(store.stat().st_mode) == 0o777 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.json", "c.json", "d.zarr"]  # no temporary left


def test_scene_exports_honour_the_umask(tmp_path):
    from anysat_core import AnySat, RasterSource, infer_scene
    from tests.helpers.scenes import write_s2_series

    files = write_s2_series(tmp_path / "s2", height=12, width=12)
    model = AnySat(size="test")
    old = os.umask(0o027)
    try:
        outs = [
            infer_scene(
                model,
                RasterSource(files, modality="s2"),
                patch_size_m=20,
                window_m=120,
                overlap_m=0,
                output="patch",
                out=tmp_path / f"scene{suffix}",
                progress=False,
            )
            for suffix in (".tif", ".zarr")
        ]
    finally:
        os.umask(old)
    assert stat.S_IMODE(outs[0].stat().st_mode) == 0o640  # the COG
    assert stat.S_IMODE(outs[1].stat().st_mode) == 0o750  # the Zarr store (a folder)


def test_no_clobber_without_overwrite(tmp_path):
    path = write_png(_rgb(), tmp_path / "a.png")
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        write_png(_rgb() * 0, path)
    assert path.read_bytes() == before
    write_png(_rgb() * 0, path, overwrite=True)
    assert path.read_bytes() != before
    store = write_zarr(_rgb().rename("rgb"), tmp_path / "a.zarr")
    with pytest.raises(OutputExistsError):
        write_zarr(_rgb().rename("rgb"), store)
