"""Every file writer of anysat_core fails cleanly when the disk is full.

"Cleanly" means: the call raises :class:`~anysat_core.errors.OutputWriteError` (an ``AnySatError`` and an
``OSError``) whose message names the path and says what to do; the target folder holds afterwards exactly what it
held before (no partial file, no hidden ``.<name>.xxxx.tmp``), and an existing target (``overwrite=True``) keeps its
bytes.  :func:`~anysat_core.inference.infer_scene` deliberately keeps its resume store ``.<name>.partial.zarr`` beside
``out`` (see its module docstring); with space freed, the same call finishes the run and gives the file an
uninterrupted run gives.

Two real ways to fill the disk:

* ``full_disk`` (fixture): a tmpfs mounted under ``tmp_path`` (needs root and ``mount``; skipped otherwise) and a
  ballast file filling it up to a few KiB, so that writes start and then fail with ``ENOSPC`` (errno 28).  These
  tests are marked ``system`` (plain ``pytest`` leaves them out; ``make test`` runs them).
* ``fsize_limited`` (fixture): a child Python process with ``RLIMIT_FSIZE`` set and ``SIGXFSZ`` ignored, so that
  writing a file past the limit fails with ``EFBIG`` (errno 27); available on any POSIX system.  The child reports
  the exception as JSON; the parent checks the folder.

The scene for ``infer_scene`` follows tests/core/test_inference.py: one dated S2 GeoTIFF of 36 x 24 pixels at 10 m
(4 x 3 windows of 120 m with 40 m overlap, ``output="patch"``), the test-size AnySat with random weights.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import xarray as xr

from anysat_core import AnySat, NormStats
from anysat_core.analysis.pca import PCARGB
from anysat_core.data.normalize import stats_path, write_stats
from anysat_core.data.raster import RasterSource, open_rasters
from anysat_core.errors import AnySatError, OutputWriteError
from anysat_core.inference import infer_scene
from anysat_core.writers import write_geotiff, write_png, write_zarr
from tests.helpers.scenes import C_S2, DATES, UTM, X0, Y0, assert_same_output, write_s2_series

ROOT = Path(__file__).resolve().parents[2]
SCENE_KW: dict[str, Any] = {"patch_size_m": 20, "window_m": 120, "overlap_m": 40, "output": "patch", "progress": False}
N_WINDOWS = 12  # 3 strips of 4 windows
PAGE = 4096


# ------------------------------------------------------------------------------------------------ checks
def listing(folder: Path) -> list[str]:
    """Names in ``folder``, hidden ones included."""
    return sorted(os.listdir(folder))


def snapshot(path: Path) -> dict[str, bytes]:
    """Bytes of a file, or of every file of a folder (a Zarr store) by relative path."""
    if path.is_dir():
        return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    return {"": path.read_bytes()}


def check_message(message: str, path: Path) -> None:
    """The message names the path and says what to do."""
    assert str(path) in message, message
    assert "free space" in message and "choose another" in message, message


def assert_write_error(exc: BaseException, *, errno_: int | None = None) -> None:
    """Assert ``exc`` is the documented error, caused by an OSError with ``errno_`` when given."""
    assert isinstance(exc, OutputWriteError), f"expected OutputWriteError, got {type(exc).__name__}: {exc}"
    assert isinstance(exc, AnySatError) and isinstance(exc, OSError)
    if errno_ is not None:
        chain, x = [], exc.__cause__
        while x is not None and len(chain) < 6:
            chain.append(getattr(x, "errno", None))
            x = x.__cause__ or x.__context__
        assert errno_ in chain, f"no errno {errno_} among the causes ({chain}) of {exc!r}"
        assert os.strerror(errno_) in str(exc), str(exc)


# ------------------------------------------------------------------------------------------------ inputs
def features(variant: int, size: int = 64) -> xr.DataArray:
    """A (feature=8, y, x) float32 feature map in UTM 31N, 10 m cells (``size`` = 64: 128 KiB of data)."""
    rng = np.random.default_rng(variant)
    da = xr.DataArray(
        rng.normal(0, 1, (8, size, size)).astype(np.float32),
        dims=("feature", "y", "x"),
        coords={
            "feature": np.arange(8),
            "y": Y0 - 10 * (np.arange(size) + 0.5),
            "x": X0 + 10 * (np.arange(size) + 0.5),
        },
        name="anysat_features",
        attrs={"model": "AnySat-test", "variant": str(variant)},
    )
    return da.rio.write_crs(UTM)


def _geotiff(path: Path, variant: int) -> None:
    write_geotiff(features(variant), path, overwrite=True)


def _zarr(path: Path, variant: int) -> None:
    write_zarr(features(variant), path, overwrite=True)


def _png(path: Path, variant: int) -> None:
    write_png(PCARGB(seed=0).fit_transform(features(variant, size=128)), path, overwrite=True)  # ~64 KiB PNG


def _checkpoint(path: Path, variant: int) -> None:
    torch.manual_seed(variant)
    AnySat(size="test").save(path, overwrite=True)  # ~2 MiB


def _stats(path: Path, variant: int) -> None:
    n = C_S2
    write_stats(path, NormStats(mean=tuple(float(variant + i) for i in range(n)), std=(1.5,) * n, source="test"))


@dataclass(frozen=True)
class Writer:
    """One file writer: ``write(path, variant)`` writes content ``variant`` to ``path`` (replacing it).

    Attributes:
        leave: bytes left free on the full tmpfs (less than the file needs, so the write starts and fails).
        fsize: RLIMIT_FSIZE of the child (less than the file size).
    """

    name: str
    filename: str
    write: Callable[[Path, int], None]
    leave: int
    fsize: int


WRITERS = {
    w.name: w
    for w in (
        Writer("write_geotiff", "features.tif", _geotiff, leave=2 * PAGE, fsize=16_384),
        Writer("write_zarr", "features.zarr", _zarr, leave=2 * PAGE, fsize=16_384),
        Writer("write_png", "pca.png", _png, leave=2 * PAGE, fsize=16_384),
        Writer("AnySat.save", "model.pth", _checkpoint, leave=2 * PAGE, fsize=1 << 20),
        Writer("write_stats", stats_path(".", "s2").name, _stats, leave=0, fsize=64),
    )
}


@pytest.fixture(scope="module")
def scene_files(tmp_path_factory) -> list[Path]:
    return write_s2_series(tmp_path_factory.mktemp("scene"), dates=DATES[:1])  # one date: reading costs per date


@pytest.fixture(scope="module")
def scene(scene_files):
    return open_rasters(RasterSource(scene_files, modality="s2"), tile_m=120)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """The test-size model's checkpoint: the child process loads the very weights the parent uses."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "test.pth"
    AnySat(size="test").save(path)
    return path


