"""Exceptions raised by :mod:`anysat_core`.

Every error the package raises for bad *user input* derives from :class:`AnySatError`
and from the closest builtin exception, so ``except ValueError`` style handlers keep
working.  Messages say what came in, what was expected and how to fix it.

This module imports nothing from the package (it is a leaf).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = [
    "AnySatError",
    "BatchSizeMismatchError",
    "ChannelMismatchError",
    "CheckpointError",
    "CheckpointMismatchError",
    "ConfigError",
    "CorruptFileError",
    "DTypeError",
    "DatasetNotFoundError",
    "DatesError",
    "EmptyTileError",
    "EmulatedPrecisionWarning",
    "ExtentMismatchError",
    "InputShapeError",
    "MemoryLimitError",
    "MetricInputError",
    "MissingCRSError",
    "NonFiniteInputError",
    "NonSquareTileError",
    "OutputError",
    "OutputExistsError",
    "OutputLockedError",
    "OutputWriteError",
    "PatchSizeError",
    "PretrainedWeightsError",
    "ProbeError",
    "ResumeMismatchError",
    "SchedulerUnreachableError",
    "TileIndexError",
    "UnitsMismatchWarning",
    "UnknownDatasetError",
    "UnknownModalityError",
    "UnnormalizedInputWarning",
]


class AnySatError(Exception):
    """Base class of every error raised by anysat_core for bad input.

    It is mixed into a builtin (``class E(AnySatError, OSError)``) and comes first in the method order, so its
    ``__str__`` wins: ``str(error)`` is the message as given, whatever the builtin (``KeyError`` would quote it,
    ``OSError`` built with two arguments would format ``[Errno ...]``).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UnknownModalityError(AnySatError, LookupError):
    """A modality key that is not in the registry (or not in this model)."""


class TileIndexError(AnySatError, IndexError):
    """A tile position or index outside a scene's grid (an IndexError, so iteration protocols still stop on it)."""


class UnknownDatasetError(AnySatError, LookupError):
    """A dataset name that is not registered (the message lists the registered names)."""


class ConfigError(AnySatError, ValueError):
    """An invalid model configuration (unknown size, inconsistent widths...)."""


class InputShapeError(AnySatError, ValueError):
    """A tensor with the wrong number of dimensions or an inconsistent shape."""


class ChannelMismatchError(InputShapeError):
    """A modality tensor whose channel count differs from the registry."""


class NonSquareTileError(InputShapeError):
    """A tile whose height and width differ (AnySat needs square tiles)."""


class BatchSizeMismatchError(InputShapeError):
    """Modalities (or their dates/masks) with different batch sizes."""


class ExtentMismatchError(AnySatError, ValueError):
    """Modalities that do not cover the same ground extent."""


class PatchSizeError(AnySatError, ValueError):
    """A patch size that is not a positive multiple of the modality step or does not divide the tile."""


class DatesError(AnySatError, ValueError):
    """A time series without ``<modality>_dates`` or with dates that do not fit the series."""


class DTypeError(AnySatError, TypeError):
    """A tensor whose dtype is not the expected kind (e.g. integer images)."""


class NonFiniteInputError(AnySatError, ValueError):
    """NaN or infinite values in an input tensor."""


class OutputError(AnySatError, ValueError):
    """An unknown ``output`` mode or an invalid ``output_modality``."""


class CheckpointError(AnySatError, ValueError):
    """A checkpoint file that cannot be read or whose format is not recognised."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint whose keys or shapes do not match the model.

    Attributes:
        missing: keys the model needs but the checkpoint lacks.
        unexpected: keys in the checkpoint the model does not have.
        mismatched: ``(key, checkpoint_shape, model_shape)`` triples.
    """

    def __init__(
        self,
        message: str,
        *,
        missing: list[str] | None = None,
        unexpected: list[str] | None = None,
        mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] | None = None,
    ) -> None:
        super().__init__(message)
        self.missing = list(missing or [])
        self.unexpected = list(unexpected or [])
        self.mismatched = list(mismatched or [])


class PretrainedWeightsError(AnySatError, OSError):
    """Released weights that cannot be downloaded, found or verified."""


