"""Refuse early: the memory a request will need, compared before anything is allocated with the share of this
machine's memory the package may use.

Every place that is about to allocate something whose size follows from user input (a scene accumulator, a model
built from a checkpoint's config, a GeoPlex-mini world, a tile read) estimates its bytes and calls
:func:`check_memory`, which raises :class:`~anysat_core.errors.MemoryLimitError` when the estimate exceeds
:func:`memory_limit_bytes`: a request that could never fit is refused in milliseconds, with the estimate and the fix,
instead of swapping the machine to a halt or being killed after minutes.

The limit is a share (default :data:`DEFAULT_SHARE` = 0.5) of the physical memory (``os.sysconf``; ``psutil`` when
``sysconf`` does not know it; the lower container limit of a cgroup when there is one).  Change the share with the
``ANYSAT_MEMORY_SHARE`` environment variable (a number in (0, 1], read at every check) or with
:func:`set_memory_share` (which takes precedence; ``None`` goes back to the variable).  When the memory of the machine
cannot be found there is no limit.

This module imports nothing heavy (no torch, numpy or xarray).
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from anysat_core.errors import ConfigError, MemoryLimitError

__all__ = [
    "DEFAULT_SHARE",
    "ENV_VAR",
    "check_memory",
    "format_bytes",
    "memory_limit_bytes",
    "memory_share",
    "physical_memory_bytes",
    "set_memory_share",
]

#: Environment variable holding the share of the machine's memory a request may use, a number in (0, 1].
ENV_VAR = "ANYSAT_MEMORY_SHARE"
#: The share used when neither :func:`set_memory_share` nor ``ANYSAT_MEMORY_SHARE`` says otherwise.
DEFAULT_SHARE = 0.5

_share: float | None = None  # set by set_memory_share; None: the environment variable or the default

#: cgroup files that hold a container's memory limit in bytes (v2, then v1); "max" or a huge value means none.
_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def _check_share(value: object, origin: str) -> float:
    """``value`` as a float in (0, 1], else a ConfigError naming ``origin``."""
    share = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    if not (math.isfinite(share) and 0 < share <= 1):
        raise ConfigError(
            f"{origin}={value!r}; expected the share of this machine's memory a request may use, a number in (0, 1] "
            f"(e.g. 0.5 for half, the default; 0.8 to allow more)"
        )
    return share


def set_memory_share(share: float | None) -> None:
    """Set the share of this machine's memory a request may use (a number in (0, 1]); ``None`` goes back to the
    ``ANYSAT_MEMORY_SHARE`` variable or the default 0.5.

    Raises:
        ConfigError: a share that is not a number in (0, 1].
    """
    global _share
    _share = None if share is None else _check_share(share, "set_memory_share(share)")


def memory_share() -> tuple[float, str]:
    """The share in force and where it comes from: ``set_memory_share``, ``ANYSAT_MEMORY_SHARE`` or ``default``.

    Raises:
        ConfigError: ``ANYSAT_MEMORY_SHARE`` is set to something that is not a number in (0, 1].
    """
    if _share is not None:
        return _share, "set_memory_share"
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return DEFAULT_SHARE, "default"
    try:
        value: object = float(raw)
    except ValueError:
        value = raw
    return _check_share(value, ENV_VAR), ENV_VAR


def _cgroup_limit() -> int | None:
    for name in _CGROUP_LIMITS:
        try:
            text = Path(name).read_text().strip()
        except (OSError, ValueError):
            continue
        if text.isdigit() and 0 < int(text) < 2**60:  # "max" or ~2**63 (v1's "unlimited"): no limit
            return int(text)
    return None


def physical_memory_bytes() -> tuple[int, str] | None:
    """``(bytes, what)``: this machine's physical memory, or the container's limit when lower; None if unknown."""
    total: int | None = None
    try:
        pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        if pages > 0 and page > 0:
            total = int(pages) * int(page)
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or an unknown name
        pass
    if total is None:
        try:
            import psutil

            total = int(psutil.virtual_memory().total)
        except (ImportError, OSError, AttributeError, RuntimeError):  # not installed, or no answer here
            total = None
    cgroup = _cgroup_limit() if sys.platform.startswith("linux") else None
    if cgroup is not None and (total is None or cgroup < total):
        return cgroup, "the container's memory limit"
    return (total, "the machine's memory") if total else None


def memory_limit_bytes() -> int:
    """Bytes a single request may use: the share in force (:func:`memory_share`) of :func:`physical_memory_bytes`;
    ``sys.maxsize`` (no limit) when the machine's memory is unknown.

    Raises:
        ConfigError: ``ANYSAT_MEMORY_SHARE`` is not a number in (0, 1].
    """
    share, _ = memory_share()
    phys = physical_memory_bytes()
    return sys.maxsize if phys is None else int(share * phys[0])


def format_bytes(n: float) -> str:
    """``n`` bytes for people: ``"373 GiB"``, ``"1.5 MiB"``, ``"12 bytes"`` (3 significant digits)."""
    for k, unit in ((5, "PiB"), (4, "TiB"), (3, "GiB"), (2, "MiB"), (1, "KiB")):
        if abs(n) >= 1024**k:
            return f"{n / 1024**k:.3g} {unit}"
    return f"{n:.0f} bytes"


def check_memory(nbytes: float, what: str, fix: str) -> None:
    """Refuse a request of ``nbytes`` (an estimate, before allocating) above :func:`memory_limit_bytes`.

    Args:
        nbytes: estimated peak bytes of the request (may be a float: estimates overflow no integer type).
        what: the request, completing "<what> needs ~N GiB" (e.g. ``"scene inference with window_m=200000"``).
        fix: what the user can do, ending the message (e.g. ``"lower window_m"``).

    Raises:
        MemoryLimitError: the estimate exceeds the limit; the message gives both, the share and how to change it.
        ConfigError: ``ANYSAT_MEMORY_SHARE`` is not a number in (0, 1].
    """
    share, origin = memory_share()
    phys = physical_memory_bytes()
    if phys is None or not nbytes > share * phys[0]:  # "not >" also lets NaN through to the caller's own checks
        return
    total, kind = phys
    how = (
        f"{ENV_VAR} or anysat_core.set_memory_share() changes it"
        if origin == "default"
        else f"set by {origin}" + ("()" if origin == "set_memory_share" else "")
    )
    raise MemoryLimitError(
        f"{what} needs ~{format_bytes(nbytes)}; this machine allows {format_bytes(share * total)} "
        f"({share * 100:g} % of {format_bytes(total)}, {kind}; {how}); {fix}"
    )
