"""The ``anysat`` command line (also ``python -m anysat_core``): AnySat features of your own rasters.

``anysat infer`` is a thin layer over :func:`~anysat_core.data.raster.open_rasters` and
:func:`~anysat_core.inference.infer_scene`: every option is one of their parameters (or of a
:class:`~anysat_core.data.raster.RasterSource`), with the same defaults and the same checks.  Errors of the
package (:class:`~anysat_core.errors.AnySatError`) are printed as ``error: <message>`` with exit code 2; an
interrupted run exits with 130 and resumes when the same command is run again.
"""

from __future__ import annotations

import argparse
import glob
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]

PROG = "anysat"

INFER_DESCRIPTION = """\
Run AnySat over your own rasters and write a feature map (Cloud-Optimized GeoTIFF or Zarr).

The rasters are aligned and tiled by open_rasters (the tiles lie on the finest raster's own pixel grid; other
modalities are resampled onto it), normalised (by default with the registry's statistics of each modality,
else statistics sampled from the scene; --normalize chooses), and run through the model in overlapping windows
that are blended and streamed to --out by infer_scene, in bounded memory.  An interrupted run keeps its finished
strips beside --out (.<name>.partial.zarr) and the same command resumes from there.

Lengths are in metres of the scene's CRS.  --patch-size-m must be a multiple of the modalities' patch step,
--window-m a multiple of --patch-size-m (and of every modality's pixel size), --overlap-m 0 or a multiple of
--patch-size-m, at most --window-m / 2.
"""

INFER_EPILOG = """\
rasters:
  --raster MODALITY=PATH[,PATH...] maps files to a modality of the registry:
    {modalities}.
  Repeat it for each modality.  For a time series give one file per date (quote glob patterns so that the shell
  leaves them: 's2/*.tif'), or one file with the dates stacked date-major and --dates.  Dates come from --dates,
  else the files' tags or names (s2_20200102.tif).  --bands, --dates, --nodata, --resampling and --assume-crs take
  MODALITY=VALUE to address one of them.

examples:
  # Sentinel-2 series and Sentinel-1, released weights, dense 10 m features as a COG
  anysat infer --raster s2='s2/*.tif' --raster s1-asc='s1/*.tif' --weights base \\
      --patch-size-m 20 --window-m 240 --overlap-m 40 --out features.tif

  # an R,G,B,NIR aerial image (bands reordered to the registry's NIR,G,B,R), your checkpoint, 10 m patch
  # features in a Zarr store
  anysat infer --raster aerial=ortho.tif --bands aerial=4,2,3,1 --weights my_anysat.pth \\
      --output patch --patch-size-m 10 --window-m 60 --overlap-m 10 --out ortho_features.zarr

  # a stacked S2 file (3 dates x 10 bands), a fitted probe, the windows run on a Dask cluster
  anysat infer --raster s2=stack.tif --dates s2=2020-01-10,2020-04-20,2020-08-05 --weights base \\
      --probe probe.joblib --dask tcp://scheduler:8786 --patch-size-m 20 --window-m 480 --out classes.tif

exit status: 0 done, 2 bad arguments or an AnySat error (printed as "error: ..."), 130 interrupted (rerun the
same command to resume).
"""

_GLOB_CHARS = set("*?[")

#: Python parameter names that the package's messages mention -> the options that set them here
_OPTIONS = {
    "tile_m": "--window-m",
    "window_m": "--window-m",
    "patch_size_m": "--patch-size-m",
    "overlap_m": "--overlap-m",
    "output": "--output",
    "output_modality": "--output-modality",
    "batch_size": "--batch-size",
    "precision": "--precision",
    "device": "--device",
    "buffer_mb": "--buffer-mb",
    "gdal_cache_mb": "--gdal-cache-mb",
    "min_valid_fraction": "--min-valid-fraction",
    "overwrite": "--overwrite",
    "resume": "--no-resume",
    "client": "--dask (without it the run stays in this process)",
    "probe": "--probe",
    "normalize": "--normalize (None: --normalize none)",
    "crs": "--crs (or --assume-crs for rasters without a CRS)",
    "origin": "--origin",
    "bands": "--bands",
    "dates": "--dates",
    "nodata": "--nodata",
    "resampling": "--resampling",
    "size": "--size",
}