class DatasetNotFoundError(AnySatError, FileNotFoundError):
    """A dataset root (or a file the layout requires) that is missing.

    The message names the root given, the layout expected under it and where to download the data.
    """


class CorruptFileError(AnySatError, OSError):
    """A data file that exists but cannot be read (truncated, wrong format, wrong content)."""


class MissingCRSError(AnySatError, ValueError):
    """A raster or feature map without a coordinate reference system where one is needed."""


class EmptyTileError(AnySatError, ValueError):
    """A tile with no valid pixel (everything nodata or masked)."""


class OutputExistsError(AnySatError, FileExistsError):
    """An output file exists already and overwriting was not asked for."""


class OutputLockedError(AnySatError, FileExistsError):
    """An output another run is writing right now (its lock is held); wait for it or choose another path."""


class ResumeMismatchError(OutputError):
    """A partial output made from other inputs or settings than the run asked to resume it (names what changed)."""


class MemoryLimitError(AnySatError, MemoryError):
    """A request whose memory estimate exceeds the allowed share of this machine's memory (refused before
    allocating anything)."""


class SchedulerUnreachableError(AnySatError, ConnectionError):
    """A Dask scheduler address that does not answer."""


class MetricInputError(AnySatError, ValueError):
    """Metric inputs with invalid values (labels out of range, probabilities outside [0, 1], no samples)."""


class ProbeError(AnySatError, ValueError):
    """A probe that cannot be fitted: one class only, too few labels for the folds asked, unfitted probe."""


class OutputWriteError(AnySatError, OSError):
    """An output that cannot be written (read-only or missing folder, full disk, invalid path).

    Attributes:
        path: the output path asked for.
    """

    def __init__(self, message: str, path: str | os.PathLike[str]) -> None:
        super().__init__(message)
        self.path = str(path)

    @classmethod
    def from_os_error(
        cls,
        path: str | os.PathLike[str],
        error: BaseException,
        what: str,
        *,
        left: str = "nothing was written there",
    ) -> OutputWriteError:
        """The error for a failed write of ``path``: the path, the reason (``error`` and its explicit causes, e.g.
        GDAL's detail), the free space left on that disk, what was left behind (``left``) and what to do.

        ``what`` completes "cannot ...", e.g. ``"write the GeoTIFF"``.
        """
        reasons: list[str] = []
        x: BaseException | None = error
        while x is not None and len(reasons) < 4:
            text = x.strerror if isinstance(x, OSError) and x.strerror else str(x)
            text = text.replace("See previous exception for details.", "").strip() or type(x).__name__
            if isinstance(x, OSError) and x.filename and str(x.filename) not in text:
                text += f" on {str(x.filename)!r}"
            if text not in reasons:
                reasons.append(text)
            x = x.__cause__
        free = ""
        try:
            folder = next(p for p in Path(path).absolute().parents if p.is_dir())
            n = shutil.disk_usage(folder).free
            k, unit = next(
                (k, u) for k, u in ((3, "GiB"), (2, "MiB"), (1, "KiB"), (0, "bytes")) if n >= 1024**k or not k
            )
            free = f", {n / 1024**k:.4g} {unit} free on its disk"
        except (OSError, StopIteration):
            pass
        return cls(
            f"cannot {what} {str(path)!r}: {'; '.join(reasons)} ({type(error).__name__}{free}); {left}. Check that "
            "the folder exists, is writable and has free space (and that no file size limit applies), then try "
            "again, or choose another path",
            path,
        )


class UnnormalizedInputWarning(UserWarning):
    """Model inputs that look like raw file values (channel means or spreads far from a normalised 0 and 1); shown
    once per modality and process."""


class EmulatedPrecisionWarning(UserWarning):
    """``precision="bf16"`` asked for on a device without bf16 matrix units (a CPU without avx512_bf16 or AMX, a
    CUDA device older than compute capability 8.0), where bf16 is emulated and slower than fp32."""


class UnitsMismatchWarning(UserWarning):
    """A scene whose values are in other units than the statistics chosen to normalise them (reflectance in 0-1
    against statistics of reflectance x 10000, linear SAR power against dB...): the model would see nearly constant
    or saturated inputs."""
