"""Every file the package writes: GeoTIFF, Zarr, PNG, torch checkpoints and JSON, all on top of :func:`atomic_write`.

A writer puts its output under a temporary name in the destination folder and renames it into place, so a crash, a
full disk or a kill never leaves a partial file under the final name nor a temporary file behind, and an existing
output is replaced only by a complete one (and only with ``overwrite=True``).  Failures of the operating system
(missing or read-only folder, full disk, file size limit) become :class:`~anysat_core.errors.OutputWriteError`
naming the path.  Outputs get the permissions the process umask gives a new file (``0o666 & ~umask``).

xarray, rioxarray, zarr, PIL and torch are imported by the writers that need them, so importing this module is cheap
(the model's checkpoint code uses it without pulling in xarray).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from anysat_core.errors import (
    AnySatError,
    InputShapeError,
    MissingCRSError,
    OutputError,
    OutputExistsError,
    OutputWriteError,
)

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "FEATURES_NAME",
    "atomic_write",
    "chained_os_error",
    "check_destination",
    "grid_mapping_attrs",
    "remove_path",
    "replace_path",
    "save_torch",
    "set_default_mode",
    "write_geotiff",
    "write_json",
    "write_png",
    "write_zarr",
]

#: Name of the feature variable in every DataArray and store the package writes.
FEATURES_NAME = "anysat_features"


# ----------------------------------------------------------------------------------------------- atomic output
def chained_os_error(e: BaseException) -> OSError | None:
    """``e`` if it is an OSError, else the first OSError it was raised from or while handling (e.g. torch.save
    reports a failed write of its file object as a RuntimeError raised while handling the OSError)."""
    x: BaseException | None = e
    for _ in range(8):
        if x is None or isinstance(x, OSError):
            return x
        x = x.__cause__ or x.__context__
    return None


def set_default_mode(path: str | os.PathLike[str]) -> None:
    """Give ``path`` the permissions a new file or folder gets from the process umask (``0o666``/``0o777`` & ~umask).

    Temporary files from :func:`tempfile.mkstemp` are ``0o600``; a finished output renamed from one gets this first.
    """
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~mask)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str], what: str, *, suffix: str = ".tmp", mkdir: bool = True
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error, rename it to ``path``.

    Args:
        path: the final file.
        what: completes "cannot ..." in the error message, e.g. ``"write the GeoTIFF"``.
        suffix: suffix of the temporary name (writers that pick a format from the suffix need the right one).
        mkdir: create missing parent folders first.

    Raises:
        OutputWriteError: an OSError while creating, writing or renaming (also one chained behind another error,
            as torch.save raises); the temporary file is removed and an existing ``path`` is left unchanged.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        if mkdir:
            path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        set_default_mode(tmp)  # mkstemp creates 0o600; a finished output gets the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        os_error = None if isinstance(e, AnySatError) else chained_os_error(e)
        if os_error is None or not isinstance(e, Exception):
            raise
        raise OutputWriteError.from_os_error(path, os_error, what) from e


def remove_path(path: Path) -> None:
    """Remove a file or a folder tree (a link is removed, not followed); nothing when it is missing."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def replace_path(tmp: Path, final: Path, overwrite: bool) -> None:
    """Rename ``tmp`` to ``final`` (files or folders); an existing ``final`` is removed only after the move.

    Raises:
        OutputExistsError: ``final`` exists and ``overwrite`` is False.
    """
    if final.exists() or final.is_symlink():
        if not overwrite:
            raise OutputExistsError(f"{str(final)!r} exists already; pass overwrite=True to replace it")
        trash = final.with_name(f".{final.name}.old-{os.getpid()}")
        remove_path(trash)
        os.replace(final, trash)
        os.replace(tmp, final)
        remove_path(trash)
    else:
        os.replace(tmp, final)