@pytest.fixture(scope="module")
def model(model_file) -> AnySat:
    return AnySat.from_checkpoint(model_file)


@pytest.fixture(scope="module")
def reference(model, scene, tmp_path_factory) -> dict[str, Path]:
    """Uninterrupted runs on a roomy disk, per suffix."""
    folder = tmp_path_factory.mktemp("reference")
    return {s: infer_scene(model, scene, out=folder / f"ref{s}", **SCENE_KW) for s in (".zarr", ".tif")}


# ------------------------------------------------------------------------------------------------ way 1: tmpfs
class FullDisk:
    """A small tmpfs at ``root``; :meth:`fill` writes a ballast file ``root/ballast`` until ENOSPC, then gives
    back ``leave`` bytes; :meth:`unfill` deletes it.  Targets go in ``folder`` (``root/out``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.folder = root / "out"
        self.folder.mkdir()
        self.ballast = root / "ballast"

    def free(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def fill(self, leave: int = 2 * PAGE) -> None:
        block = b"\0" * (1 << 20)
        fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            while os.write(fd, block) > 0:
                pass
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
        finally:
            os.close(fd)
        size = self.ballast.stat().st_size
        os.truncate(self.ballast, max(0, size - leave))
        free = self.free()
        assert free <= leave + PAGE, f"tmpfs not full: {free} bytes free, wanted {leave}"
        assert free >= leave or leave == 0, f"tmpfs fuller than asked: {free} bytes free, wanted {leave}"

    def unfill(self) -> None:
        self.ballast.unlink(missing_ok=True)


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[FullDisk]:
    """A 48 MiB tmpfs mounted under ``tmp_path`` and unmounted afterwards (room for the COG conversion of the test
    scene: 256-pixel tiles of 64 bands); skipped without root or when mounting is refused."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to fill up needs root")
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("mount/umount commands not found")
    root = tmp_path / "tmpfs"
    root.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m,mode=0755", "tmpfs", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (mount exit {res.returncode}: {res.stderr.strip()})")
    try:
        yield FullDisk(root)
    finally:
        if subprocess.run(["umount", str(root)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(root)], capture_output=True, check=False)


