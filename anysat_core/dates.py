"""Dates of acquisitions: parsing user and file-metadata dates, days of year (no torch, no xarray).

AnySat encodes acquisition dates as the day of year (1..366).  Rasters and dataset files carry dates as strings in
several layouts (``2020-01-02``, ``20200102``, TIFF's ``2020:01:02 10:00:00``), as ``datetime``/``numpy.datetime64``
objects or already as days of year; everything that reads a date goes through this module.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any

import numpy as np

from anysat_core.errors import DatesError

__all__ = [
    "DateLike",
    "date_from_name",
    "date_sort_key",
    "day_of_year",
    "parse_date",
    "yyyymmdd_date",
    "yyyymmdd_to_doy",
]

#: A date as users and files give it: a string, a date/datetime, a numpy datetime64 or a day of year.
DateLike = str | _dt.date | _dt.datetime | np.datetime64 | int

_DATE_RE = re.compile(r"(?<!\d)(\d{4})([-_:/.]?)(\d{2})\2(\d{2})(?!\d)")


def parse_date(value: Any, where: str = "date") -> _dt.date | int:
    """Parse one date: a :class:`datetime.date` for calendar dates, an ``int`` for a day of year.

    Accepts ``"2020-01-02"``, ``"20200102"``, ``"2020:01:02 10:00:00"`` (TIFF), ISO datetimes,
    ``datetime``/``date``/``numpy.datetime64`` objects and ints 1..366 (day of year).

    Raises:
        DatesError: the value is none of these (the message names ``where``).
    """
    if isinstance(value, bool):
        raise DatesError(f"{where}: date {value!r} is a bool; expected e.g. '2020-01-02' or a day of year 1..366")
    if isinstance(value, _dt.datetime):
        return value.date()
    if isinstance(value, _dt.date):
        return value
    if isinstance(value, np.datetime64):
        if np.isnat(value):
            raise DatesError(f"{where}: date is NaT (not a time); give a real date, e.g. '2020-01-02'")
        return _dt.date.fromisoformat(str(value.astype("datetime64[D]")))
    if isinstance(value, (int, np.integer)):
        if not 1 <= int(value) <= 366:
            raise DatesError(
                f"{where}: day of year {int(value)} is outside 1..366; give a day of year or a date string"
            )
        return int(value)
    if isinstance(value, str):
        m = _DATE_RE.search(value.strip())
        if m is not None:
            try:
                return _dt.date(int(m.group(1)), int(m.group(3)), int(m.group(4)))
            except ValueError:
                pass
    raise DatesError(
        f"{where}: cannot parse {value!r} as a date; expected 'YYYY-MM-DD', 'YYYYMMDD', a datetime.date or a day "
        "of year 1..366"
    )


def date_from_name(name: str) -> _dt.date | None:
    """The first valid ``YYYY?MM?DD`` date in a file name (separators ``-_:/.`` or none), or None."""
    for m in _DATE_RE.finditer(name):
        try:
            return _dt.date(int(m.group(1)), int(m.group(3)), int(m.group(4)))
        except ValueError:
            continue
    return None


def day_of_year(d: _dt.date | int) -> int:
    """Day of year (1..366) of a date; an int is taken as a day of year already."""
    return d if isinstance(d, int) else d.timetuple().tm_yday


def date_sort_key(d: _dt.date | int) -> tuple[int, int]:
    """Sort key putting days of year before calendar dates, each in time order."""
    return (0, d) if isinstance(d, int) else (1, d.toordinal())


def yyyymmdd_date(stamp: Any) -> _dt.date:
    """The date of a ``YYYYMMDD`` string or int (dataset file names and metadata); ValueError when it is not one."""
    return _dt.datetime.strptime(str(stamp), "%Y%m%d").date()


def yyyymmdd_to_doy(stamp: Any) -> int:
    """Day of year (1..366) of a ``YYYYMMDD`` string or int; ValueError when it is not a date."""
    return day_of_year(yyyymmdd_date(stamp))