def check_destination(path: str | os.PathLike[str], overwrite: bool, kind: str, *, folder: bool = False) -> Path:
    """``path`` as a Path after checking that it may be written.

    Args:
        kind: what the output is, for the message (``".tif file"``, ``".png file"``, ``"Zarr store"``...).
        folder: the output is itself a folder (a Zarr store), so an existing folder is an existing output.

    Raises:
        OutputExistsError: ``path`` is a folder where a file is expected, or exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.is_dir() and not path.is_symlink() and not folder:
        raise OutputExistsError(f"{str(path)!r} is a folder; pass the path of a {kind}")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OutputExistsError(
            f"{str(path)!r} exists already; pass overwrite=True to replace it, or choose another path"
        )
    return path


# ----------------------------------------------------------------------------------------------- formats
def write_geotiff(da: xr.DataArray, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write one tile's spatial features as a float32 GeoTIFF, one band per feature.

    Band descriptions are the feature indices; the DataArray's string attributes become dataset tags.

    Args:
        da: DataArray ``(feature, y, x)`` (or ``(y, x)``) with a CRS, e.g. from :func:`~anysat_core.extract_features`.
        path: output ``.tif``; its folder is created when missing.
        overwrite: replace an existing file.

    Returns:
        The path written.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        MissingCRSError: ``da`` has no CRS (features of a tile without georeferencing).
        InputShapeError: ``da`` is not a single tile's spatial grid.
        OutputWriteError: the file cannot be written (read-only folder, full disk, file size limit); an existing
            ``path`` is then left unchanged and no temporary file remains.
    """
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import xarray as xr

    if not isinstance(da, xr.DataArray):
        raise InputShapeError(
            f"write_geotiff got a {type(da).__name__}; expected one DataArray (feature, y, x) — for a batch, write "
            "each item of the list extract_features returns to its own file"
        )
    if da.dims not in (("feature", "y", "x"), ("y", "x")):
        raise InputShapeError(
            f"write_geotiff got dims {da.dims}; expected ('feature', 'y', 'x') or ('y', 'x') "
            "(tile features have no map grid: use output='patch' or 'dense')"
        )
    if da.rio.crs is None:
        raise MissingCRSError(
            f"the feature map has no CRS; a GeoTIFF needs one. Give the tile's GeoInfo a crs, or set it with "
            f"da.rio.write_crs('EPSG:xxxx') before writing {str(path)!r}"
        )
    path = check_destination(path, overwrite, ".tif file")
    out = da.astype(np.float32)
    if out.ndim == 2:
        out = out.expand_dims(feature=[0])
    n = out.sizes["feature"]
    out.attrs = {k: v for k, v in da.attrs.items() if isinstance(v, str)}
    out.attrs["long_name"] = tuple(str(v) for v in out["feature"].values.tolist())
    with atomic_write(path, "write the GeoTIFF", suffix=".tmp.tif") as tmp:
        out.rio.to_raster(tmp, driver="GTiff", dtype="float32", count=n)  # rasterio's IO errors are OSErrors
    return path


def grid_mapping_attrs(ds: xr.Dataset) -> xr.Dataset:
    """Put ``grid_mapping`` in every data variable's attributes, so ``xr.open_zarr`` reads ``spatial_ref`` back as a
    coordinate and ``.rio.crs`` finds the CRS."""
    if "spatial_ref" not in ds.coords:
        return ds
    for v in ds.data_vars:
        ds[v].encoding.pop("grid_mapping", None)
        ds[v].attrs["grid_mapping"] = "spatial_ref"
    return ds