@pytest.mark.system
@pytest.mark.parametrize("existing", [False, True], ids=["new", "overwrite"])
@pytest.mark.parametrize("name", list(WRITERS))
def test_writer_on_full_disk(full_disk: FullDisk, name: str, existing: bool) -> None:
    w = WRITERS[name]
    path = full_disk.folder / w.filename
    if existing:
        w.write(path, 0)  # a valid file of the same kind, written while there is room
        before_bytes = snapshot(path)
    full_disk.fill(leave=w.leave)
    before = listing(full_disk.folder)
    with pytest.raises(OSError) as ei:
        w.write(path, 1)
    assert_write_error(ei.value, errno_=None if name == "write_geotiff" else errno.ENOSPC)  # GDAL drops the errno
    check_message(str(ei.value), path)
    assert ei.value.path == str(path)
    assert listing(full_disk.folder) == before, "a partial or temporary file was left behind"
    if existing:
        assert snapshot(path) == before_bytes, "the existing file was changed"
    # with room again the same call works
    full_disk.unfill()
    w.write(path, 1)
    assert listing(full_disk.folder) == [w.filename]


@pytest.mark.system
@pytest.mark.parametrize("suffix", [".zarr", ".tif"])
def test_infer_scene_disk_fills_during_run(full_disk: FullDisk, model, scene, reference, suffix) -> None:
    """The disk fills up after the first strip (window 5 of 12): the run stops with OutputWriteError, keeps only its
    resume store, and once space is freed the same call resumes (8 windows) to the uninterrupted result."""
    out = full_disk.folder / f"scene{suffix}"
    partial = f".{out.name}.partial.zarr"
    before = listing(full_disk.folder)

    def fill_after_first_strip(done: int, total: int) -> None:
        if done == 5:
            full_disk.fill(leave=PAGE)

    with pytest.raises(OSError) as ei:
        infer_scene(model, scene, out=out, callback=fill_after_first_strip, **SCENE_KW)
    assert_write_error(ei.value)
    check_message(str(ei.value), out)
    assert ei.value.path == str(out)
    assert partial in str(ei.value), "the message should say that the finished strips are kept, and where"
    assert not out.exists()
    assert listing(full_disk.folder) == sorted([*before, partial]), "only the resume store may be left"

    full_disk.unfill()
    seen: list[int] = []
    assert infer_scene(model, scene, out=out, callback=lambda d, t: seen.append(d), **SCENE_KW) == out
    assert len(seen) == N_WINDOWS - 4, "the finished strip was computed again instead of resumed"
    assert listing(full_disk.folder) == sorted([*before, out.name])
    assert_same_output(reference[suffix], out)