class CliError(Exception):
    """A command-line value that cannot be turned into a parameter (reported like an AnySatError)."""


# ---------------------------------------------------------------------------------------------------- parser
def _by_modality(option: str, value: str) -> tuple[str, str]:
    """``"MOD=VALUE"`` -> ``(MOD, VALUE)``."""
    mod, sep, rest = value.partition("=")
    if not sep or not mod.strip() or not rest.strip():
        raise CliError(f"{option} {value!r}; expected MODALITY=VALUE, e.g. {option} s2=...")
    return mod.strip(), rest.strip()


def _items(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The ``anysat`` argument parser (subcommand ``infer``)."""
    from anysat_core import __version__
    from anysat_core.modalities import MODALITIES

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="AnySat Explorer on the command line: features of your own rasters with AnySat.",
        epilog="Run `anysat infer --help` for the options of a run.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s (anysat_core) {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser(
        "infer",
        help="feature map (and optional probe classes) of your own rasters, written to a COG or Zarr store",
        description=INFER_DESCRIPTION,
        epilog=INFER_EPILOG.format(modalities=", ".join(MODALITIES)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    g = p.add_argument_group("rasters (RasterSource, one per modality)")
    g.add_argument(
        "--raster",
        action="append",
        required=True,
        metavar="MOD=PATH[,PATH...]",
        help="rasters of one modality: comma-separated GeoTIFF/COG paths or quoted glob patterns (sorted); one file "
        "per date for a time series. Repeat for each modality; the first one is the default --output-modality.",
    )
    g.add_argument(
        "--bands",
        action="append",
        default=[],
        metavar="MOD=BAND[,BAND...]",
        help="bands to take from each file of MOD, in the registry's band order: 1-based numbers (4,3,2,8) or band "
        "names/descriptions (B02,B03,...). Default: all bands, or the registry bands found by name.",
    )
    g.add_argument(
        "--dates",
        action="append",
        default=[],
        metavar="MOD=DATE[,DATE...]",
        help="one date per frame of a time series MOD: 2020-01-02 or 20200102, or a day of year 1..366. Default: "
        "the files' acquisition-date tags or the dates in their names.",
    )
    g.add_argument(
        "--nodata",
        action="append",
        default=[],
        metavar="[MOD=]VALUE",
        help="pixel value that marks missing data (overrides the files' nodata; NaN is always missing); without MOD "
        "for every modality.",
    )
    g.add_argument(
        "--resampling",
        action="append",
        default=[],
        metavar="[MOD=]METHOD",
        help="rasterio resampling for rasters not on their target grid (nearest, bilinear, average, ...); without "
        "MOD for every modality. Default: average from clearly finer pixels, bilinear otherwise.",
    )
    g.add_argument(
        "--assume-crs",
        action="append",
        default=[],
        metavar="[MOD=]CRS",
        help="CRS of rasters that carry none (e.g. EPSG:32631); without MOD for every modality.",
    )

    g = p.add_argument_group("grid and normalisation (open_rasters)")
    g.add_argument(
        "--crs",
        metavar="CRS",
        help="projected CRS in metres of the output (e.g. EPSG:32631). Default: the finest raster's CRS, or the "
        "UTM zone of its centre when that one is geographic.",
    )
    g.add_argument(
        "--origin",
        nargs=2,
        type=float,
        metavar=("X", "Y"),
        help="a point in the output CRS (metres): windows then lie on the --window-m lattice through it (to match "
        "another product's tiling). Default: the top-left corner of the common extent, on the finest raster's "
        "pixel grid.",
    )
    g.add_argument(
        "--normalize",
        default="auto",
        metavar="STATS",
        help="statistics the inputs are normalised with: 'auto' (default: the registry's statistics of each "
        "modality, those of the released weights, else computed from this scene), 'scene' (computed from this "
        "scene), a registry name (e.g. treesatai-ts), a JSON file {modality: {mean: [...], std: [...]}}, a dataset "
        "root holding NORM_<modality>_patch.json files, or 'none' for raw file values.",
    )

    g = p.add_argument_group("model")
    w = g.add_mutually_exclusive_group(required=True)
    w.add_argument(
        "--weights",
        metavar="FILE|base|geoplex-mini",
        help="a checkpoint file (the official AnySat.pth or one written by AnySat.save), 'base' for the released "
        "weights (downloaded once and cached; offline: set ANYSAT_WEIGHTS=/path/to/AnySat.pth), or 'geoplex-mini' "
        "for the tiny model shipped with this package (pretrained on GeoPlex-mini; S2 and S1-asc only).",
    )
    w.add_argument(
        "--size",
        metavar="SIZE",
        help="a RANDOMLY INITIALISED model of this size (test, tiny, small, base): for trying the pipeline only, "
        "its features mean nothing.",
    )

    g = p.add_argument_group("inference (infer_scene)")
    g.add_argument(
        "--patch-size-m",
        type=float,
        required=True,
        metavar="M",
        help="patch side in metres (e.g. 20): a multiple of every modality's patch step (10 m; 30 m for alos, l7).",
    )
    g.add_argument(
        "--window-m",
        type=float,
        required=True,
        metavar="M",
        help="side of the square windows the model sees, in metres (e.g. 240): a multiple of --patch-size-m.",
    )
    g.add_argument(
        "--overlap-m",
        type=float,
        default=0.0,
        metavar="M",
        help="overlap of neighbouring windows in metres, blended with a raised-cosine ramp: 0 (default) or a "
        "multiple of --patch-size-m, at most --window-m / 2.",
    )
    g.add_argument(
        "--output",
        choices=("dense", "patch"),
        default="dense",
        help="'dense' (default): one cell per sub-patch token of --output-modality (e.g. 10 m for s2), 2D features; "
        "'patch': one cell per --patch-size-m patch, D features.",
    )
    g.add_argument(
        "--output-modality",
        metavar="MOD",
        help="modality of the dense cells (default: the first --raster's).",
    )
    g.add_argument(
        "--probe",
        metavar="FILE",
        help="a fitted classifier saved with joblib.dump or pickle (PixelProbe, TileProbe or a scikit-learn "
        "classifier with predict_proba and classes_): adds per-cell 'prediction' and 'confidence'. The file is "
        "unpickled: load only files you trust.",
    )
    g.add_argument(
        "--min-valid-fraction",
        type=float,
        metavar="F",
        help="cells whose share of valid input is at most F (in [0, 1]) get NaN features (and prediction -1). "
        "Default: the library's (0: only cells without any valid input).",
    )
    g.add_argument("--batch-size", type=int, default=4, metavar="N", help="windows per forward pass (default 4).")
    g.add_argument(
        "--precision",
        choices=("fp32", "bf16", "auto"),
        default="fp32",
        help="'fp32' (default): exact, the original's features to 1e-4; 'bf16': faster where the CPU (avx512_bf16, "
        "AMX) or GPU (compute capability 8.0+) multiplies bf16 natively, features within a cosine of ~0.9999; "
        "'auto': bf16 where native, else fp32. The output's 'precision' attribute records the one used.",
    )
    g.add_argument(
        "--device",
        default="cpu",
        metavar="DEV",
        help="torch device of the model: cpu (default), cuda, cuda:1 ... (with --dask: the workers' device is "
        "their own).",
    )
    g.add_argument(
        "--buffer-mb",
        type=float,
        default=16.0,
        metavar="MB",
        help="memory for the blending accumulator in MiB (default 16); wider scenes run in more panels.",
    )
    g.add_argument(
        "--gdal-cache-mb",
        type=float,
        default=64.0,
        metavar="MB",
        help="GDAL block cache limit in MiB while reading and writing (default 64).",
    )
    g.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="address of a Dask scheduler (e.g. tcp://10.0.0.5:8786): the windows run on its workers.",
    )

    g = p.add_argument_group("output")
    g.add_argument(
        "--out",
        required=True,
        metavar="PATH",
        help="output file: *.tif/*.tiff (Cloud-Optimized GeoTIFF, one float32 band per feature, probe classes in "
        "the last two bands) or *.zarr (Zarr store, variable anysat_features (feature, y, x)).",
    )
    g.add_argument("--overwrite", action="store_true", help="replace an existing --out.")
    g.add_argument(
        "--no-resume",
        action="store_true",
        help="start over instead of resuming the partial run found beside --out.",
    )
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no scene description.")
    g.add_argument(
        "--log-level",
        default="WARNING",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="level of the package's log messages on stderr (default WARNING).",
    )
    return parser


# ---------------------------------------------------------------------------------------------------- arguments
def _expand(mod: str, text: str) -> list[str]:
    """Comma-separated paths and glob patterns -> paths (a pattern matching nothing is an error)."""
    paths: list[str] = []
    for item in _items(text):
        if _GLOB_CHARS & set(item):
            found = sorted(glob.glob(item))
            if not found:
                raise CliError(f"--raster {mod}={text!r}: no file matches {item!r}; check the pattern and the folder")
            paths += found
        else:
            paths.append(item)
    if not paths:
        raise CliError(f"--raster {mod}={text!r} names no file; expected MODALITY=PATH[,PATH...]")
    return paths


def _per_modality(option: str, values: Sequence[str], mods: Sequence[str], *, shared: bool) -> dict[str, str]:
    """``--option MOD=VALUE`` (or ``VALUE`` for every modality when ``shared``) -> ``{mod: value}``."""
    from anysat_core.modalities import MODALITIES

    out: dict[str, str] = {}
    for value in values:
        mod, sep, _ = value.partition("=")
        # MOD=VALUE; a bare VALUE (where allowed) is for every modality. A CRS may hold '=' ('+proj=utm ...'):
        # there, only a registry modality before the '=' makes it MOD=VALUE.
        bare = not sep or (option == "--assume-crs" and mod.strip() not in MODALITIES)
        if shared and bare:
            targets, text = list(mods), value.strip()
        else:
            m, text = _by_modality(option, value)
            if m not in mods:
                raise CliError(
                    f"{option} {value!r} names {m!r}, which has no --raster; the modalities given are {', '.join(mods)}"
                )
            targets = [m]
        for m in targets:
            if m in out:
                raise CliError(f"{option} is given twice for {m!r}; give it once per modality")
            out[m] = text
    return out


def _band(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def _date(text: str) -> int | str:
    return int(text) if text.isdigit() and len(text) <= 3 else text  # a day of year; 20200102 stays a date


def _number(option: str, mod: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise CliError(f"{option} {mod}={text!r}; expected a number (e.g. 0 or -9999)") from None


def _sources(args: argparse.Namespace) -> list[Any]:
    from anysat_core.data.raster import RasterSource

    files: dict[str, list[str]] = {}
    for value in args.raster:
        mod, text = _by_modality("--raster", value)
        files.setdefault(mod, []).extend(_expand(mod, text))
    mods = list(files)
    bands = _per_modality("--bands", args.bands, mods, shared=False)
    dates = _per_modality("--dates", args.dates, mods, shared=False)
    nodata = _per_modality("--nodata", args.nodata, mods, shared=True)
    resampling = _per_modality("--resampling", args.resampling, mods, shared=True)
    crs = _per_modality("--assume-crs", args.assume_crs, mods, shared=True)
    return [
        RasterSource(
            paths,
            modality=mod,
            bands=[_band(b) for b in _items(bands[mod])] if mod in bands else None,
            dates=[_date(d) for d in _items(dates[mod])] if mod in dates else None,
            nodata=_number("--nodata", mod, nodata[mod]) if mod in nodata else None,
            resampling=resampling.get(mod),
            crs=crs.get(mod),
        )
        for mod, paths in files.items()
    ]


def _model(args: argparse.Namespace) -> Any:
    from anysat_core.model import AnySat
    from anysat_core.model.checkpoint import PRETRAINED

    if args.size is not None:
        print(
            f"warning: --size {args.size}: the model has RANDOM weights; its features mean nothing (use --weights "
            "for real ones)",
            file=sys.stderr,
        )
        return AnySat(size=args.size).eval()
    if args.weights in PRETRAINED and not Path(args.weights).exists():  # "base" (released), "geoplex-mini" (shipped)
        return AnySat.from_pretrained(args.weights)
    return AnySat.from_checkpoint(args.weights)


def _probe(path: str | None) -> Any:
    if path is None:
        return None
    from anysat_core.errors import ProbeError

    p = Path(path)
    if not p.is_file():
        raise ProbeError(f"--probe {path!r} does not exist or is not a file; give a probe saved with joblib.dump")
    import joblib

    try:
        return joblib.load(p)
    except Exception as e:  # truncated, not a pickle, a class that no longer imports...
        first = str(e).splitlines()[0] if str(e) else ""
        raise ProbeError(
            f"cannot load the probe {path!r} ({type(e).__name__}: {first}); expected a fitted classifier saved with "
            "joblib.dump(probe, path) or pickle"
        ) from e


def _grid_summary(out: Path) -> str:
    """``"(y x x cells, D bands)"`` of the written output, read from its header."""
    if out.suffix.lower() == ".zarr":
        import xarray as xr

        with xr.open_zarr(out) as ds:
            sizes = dict(ds.sizes)
        return f"{sizes.get('y')} x {sizes.get('x')} cells, {sizes.get('feature')} features"
    import rasterio

    with rasterio.open(out) as f:
        return f"{f.height} x {f.width} cells, {f.count} bands"


def _attr(out: Path, key: str) -> str:
    """A provenance attribute of the written output (``"?"`` when absent)."""
    if out.suffix.lower() == ".zarr":
        import xarray as xr

        with xr.open_zarr(out) as ds:
            return str(ds["anysat_features"].attrs.get(key, "?"))
    import rasterio

    with rasterio.open(out) as f:
        return str(f.tags().get(key, "?"))


def _infer(args: argparse.Namespace) -> int:
    from anysat_core.data.raster import open_rasters
    from anysat_core.inference import infer_scene
    from anysat_core.precision import resolve_device

    t0 = time.perf_counter()
    sources = _sources(args)
    probe = _probe(args.probe)
    scene = open_rasters(
        sources,
        tile_m=args.window_m,
        patch_size_m=args.patch_size_m,
        normalize=None if args.normalize.lower() == "none" else args.normalize,
        crs=args.crs,
        origin=(args.origin[0], args.origin[1]) if args.origin is not None else None,
    )
    if not args.quiet:
        print(f"scene: {scene!r}", file=sys.stderr)
    model = _model(args).to(resolve_device(args.device))
    optional = {} if args.min_valid_fraction is None else {"min_valid_fraction": args.min_valid_fraction}
    out = infer_scene(
        model,
        scene,
        patch_size_m=args.patch_size_m,
        window_m=args.window_m,
        overlap_m=args.overlap_m,
        output=args.output,
        output_modality=args.output_modality,
        batch_size=args.batch_size,
        out=args.out,
        overwrite=args.overwrite,
        resume=not args.no_resume,
        progress=not args.quiet,
        client=args.dask,
        probe=probe,
        buffer_mb=args.buffer_mb,
        gdal_cache_mb=args.gdal_cache_mb,
        precision=args.precision,
        **optional,
    )
    path = Path(out)
    norm = "; ".join(f"{m}: {s}" for m, s in scene.normalization.items())
    print(path)
    used = _attr(path, "precision")
    print(f"{_grid_summary(path)} ({args.output}, {used}); normalised with {norm}; {time.perf_counter() - t0:.1f} s")
    return 0


# ---------------------------------------------------------------------------------------------------- main
def _hint(message: str) -> str:
    """The options that set the Python parameters a package message names (``overwrite=True`` -> --overwrite)."""
    import re

    named = dict.fromkeys(re.findall(r"\b([a-z_]+)=", message))
    said = [f"{name}= is {_OPTIONS[name]}" for name in named if name in _OPTIONS]
    if "from_checkpoint(" in message or "from_pretrained(" in message:
        said.append("a weights file is --weights /path/to/AnySat.pth")
    return f"\n(on the command line: {'; '.join(said)})" if said else ""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``anysat`` command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)  # SystemExit(2) with argparse's usage message for bad arguments
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    log = logging.getLogger("anysat_core")  # the package's messages only; other libraries keep their own set-up
    level, propagate = log.level, log.propagate
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(args.log_level)
    log.propagate = False

    from anysat_core.errors import AnySatError

    try:
        return _infer(args)
    except (AnySatError, CliError) as e:
        print(f"error: {e}{_hint(str(e)) if isinstance(e, AnySatError) else ''}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        out = Path(args.out)
        print(
            f"\ninterrupted: the strips finished so far are kept in {str(out.with_name(f'.{out.name}.partial.zarr'))!r}"
            "; run the same command again to resume from there (--no-resume starts over)",
            file=sys.stderr,
        )
        return 130
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        log.propagate = propagate


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