def write_zarr(da: xr.DataArray | xr.Dataset, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write a DataArray/Dataset (e.g. one tile's features) as a Zarr store, atomically.

    The store is written under a temporary name beside ``path`` and renamed into place; ``path`` never holds a
    partial store.  Read it back with ``xr.open_zarr(path)`` (the CRS stays in the ``spatial_ref`` coordinate).

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        OutputError: ``path`` does not end in ``.zarr``.
        InputShapeError: ``da`` is not an xarray object.
        OutputWriteError: the folder cannot be written.
    """
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import xarray as xr

    path = Path(path)
    if not isinstance(da, (xr.DataArray, xr.Dataset)):
        raise InputShapeError(f"write_zarr got a {type(da).__name__}; expected an xarray DataArray or Dataset")
    if path.suffix.lower() != ".zarr":
        raise OutputError(f"path={str(path)!r}; a Zarr store path must end in '.zarr'")
    check_destination(path, overwrite, "Zarr store", folder=True)
    ds = da.to_dataset(name=da.name or FEATURES_NAME) if isinstance(da, xr.DataArray) else da
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp.zarr", dir=path.parent))
        shutil.rmtree(tmp)
        crs = ds.rio.crs
        if crs is not None:  # grid_mapping on every variable, so xr.open_zarr(...).rio.crs finds the CRS
            ds = ds.rio.write_crs(crs)
        ds = grid_mapping_attrs(ds)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zarr warns that consolidated metadata is not in the v3 spec yet
            ds.to_zarr(str(tmp), mode="w", consolidated=True)
        replace_path(tmp, path, overwrite)
    except OSError as e:
        if tmp is not None:
            remove_path(tmp)
        if isinstance(e, AnySatError):
            raise
        raise OutputWriteError.from_os_error(path, e, "write the Zarr store") from e
    except BaseException:
        if tmp is not None:
            remove_path(tmp)
        raise
    return path


def write_png(rgb: xr.DataArray, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write an RGB map in ``[0, 1]`` as an 8-bit RGBA PNG, north up.

    Each band is scaled by 255 and rounded (values clipped to ``[0, 1]``); alpha is 0 where any band is NaN and
    255 elsewhere.  Rows are ordered by decreasing ``y`` and columns by increasing ``x`` (north up, west left, for a
    projected CRS), whatever the order of the DataArray.  The PNG has no georeferencing.

    Args:
        rgb: DataArray ``(band, y, x)`` with 3 bands, e.g. from :meth:`~anysat_core.PCARGB.transform`.
        path: output ``.png``; its folder is created when missing.
        overwrite: replace an existing file.

    Returns:
        The path written.

    Raises:
        InputShapeError: not a 3-band ``(band, y, x)`` DataArray.
        OutputExistsError: ``path`` exists and ``overwrite`` is False, or ``path`` is a folder.
        OutputWriteError: the file cannot be written (read-only folder, full disk, file size limit); an existing
            ``path`` is then left unchanged and no temporary file remains.
    """
    import xarray as xr
    from PIL import Image

    if not isinstance(rgb, xr.DataArray) or set(rgb.dims) != {"band", "y", "x"} or rgb.sizes.get("band") != 3:
        got = f"dims {dict(rgb.sizes)}" if isinstance(rgb, xr.DataArray) else f"a {type(rgb).__name__}"
        raise InputShapeError(
            f"write_png got {got}; expected a DataArray (band=3, y, x) in [0, 1], e.g. PCARGB().fit_transform(features)"
        )
    path = check_destination(path, overwrite, ".png file")
    rgb = rgb.transpose("band", "y", "x")
    arr = np.asarray(rgb.values, dtype=np.float64)
    ys, xs = np.asarray(rgb["y"].values), np.asarray(rgb["x"].values)
    if ys.size > 1 and ys[0] < ys[-1]:
        arr = arr[:, ::-1, :]
    if xs.size > 1 and xs[0] > xs[-1]:
        arr = arr[:, :, ::-1]
    nan = np.isnan(arr).any(axis=0)
    rgba = np.empty((*arr.shape[1:], 4), dtype=np.uint8)
    rgba[..., :3] = np.rint(np.clip(np.nan_to_num(arr, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8).transpose(1, 2, 0)
    rgba[..., 3] = np.where(nan, 0, 255).astype(np.uint8)
    with atomic_write(path, "write the PNG", suffix=".tmp.png") as tmp:
        Image.fromarray(rgba).save(tmp, format="PNG")
    return path


def save_torch(payload: Any, path: str | os.PathLike[str], what: str = "write the checkpoint") -> Path:
    """``torch.save(payload)`` to ``path`` atomically (its folder must exist).

    Raises:
        OutputWriteError: the file cannot be written; an existing ``path`` is left unchanged.
    """
    import torch

    path = Path(path)
    # torch.save reports a failed write as a RuntimeError raised while handling the OSError: atomic_write finds it
    with atomic_write(path, what, mkdir=False) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)
    return path


def write_json(obj: Any, path: str | os.PathLike[str], what: str = "write the JSON file") -> Path:
    """``obj`` as indented JSON at ``path``, atomically (its folder must exist).

    Raises:
        OutputWriteError: the file cannot be written; an existing ``path`` is left unchanged.
    """
    path = Path(path)
    text = json.dumps(obj, indent=1)
    with atomic_write(path, what, mkdir=False) as tmp:
        tmp.write_text(text)
    return path