# ------------------------------------------------------------------------------------------------ way 2: RLIMIT_FSIZE
_CHILD_PRELUDE = """
import json, os, resource, signal, sys, traceback
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG instead of killing us


def limit_file_size(n):
    resource.setrlimit(resource.RLIMIT_FSIZE, (n, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def unlimit():
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))


def report(exc):
    if exc is None:
        return {"type": None}
    chain, x = [], exc
    while x is not None and len(chain) < 6:
        chain.append({"type": type(x).__name__, "errno": getattr(x, "errno", None)})
        x = x.__cause__ or x.__context__
    return {
        "type": type(exc).__name__,
        "mro": [c.__name__ for c in type(exc).__mro__],
        "message": str(exc),
        "path": getattr(exc, "path", None),
        "chain": chain,
    }


ARGS = json.loads(sys.argv[1])
sys.path.insert(0, ARGS["root"])
import torch
torch.set_num_threads(1)
"""


#: infer_scene under RLIMIT_FSIZE: case -> (suffix, limit lowered after that many windows (0: from the start),
#: the limit in bytes, windows the rerun computes)
FSIZE_SCENES = {
    # lowered after the first strip: the next strip's feature chunk (~17 KiB) cannot be written; 2 strips left
    "zarr-during-strips": (".zarr", 5, 12_288, N_WINDOWS - 4),
    # from the start: the partial store's files (<= ~17 KiB) fit, the GeoTIFF made from it (256-pixel tiles of 64
    # bands, > 1 MiB before the COG copy compresses them) does not; every strip is finished, so the rerun only
    # converts the partial store
    "tif-while-finishing": (".tif", 0, 65_536, 0),
}

_CHILD = """
from pathlib import Path
from anysat_core import AnySat
from anysat_core.data.raster import RasterSource, open_rasters
from anysat_core.inference import infer_scene
from tests.core.test_full_disk import WRITERS

RESULT = {"writers": {}, "scenes": {}}
for name, folder in ARGS["folders"].items():  # each writer replaces an existing file
    w = WRITERS[name]
    limit_file_size(w.fsize)
    try:
        w.write(Path(folder) / w.filename, 1)
        RESULT["writers"][name] = report(None)
    except BaseException as e:
        RESULT["writers"][name] = report(e)
    finally:
        unlimit()

model = AnySat.from_checkpoint(ARGS["model"])
scene = open_rasters(RasterSource([Path(p) for p in ARGS["files"]], modality="s2"), tile_m=120)
for case, c in ARGS["scenes"].items():
    def lower_limit(done, total, c=c):
        if done == c["limit_at"]:
            limit_file_size(c["fsize"])

    if c["limit_at"] == 0:
        limit_file_size(c["fsize"])
    try:
        infer_scene(model, scene, out=Path(c["out"]), callback=lower_limit, **ARGS["kw"])
        RESULT["scenes"][case] = report(None)
    except BaseException as e:
        RESULT["scenes"][case] = report(e)
    finally:
        unlimit()
"""


def run_child(code: str, args: dict[str, Any]) -> Any:
    """Run ``code`` in a child Python with ``limit_file_size(n)``/``unlimit()`` defined, ``SIGXFSZ`` ignored and the
    JSON-able ``args`` as ``ARGS``; the child assigns its JSON-able result to ``RESULT``, which is returned.  Skips
    where RLIMIT_FSIZE cannot be used."""
    if sys.platform == "win32":
        pytest.skip("RLIMIT_FSIZE is POSIX only")
    import resource

    if resource.getrlimit(resource.RLIMIT_FSIZE)[1] != resource.RLIM_INFINITY:
        pytest.skip("a hard RLIMIT_FSIZE is already set: the child could not lift its limit again")
    script = _CHILD_PRELUDE + textwrap.dedent(code) + "\nprint('RESULT=' + json.dumps(RESULT))\n"
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps({**args, "root": str(ROOT)})],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT=")]
    assert proc.returncode == 0 and lines, f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1][len("RESULT=") :])


