"""Where the explorer may read and write, and how it is served: data roots, output root, upload cap, offline mode.

Sources of the settings, later ones win:

1. defaults (no data root, outputs under ``~/anysat-explorer-outputs``, 200 MB uploads, basemap when reachable);
2. environment variables ``ANYSAT_DATA_ROOTS`` (folders separated by ``os.pathsep``), ``ANYSAT_OUTPUT_ROOT``,
   ``ANYSAT_UPLOAD_MAX_MB``, ``ANYSAT_APP_OFFLINE=1`` (no basemap requests), ``ANYSAT_APP_SIZE`` (model size for
   random weights), ``ANYSAT_APP_WEIGHTS`` (the weights selected when a session starts) and
   ``ANYSAT_DASK_SCHEDULER`` (scene inference on a Dask cluster);
3. ``panel serve app --args --data-root DIR [--data-root DIR ...] --output-root DIR --upload-max-mb N --offline``.

The app reads files only under its data roots: :func:`resolve_under_roots` refuses ``..`` that climbs out, symlinks
leading out and absolute paths elsewhere with :class:`PathOutsideRootsError`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from anysat_core.errors import AnySatError, ConfigError

__all__ = ["AppConfig", "PathOutsideRootsError", "UploadTooLargeError", "resolve_under_roots"]


class PathOutsideRootsError(AnySatError, PermissionError):
    """A path the app was asked to read lies outside its configured data roots."""


class UploadTooLargeError(AnySatError, ValueError):
    """An upload is larger than the configured cap."""


@dataclasses.dataclass(frozen=True)
class AppConfig:
    """Settings of one explorer process (shared by its sessions).

    Attributes:
        data_roots: folders the app may read (datasets found under them, own rasters, checkpoints).
        output_root: folder exports are written under (nothing is written elsewhere).
        upload_max_mb: largest accepted upload, in MB.
        offline: never request basemap tiles (a blank background instead).
        size: AnySat size used for random weights ("test", "tiny", "small", "base").
        weights: weights selected when a session starts ("geoplex-mini", "random", "base" or "file:<path>").
        scheduler: address of a Dask scheduler for scene inference ("" runs it in the server process).
    """

    data_roots: tuple[Path, ...] = ()
    output_root: Path = Path.home() / "anysat-explorer-outputs"
    upload_max_mb: float = 200.0
    offline: bool = False
    size: str = "tiny"
    weights: str = "geoplex-mini"
    scheduler: str = ""

    @classmethod
    def from_env(cls, argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> AppConfig:
        """Settings from the environment and ``panel serve app --args ...`` (``argv``; default none).

        Raises:
            ConfigError: an unknown argument, a data root that is not a folder, a bad number.
        """
        env = os.environ if environ is None else environ
        roots = [p for p in env.get("ANYSAT_DATA_ROOTS", "").split(os.pathsep) if p.strip()]
        out = env.get("ANYSAT_OUTPUT_ROOT") or str(cls.output_root)
        cap = env.get("ANYSAT_UPLOAD_MAX_MB") or str(cls.upload_max_mb)
        offline = env.get("ANYSAT_APP_OFFLINE", "").strip().lower() in ("1", "true", "yes")
        size = env.get("ANYSAT_APP_SIZE") or cls.size
        weights = env.get("ANYSAT_APP_WEIGHTS") or cls.weights
        scheduler = env.get("ANYSAT_DASK_SCHEDULER") or cls.scheduler

        parser = argparse.ArgumentParser(prog="panel serve app --args", add_help=False, exit_on_error=False)
        parser.add_argument("--data-root", action="append", default=[])
        parser.add_argument("--output-root")
        parser.add_argument("--upload-max-mb")
        parser.add_argument("--offline", action="store_true")
        parser.add_argument("--size")
        parser.add_argument("--weights")
        parser.add_argument("--scheduler")
        try:
            args, unknown = parser.parse_known_args(list(argv or []))
        except (argparse.ArgumentError, SystemExit) as e:
            raise ConfigError(f"explorer arguments {list(argv or [])}: {e}") from None
        if unknown:
            raise ConfigError(
                f"unknown explorer argument(s) {unknown}; expected --data-root DIR (repeatable), --output-root DIR, "
                "--upload-max-mb N, --offline, --size NAME, --weights NAME, --scheduler ADDRESS"
            )
        roots += args.data_root
        try:
            cap_mb = float(args.upload_max_mb or cap)
        except ValueError:
            raise ConfigError(f"upload cap {args.upload_max_mb or cap!r}; expected a number of MB") from None
        resolved = []
        for r in roots:
            p = Path(r).expanduser().resolve()
            if not p.is_dir():
                raise ConfigError(f"data root {r!r} is not a folder; create it or remove it from ANYSAT_DATA_ROOTS")
            resolved.append(p)
        return cls(
            data_roots=tuple(dict.fromkeys(resolved)),
            output_root=Path(args.output_root or out).expanduser().resolve(),
            upload_max_mb=cap_mb,
            offline=offline or args.offline,
            size=args.size or size,
            weights=args.weights or weights,
            scheduler=args.scheduler or scheduler,
        )


def resolve_under_roots(path: str | os.PathLike[str], roots: Sequence[Path]) -> Path:
    """``path`` resolved (symlinks followed), if it lies under one of ``roots``.

    A relative path is taken relative to each root in turn (the first that exists wins).

    Raises:
        PathOutsideRootsError: no root is configured, or the resolved path is outside every root (``..``, a symlink
            leading out, an absolute path elsewhere).
        DatasetNotFoundError: the path is under a root but does not exist.
    """
    from anysat_core.errors import DatasetNotFoundError

    text = str(path).strip()
    if not roots:
        raise PathOutsideRootsError(
            f"{text!r}: this explorer has no data root, so it reads no files; start it with "
            "`panel serve app --args --data-root DIR` or set ANYSAT_DATA_ROOTS"
        )
    p = Path(text).expanduser()
    candidates = [p] if p.is_absolute() else [r / p for r in roots]
    allowed = ", ".join(str(r) for r in roots)
    for c in candidates:
        real = c.resolve()
        if not any(real == r or r in real.parents for r in roots):
            raise PathOutsideRootsError(
                f"{text!r} resolves to {real}, outside the data roots ({allowed}); the explorer only reads files "
                "under its data roots: copy the file there or add its folder with --data-root"
            )
        if real.exists():
            return real
    raise DatasetNotFoundError(f"{text!r} does not exist under the data roots ({allowed}); check the name")
