"""The explorer reads only under its data roots; settings from the environment and --args."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from anysat_core.errors import AnySatError, ConfigError, DatasetNotFoundError
from app.config import AppConfig, PathOutsideRootsError, resolve_under_roots


def test_paths_under_roots_resolve(tmp_path: Path) -> None:
    (tmp_path / "a.tif").write_bytes(b"x")
    assert resolve_under_roots("a.tif", [tmp_path]) == tmp_path / "a.tif"
    assert resolve_under_roots(str(tmp_path / "a.tif"), [tmp_path]) == tmp_path / "a.tif"


@pytest.mark.parametrize("bad", ["../outside.tif", "/etc/passwd", "sub/../../outside.tif"])
def test_paths_leaving_the_roots_are_refused(tmp_path: Path, bad: str) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "outside.tif").write_bytes(b"x")
    with pytest.raises(PathOutsideRootsError, match="outside the data roots"):
        resolve_under_roots(bad, [root])


def test_symlink_leading_out_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.tif").write_bytes(b"x")
    os.symlink(tmp_path / "secret.tif", root / "link.tif")
    with pytest.raises(PathOutsideRootsError):
        resolve_under_roots("link.tif", [root])


def test_missing_file_and_no_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        resolve_under_roots("nope.tif", [tmp_path])
    with pytest.raises(PathOutsideRootsError, match="no data root"):
        resolve_under_roots("a.tif", [])
    assert issubclass(PathOutsideRootsError, AnySatError)


def test_settings_from_env_and_args(tmp_path: Path) -> None:
    env = {"ANYSAT_DATA_ROOTS": str(tmp_path), "ANYSAT_UPLOAD_MAX_MB": "5", "ANYSAT_APP_OFFLINE": "1"}
    cfg = AppConfig.from_env(["--output-root", str(tmp_path / "out"), "--weights", "random"], env)
    assert cfg.data_roots == (tmp_path.resolve(),)
    assert cfg.upload_max_mb == 5 and cfg.offline and cfg.weights == "random"
    assert cfg.output_root == (tmp_path / "out").resolve()
    with pytest.raises(ConfigError, match="unknown explorer argument"):
        AppConfig.from_env(["--bogus"], {})
    with pytest.raises(ConfigError, match="not a folder"):
        AppConfig.from_env(["--data-root", str(tmp_path / "missing")], {})