@pytest.fixture(scope="module")
def fsize_child(tmp_path_factory, model_file: Path, scene_files: list[Path]) -> dict[str, Any]:
    """One child process (each costs seconds of imports) runs every RLIMIT_FSIZE case: each writer replacing an
    existing file (its own folder), then infer_scene for each :data:`FSIZE_SCENES` case (its own folder ``out``).

    Returns:
        ``folders``/``originals`` (bytes before) of the writers, ``outs`` of the scenes, and the child's reports
        ``writers``/``scenes`` by name.
    """
    root = tmp_path_factory.mktemp("fsize")
    folders: dict[str, Path] = {}
    originals: dict[str, dict[str, bytes]] = {}
    for name, w in WRITERS.items():
        folders[name] = root / name.replace(".", "_")
        folders[name].mkdir()
        w.write(folders[name] / w.filename, 0)
        originals[name] = snapshot(folders[name] / w.filename)
    outs: dict[str, Path] = {}
    for case, (suffix, limit_at, fsize, _) in FSIZE_SCENES.items():
        outs[case] = root / case / "out" / f"scene{suffix}"
        outs[case].parent.mkdir(parents=True)
    args = {
        "folders": {k: str(v) for k, v in folders.items()},
        "model": str(model_file),
        "files": [str(p) for p in scene_files],
        "kw": SCENE_KW,
        "scenes": {
            case: {"out": str(outs[case]), "limit_at": limit_at, "fsize": fsize}
            for case, (_, limit_at, fsize, _) in FSIZE_SCENES.items()
        },
    }
    return {"folders": folders, "originals": originals, "outs": outs, **run_child(_CHILD, args)}


def check_child_error(rep: dict[str, Any], path: Path, *, gdal: bool = False) -> None:
    """The child's exception is the documented error, caused by EFBIG (GDAL writers do not pass the errno on)."""
    assert rep["type"] == "OutputWriteError", rep
    assert "AnySatError" in rep["mro"] and "OSError" in rep["mro"], rep
    assert rep["path"] == str(path), rep
    if gdal:
        assert rep["chain"][1]["type"] == "RasterioIOError", rep
    else:
        assert any(c["errno"] == errno.EFBIG for c in rep["chain"]), rep
        assert os.strerror(errno.EFBIG) in rep["message"], rep
    check_message(rep["message"], path)


def test_writers_past_the_file_size_limit(fsize_child) -> None:
    """Each writer, replacing an existing file, hits RLIMIT_FSIZE (EFBIG) in a child process."""
    for name, w in WRITERS.items():
        folder = fsize_child["folders"][name]
        path = folder / w.filename
        check_child_error(fsize_child["writers"][name], path, gdal=name == "write_geotiff")
        assert listing(folder) == [w.filename], f"{name}: a partial or temporary file was left behind"
        assert snapshot(path) == fsize_child["originals"][name], f"{name}: the existing file was changed"


@pytest.mark.parametrize("case", list(FSIZE_SCENES))
def test_infer_scene_past_the_file_size_limit(fsize_child, model, scene, reference, case) -> None:
    suffix, _, _, windows_left = FSIZE_SCENES[case]
    out = fsize_child["outs"][case]
    rep = fsize_child["scenes"][case]
    check_child_error(rep, out, gdal=suffix == ".tif")
    assert f".{out.name}.partial.zarr" in rep["message"], "the message should say where the finished strips are kept"
    assert not out.exists()
    assert listing(out.parent) == [f".{out.name}.partial.zarr"], "only the resume store may be left"

    seen: list[int] = []
    infer_scene(model, scene, out=out, callback=lambda d, t: seen.append(d), **SCENE_KW)
    assert len(seen) == windows_left, "finished strips were computed again instead of resumed"
    assert listing(out.parent) == [out.name]
    assert_same_output(reference[suffix], out)
