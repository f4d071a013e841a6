"""Resume that is correct or refuses: scene runs killed (SIGKILL) at any point resume to the identical output, a
rerun with other inputs or settings refuses, damaged chunks are computed again, two runs on one output exclude each
other, and nothing temporary is left.

The scene: one-date S2 GeoTIFFs of 24 x 56 pixels (240 m x 560 m) written by the tests; windows of 120 m with 40 m
overlap make 3 strips x 7 window columns, and a small ``buffer_mb`` makes panels of 2 window columns: 4 panels, 12
steps (commits).  Runs to be killed run in a forked child process whose progress callback or bookkeeping hook
(``infer_scene(_crash_hook=...)``, a private test hook called at each bookkeeping point) sends itself SIGKILL; the
rerun runs here.  The model is the test-size AnySat.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from anysat_core import AnySat, OutputExistsError, OutputLockedError
from anysat_core.data.raster import RasterSource, open_rasters
from anysat_core.errors import ResumeMismatchError
from anysat_core.inference import infer_scene, plan_scene
from tests.helpers.scenes import DATES, panel_mb, write_s2_series

VARS = ("anysat_features", "valid_fraction")
N_STEPS = 12


@pytest.fixture(scope="module")
def model() -> AnySat:
    torch.manual_seed(0)
    return AnySat(size="test").eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[Path]:
    return write_s2_series(tmp_path_factory.mktemp("scene"), height=24, width=56, seed=3, dates=DATES[:1])


def _scene(files):
    return open_rasters(RasterSource(files, modality="s2"), tile_m=120)


@pytest.fixture(scope="module")
def kw(model) -> dict:
    return {
        "patch_size_m": 20,
        "window_m": 120,
        "overlap_m": 40,
        "output": "patch",
        "batch_size": 2,
        "buffer_mb": panel_mb(model.embed_dim, "patch", 2),
        "progress": False,
    }


@pytest.fixture(scope="module")
def reference(model, files, kw, tmp_path_factory) -> dict[str, Path]:
    """Uninterrupted Zarr and COG outputs (the plan: 4 panels x 3 strips)."""
    scene = _scene(files)
    plan = plan_scene(
        model,
        scene,
        **{k: kw[k] for k in ("patch_size_m", "window_m", "overlap_m", "output")},
        buffer_mb=kw["buffer_mb"],
    )
    assert (plan.n_panels, plan.n_rows, plan.n_cols) == (4, 3, 7)
    folder = tmp_path_factory.mktemp("reference")
    return {s: infer_scene(model, scene, out=folder / f"ref{s}", **kw) for s in (".zarr", ".tif")}


def _same(ref: Path, got: Path) -> None:
    if ref.suffix == ".zarr":
        a, b = xr.open_zarr(ref), xr.open_zarr(got)
        for v in VARS:
            assert a[v].values.tobytes() == b[v].values.tobytes(), v
        assert a.attrs == b.attrs
    else:
        import rasterio

        with rasterio.open(ref) as fa, rasterio.open(got) as fb:
            assert fa.read().tobytes() == fb.read().tobytes()
            assert fa.tags() == fb.tags()


def _only(folder: Path, *names: str) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(names), "leftovers"


# ------------------------------------------------------------------------------------------------ killed children
def _child(model, files, out: Path, kw: dict, point: str | None, step: int, window: int) -> None:
    torch.set_num_threads(1)

    def hook(p: str, k: int) -> None:
        if p == point and k == step:
            os.kill(os.getpid(), signal.SIGKILL)

    def callback(done: int, total: int) -> None:
        if done == window:
            os.kill(os.getpid(), signal.SIGKILL)

    infer_scene(model, _scene(files), out=out, _crash_hook=hook, callback=callback, **kw)


def _killed_run(model, files, out: Path, kw: dict, point: str | None = None, step: int = -1, window: int = -1) -> None:
    """Run infer_scene in a forked child that SIGKILLs itself at the hook ``(point, step)`` or after ``window``
    windows of its run; assert that it died there."""
    proc = mp.get_context("fork").Process(target=_child, args=(model, files, out, kw, point, step, window))
    proc.start()
    proc.join(120)
    if proc.is_alive():
        proc.kill()
        pytest.fail(f"child killed at {(point, step, window)} hung")
    assert proc.exitcode == -signal.SIGKILL, (point, step, window, proc.exitcode)


def _resume_and_compare(model, files, out: Path, kw: dict, ref: Path) -> None:
    assert infer_scene(model, _scene(files), out=out, **kw) == out
    _same(ref, out)
    _only(out.parent, out.name)


#: kill points of the fast test, in the order a run meets them: every kind of bookkeeping point once, including the
#: first strip of a later panel (step 4 follows panel 0) and the end of the run; each rerun is killed at the next
CHAIN = [
    ("create:store", 0),
    ("commit:rows", 1),
    ("commit:record", 1),
    ("commit:state", 1),
    ("commit:done", 2),
    ("commit:state", 3),
    ("commit:rows", 4),
    ("commit:state", N_STEPS),
    ("finish:consolidated", N_STEPS),
    ("finish:phase", N_STEPS),
    ("finish:placed", N_STEPS),
]


@pytest.mark.parametrize("suffix", [".zarr", ".tif"])
def test_kills_at_bookkeeping_points_resume_to_the_same_output(model, files, kw, reference, tmp_path, suffix) -> None:
    """A chain of runs, each killed at the next bookkeeping point (creation, inside commits, at commit boundaries,
    while finishing), then a rerun: the output is the uninterrupted one and nothing else is left."""
    out = tmp_path / f"f{suffix}"
    for point, step in CHAIN:
        _killed_run(model, files, out, kw, point, step)
    # what a run killed while converting the COG or replacing an output leaves: removed by the next run
    stale = [tmp_path / f".{out.name}.k2j4.cog.tmp", tmp_path / f"..{out.name}.k2j4.cog.tmp.x9.blocks.tif"]
    for p in stale:
        p.write_bytes(b"half a file")
    _resume_and_compare(model, files, out, kw, reference[suffix])


def test_kills_at_two_commit_boundaries_and_mid_strip(model, files, kw, reference, tmp_path) -> None:
    """The unmarked variant of the every-boundary test: killed right after commits 3 (end of panel 0) and 7, and
    in the middle of a strip, each resumed on its own."""
    for i, (point, step, window) in enumerate([("commit:state", 3, -1), ("commit:state", 7, -1), (None, -1, 5)]):
        out = tmp_path / f"k{i}" / "f.zarr"
        _killed_run(model, files, out, kw, point, step, window)
        _resume_and_compare(model, files, out, kw, reference[".zarr"])


@pytest.mark.slow
def test_kill_at_every_commit_boundary_and_point_resumes(model, files, kw, reference, tmp_path) -> None:
    """Killed at every bookkeeping point of every step (each commit boundary and the points inside it), after every
    window, and at every point of the end: each resumed alone to the uninterrupted output."""
    kills = [("create:store", 0, -1)]
    kills += [
        (p, k, -1)
        for k in range(1, N_STEPS + 1)
        for p in ("commit:rows", "commit:record", "commit:state", "commit:done")
    ]
    kills += [(p, N_STEPS, -1) for p in ("finish:consolidated", "finish:phase", "finish:placed")]
    kills += [(None, -1, w) for w in range(1, 21 + 1)]
    for i, (point, step, window) in enumerate(kills):
        out = tmp_path / f"k{i}" / "f.zarr"
        _killed_run(model, files, out, kw, point, step, window)
        _resume_and_compare(model, files, out, kw, reference[".zarr"])
    # killed once everything was in place and cleaned, before the lock was released: the output is the finished one,
    # so a rerun refuses to overwrite it, and takes the dead run's lock away
    out = tmp_path / "end" / "f.zarr"
    _killed_run(model, files, out, kw, "finish:cleaned", N_STEPS)
    assert (out.parent / ".f.zarr.lock").exists()
    with pytest.raises(OutputExistsError):
        infer_scene(model, _scene(files), out=out, **kw)
    _same(reference[".zarr"], out)
    _only(out.parent, "f.zarr")


# ------------------------------------------------------------------------------------------------ refusals
class _Stop(RuntimeError):
    pass


def _stop_at(n: int):
    def cb(done: int, total: int) -> None:
        if done == n:
            raise _Stop("simulated crash")

    return cb


def test_rerun_after_a_changed_input_or_setting_refuses(model, files, kw, reference, tmp_path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    mine = [src / f.name for f in files]
    for f, m in zip(files, mine):
        m.write_bytes(f.read_bytes())
    out = tmp_path / "out" / "f.zarr"
    with pytest.raises(_Stop):
        infer_scene(model, _scene(mine), out=out, callback=_stop_at(9), **kw)
    _only(out.parent, ".f.zarr.partial.zarr")  # the lock is gone after a handled failure

    # another setting: named, with the ways to start over
    with pytest.raises(ResumeMismatchError, match=r"batch_size: 2 -> 1.*resume=False.*overwrite=True.*delete"):
        infer_scene(model, _scene(mine), out=out, **{**kw, "batch_size": 1})
    # another precision: the partial output is not mixed with bf16 windows
    with pytest.raises(ResumeMismatchError, match=r"attribute precision: fp32 -> bf16"):
        infer_scene(model, _scene(mine), out=out, **{**kw, "precision": "bf16"})
    # the same file rewritten with other values (same size): the file is named
    import rasterio

    with rasterio.open(mine[0], "r+") as f:
        data = f.read()
        f.write(data * 1.5)
    with pytest.raises(ResumeMismatchError, match=r"input s2\[0\] .*s2_20200110\.tif") as ei:
        infer_scene(model, _scene(mine), out=out, **kw)
    assert "modified" in str(ei.value) and "batch_size" not in str(ei.value)
    _only(out.parent, ".f.zarr.partial.zarr")  # refused: nothing changed
    # resume=False starts over with the new input
    for f, m in zip(files, mine):
        m.write_bytes(f.read_bytes())
    infer_scene(model, _scene(mine), out=out, resume=False, **kw)
    _same(reference[".zarr"], out)
    _only(out.parent, "f.zarr")


def test_rerun_with_another_probe_or_in_memory_input_refuses(model, files, kw, tmp_path) -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, model.embed_dim))
    p1 = LogisticRegression(max_iter=100).fit(X, np.arange(40) % 2)
    p2 = LogisticRegression(max_iter=100).fit(X, np.arange(40) % 3)
    out = tmp_path / "f.zarr"
    with pytest.raises(_Stop):
        infer_scene(model, _scene(files), out=out, probe=p1, callback=_stop_at(5), **kw)
    with pytest.raises(ResumeMismatchError, match=r"probe: .*LogisticRegression, pickle sha256"):
        infer_scene(model, _scene(files), out=out, probe=p2, **kw)
    with pytest.raises(ResumeMismatchError, match=r"normalization statistics: .* -> none \(raw file values\)"):
        infer_scene(model, _scene(files), out=out, probe=p1, normalize=None, **kw)
    infer_scene(model, _scene(files), out=out, probe=p1, **kw)  # the same run resumes

    import rioxarray

    arr = rioxarray.open_rasterio(files[0]).load()
    mem = tmp_path / "m.zarr"

    def scene_of(a):
        return open_rasters(RasterSource([a], modality="s2", dates=[DATES[0]]), tile_m=120)

    with pytest.raises(_Stop):
        infer_scene(model, scene_of(arr), out=mem, callback=_stop_at(5), **kw)
    changed = arr.copy(data=arr.values.copy())
    changed.values[0, 3, 3] += 1.0
    with pytest.raises(ResumeMismatchError, match=r"input s2\[0\].*in-memory array"):
        infer_scene(model, scene_of(changed), out=mem, **kw)
    infer_scene(model, scene_of(arr), out=mem, **kw)  # the same values resume


# ------------------------------------------------------------------------------------------------ damaged chunks
def test_truncated_and_deleted_chunks_are_computed_again(model, files, kw, reference, tmp_path, caplog) -> None:
    out = tmp_path / "f.zarr"
    _killed_run(model, files, out, kw, "commit:state", N_STEPS)  # all strips committed, not finished
    store = tmp_path / ".f.zarr.partial.zarr"
    feats = store / "anysat_features" / "c" / "0"
    truncated = feats / "1" / "1"  # rows chunk 1 of panel 1: written by step 5
    truncated.write_bytes(truncated.read_bytes()[:10])
    (store / "valid_fraction" / "c" / "2" / "3").unlink()  # rows chunk 2 of panel 3: step 12
    seen: list[int] = []
    with caplog.at_level("WARNING", logger="anysat_core.inference"):
        infer_scene(model, _scene(files), out=out, callback=lambda d, t: seen.append(d), **kw)
    assert "10 bytes" in caplog.text and "panel 1" in caplog.text
    assert len(seen) == 21 - 6  # panel 0 (2 window columns x 3 strips) kept; panels 1-3 computed again
    _same(reference[".zarr"], out)
    _only(tmp_path, "f.zarr")

    # a carried-columns file and the carried rows: damaged, then computed again
    out2 = tmp_path / "g.zarr"
    _killed_run(model, files, out2, kw, "commit:state", 8)
    rdir = tmp_path / ".g.zarr.partial.zarr" / "_anysat_resume"
    (rdir / "rows_8.npy").write_bytes(b"junk")
    cols = sorted(rdir.glob("cols_3_*.npy"))
    assert cols
    cols[0].unlink()
    infer_scene(model, _scene(files), out=out2, **kw)
    _same(reference[".zarr"], out2)
    _only(tmp_path, "f.zarr", "g.zarr")


# ------------------------------------------------------------------------------------------------ lock
def _holder(model, files, out: Path, kw: dict, flag: Path) -> None:
    torch.set_num_threads(1)

    def callback(done: int, total: int) -> None:
        if done == 1:
            flag.write_text("started")
            time.sleep(120)

    infer_scene(model, _scene(files), out=out, callback=callback, **kw)


def test_concurrent_run_is_locked_out_and_a_dead_holder_is_taken_over(model, files, kw, reference, tmp_path) -> None:
    out = tmp_path / "f.zarr"
    flag = tmp_path / "started.flag"
    proc = mp.get_context("fork").Process(target=_holder, args=(model, files, out, kw, flag))
    proc.start()
    try:
        for _ in range(600):
            if flag.exists() or not proc.is_alive():
                break
            time.sleep(0.1)
        assert flag.exists(), "the first run did not start"
        with pytest.raises(OutputLockedError, match=rf"f\.zarr.*pid {proc.pid} on host ") as ei:
            infer_scene(model, _scene(files), out=out, **kw)
        assert isinstance(ei.value, FileExistsError)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
    flag.unlink()
    assert (tmp_path / ".f.zarr.lock").exists()  # left by the killed holder: taken over
    infer_scene(model, _scene(files), out=out, **kw)
    _same(reference[".zarr"], out)
    _only(tmp_path, "f.zarr")


@pytest.mark.parametrize("height", [12, 16])
def test_short_scenes_killed_at_a_panel_change_resume(model, kw, tmp_path, height) -> None:
    """Scenes one and two windows tall (the carried rows of the last strip are none): killed right after the last
    commit of panel 0, and inside the first commit of panel 1, each run resumes to the uninterrupted output."""
    files = write_s2_series(tmp_path / "in", height=height, width=56, seed=4, dates=DATES[:1])
    n_rows = 1 if height == 12 else 2
    ref = infer_scene(model, _scene(files), out=tmp_path / "ref" / "f.zarr", **kw)
    for i, (point, step) in enumerate(
        [("commit:state", n_rows), ("commit:record", n_rows + 1), ("commit:done", n_rows)]
    ):
        out = tmp_path / f"k{i}" / "f.zarr"
        _killed_run(model, files, out, kw, point, step)
        _resume_and_compare(model, files, out, kw, ref)
