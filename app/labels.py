"""Labels the user puts on the map: points and polygons with a class, in the source's CRS.

A :class:`LabelSet` is a plain list of ``(geometry, class name)`` plus the editable list of class names and the CRS.
It round-trips through GeoJSON and GeoPackage with its CRS (geopandas / pyogrio); labels read in another CRS are
reprojected to the source's.  Writing is atomic (temporary name, then rename) and never replaces a file unless
``overwrite=True``.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anysat_core.errors import AnySatError, ConfigError, CorruptFileError, OutputExistsError, ProbeError

__all__ = ["LabelSet", "LabelsError", "write_frame"]

VECTOR_SUFFIXES = {".geojson": "GeoJSON", ".json": "GeoJSON", ".gpkg": "GPKG"}


class LabelsError(AnySatError, ValueError):
    """Labels that cannot be used (unknown class, outside the data, unreadable geometry)."""


@dataclasses.dataclass
class LabelSet:
    """Points and polygons with a class each.

    Attributes:
        crs: CRS of the geometries (the source's), e.g. ``"EPSG:32631"``; None when the source has none.
        classes: class names; a label's class is one of them (its index is the probe's class id).
        items: ``[(shapely geometry, class name), ...]``.
    """

    crs: str | None = None
    classes: list[str] = dataclasses.field(default_factory=lambda: ["class 0", "class 1"])
    items: list[tuple[Any, str]] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def add_class(self, name: str) -> None:
        name = name.strip()
        if not name:
            raise LabelsError("a class needs a name; type one in the class box")
        if name not in self.classes:
            self.classes.append(name)

    def _check_class(self, cls: str) -> str:
        if cls not in self.classes:
            raise LabelsError(f"class {cls!r} is not in the class list {self.classes}; add it first")
        return cls

    def add_point(self, x: float, y: float, cls: str) -> None:
        from shapely.geometry import Point

        self.items.append((Point(float(x), float(y)), self._check_class(cls)))

    def add_polygon(self, xs: Sequence[float], ys: Sequence[float], cls: str) -> None:
        from shapely.geometry import Polygon

        if len(xs) < 3 or len(xs) != len(ys):
            raise LabelsError(f"a polygon needs at least 3 vertices with x and y each; got {len(xs)} x, {len(ys)} y")
        poly = Polygon(list(zip(map(float, xs), map(float, ys))))
        if not poly.is_valid or poly.area <= 0:
            raise LabelsError("the polygon crosses itself or has no area; draw it again")
        self.items.append((poly, self._check_class(cls)))

    def remove(self, index: int) -> None:
        if not 0 <= index < len(self.items):
            raise LabelsError(f"no label #{index}; there are {len(self.items)}")
        del self.items[index]

    def clear(self) -> None:
        self.items.clear()

    def class_ids(self) -> list[int]:
        return [self.classes.index(c) for _, c in self.items]

    def used_classes(self) -> list[str]:
        return sorted({c for _, c in self.items}, key=self.classes.index)

    def probe_points(self) -> list[tuple[Any, int]]:
        """``[(geometry, class id), ...]`` for :func:`anysat_core.fit_from_points`.

        Raises:
            ProbeError: fewer than two classes among the labels.
        """
        used = self.used_classes()
        if len(used) < 2:
            have = f"only {used[0]!r}" if used else "no label"
            raise ProbeError(
                f"the labels hold {have}; a probe needs labels of at least two classes: put points or polygons of "
                "another class on the map"
            )
        return [(g, self.classes.index(c)) for g, c in self.items]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per label for a table: index, class, kind, x, y (centroid)."""
        out = []
        for i, (g, c) in enumerate(self.items):
            p = g.centroid
            out.append({"#": i, "class": c, "kind": g.geom_type, "x": round(p.x, 2), "y": round(p.y, 2)})
        return out

    # ------------------------------------------------------------------ files
    def to_frame(self) -> Any:
        import geopandas as gpd

        return gpd.GeoDataFrame(
            {"class": [c for _, c in self.items], "class_id": self.class_ids()},
            geometry=[g for g, _ in self.items],
            crs=self.crs,
        )

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the labels as GeoJSON (``.geojson``/``.json``) or GeoPackage (``.gpkg``) with their CRS.

        Raises:
            OutputExistsError: the file exists and ``overwrite`` is False.
            ConfigError: another suffix.
        """
        return write_frame(self.to_frame(), path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str], crs: str | None, classes: Sequence[str] | None = None) -> LabelSet:
        """Labels from a GeoJSON/GeoPackage file, reprojected to ``crs`` (the source's).

        The class of a feature is its ``class`` property (or ``label``/``name``); class names not in ``classes`` are
        added.

        Raises:
            CorruptFileError: the file cannot be read as vectors.
            LabelsError: no class property, or geometries other than points and polygons.
        """
        import geopandas as gpd

        try:
            frame = gpd.read_file(path)
        except Exception as e:  # noqa: BLE001 - pyogrio raises its own types for unreadable files
            raise CorruptFileError(f"{Path(path).name}: not a readable vector file ({e})") from None
        col = next((c for c in ("class", "label", "name") if c in frame.columns), None)
        if col is None:
            raise LabelsError(
                f"{Path(path).name}: no 'class' property on its features (columns: {list(frame.columns)}); give each "
                "feature a 'class' property"
            )
        if crs is not None and frame.crs is not None and not frame.crs.equals(crs):
            frame = frame.to_crs(crs)
        out = cls(crs=crs, classes=list(classes) if classes else [])
        for geom, name in zip(frame.geometry, frame[col].astype(str)):
            if geom is None or geom.geom_type not in ("Point", "Polygon", "MultiPolygon"):
                kind = geom.geom_type if geom is not None else "an empty geometry"
                raise LabelsError(f"{Path(path).name}: {kind}; labels are points and polygons")
            out.add_class(name)
            out.items.append((geom, name))
        return out


def write_frame(frame: Any, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write a GeoDataFrame as GeoJSON (``.geojson``/``.json``) or GeoPackage (``.gpkg``) with its CRS, atomically
    (temporary name, then rename), honouring the umask; an existing file is replaced only with ``overwrite``.

    Raises:
        OutputExistsError: the file exists and ``overwrite`` is False.
        ConfigError: another suffix.
    """
    path = Path(path)
    driver = VECTOR_SUFFIXES.get(path.suffix.lower())
    if driver is None:
        raise ConfigError(f"vector file {path.name!r}: expected a .geojson, .json or .gpkg name")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; choose another name or confirm overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        frame.to_file(tmp, driver=driver, layer=path.stem if driver == "GPKG" else None)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
