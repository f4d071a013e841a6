"""Atomic file output: write to a temporary name in the target folder, then rename into place.

Every file the package writes goes through :func:`atomic_write`, so a crash, a full disk or a kill never leaves
a partial file under the final name nor a temporary file behind, and an existing file is replaced only by a
complete one.  Failures of the operating system (missing or read-only folder, full disk, file size limit)
become :class:`~anysat_core.errors.OutputWriteError` naming the path.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from anysat_core.errors import AnySatError, OutputWriteError

__all__ = ["atomic_write", "chained_os_error"]


def chained_os_error(e: BaseException) -> OSError | None:
    """``e`` if it is an OSError, else the first OSError it was raised from or while handling (e.g. torch.save
    reports a failed write of its file object as a RuntimeError raised while handling the OSError)."""
    x: BaseException | None = e
    for _ in range(8):
        if x is None or isinstance(x, OSError):
            return x
        x = x.__cause__ or x.__context__
    return None


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], what: str, *, suffix: str = ".tmp", mkdir: bool = True) -> Iterator[Path]:
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
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        os_error = None if isinstance(e, AnySatError) else chained_os_error(e)
        if os_error is None or not isinstance(e, Exception):
            raise
        raise OutputWriteError.from_os_error(path, os_error, what) from e
