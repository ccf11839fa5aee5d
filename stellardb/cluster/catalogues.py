"""The HATS catalogues a cluster run reads: a release's (``--release NAME``) or any HATS
folder (hats-import's included), with their partitions, files and margin cache.

hats reads the metadata (``hats.properties``, ``partition_info.csv``, a collection's
margins); the tasks read the Parquet files with DuckDB.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from stellardb.errors import UserError
from stellardb.release.partition import Pixel


@dataclass(frozen=True)
class Partition:
    pixel: Pixel
    file: str  # absolute path of its Parquet file (a folder of files for some hats-import outputs)


@dataclass
class HatsCatalogue:
    name: str
    path: Path  # the catalogue folder (not the collection)
    partitions: list[Partition]
    rows: int
    ra_column: str
    dec_column: str
    #: the margin cache: its threshold (arcsec) and a file per partition that has margin rows
    margin_arcsec: float | None = None
    margin_files: dict[Pixel, str] = field(default_factory=dict)
    margin_path: Path | None = None

    @property
    def pixels(self) -> list[Pixel]:
        return [p.pixel for p in self.partitions]

    def file_of(self, pixel: Pixel) -> str:
        return self._by_pixel()[pixel]

    def _by_pixel(self) -> dict[Pixel, str]:
        if not hasattr(self, "_files"):
            self._files = {p.pixel: p.file for p in self.partitions}
        return self._files


def open_catalogue(path, what: str) -> HatsCatalogue:
    """The HATS catalogue at ``path``: a catalogue folder, or a collection (its primary catalogue
    and default margin).  ``what`` names it in errors ("--gaia", "the release's gaia")."""
    import hats

    path = Path(path)
    if not (path / "hats.properties").is_file() and not (path / "collection.properties").is_file():
        raise UserError(f"{what} ({path}) is not a HATS catalogue (no hats.properties or collection.properties); "
                        "give a catalogue folder made by `stellardb release` or hats-import.")
    try:
        found = hats.read_hats(path)
        margin = None
        if hasattr(found, "main_catalog"):  # a collection
            if found.default_margin:
                margin = hats.read_hats(found.default_margin_catalog_dir)
            found = found.main_catalog
        info = found.catalog_info
        if str(info.catalog_type) not in ("object", "CatalogType.OBJECT", "source", "CatalogType.SOURCE"):
            raise UserError(f"{what} ({path}) is a HATS {info.catalog_type} catalogue, not an object catalogue; "
                            "give the catalogue (or its collection) instead.")
        base = Path(found.catalog_base_dir)
        parts = [Partition(Pixel(int(p.order), int(p.pixel)), str(_pixel_file(base, p)))
                 for p in found.get_healpix_pixels()]
        result = HatsCatalogue(name=info.catalog_name, path=base, partitions=sorted(parts, key=lambda q: q.pixel.lo),
                               rows=int(info.total_rows or 0), ra_column=info.ra_column or "ra",
                               dec_column=info.dec_column or "dec")
        if margin is not None:
            mbase = Path(margin.catalog_base_dir)
            result.margin_arcsec = float(margin.catalog_info.margin_threshold)
            result.margin_path = mbase
            result.margin_files = {Pixel(int(p.order), int(p.pixel)): str(_pixel_file(mbase, p))
                                   for p in margin.get_healpix_pixels()}
    except UserError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{what} ({path}) cannot be read as HATS ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200]}).") from None
    missing = [p.file for p in result.partitions if not Path(p.file).exists()]
    if missing:
        raise UserError(f"{what} ({path}) lists {len(missing)} partition(s) whose file is missing, e.g. "
                        f"{missing[0]}; the catalogue is damaged.")
    return result


def _pixel_file(base: Path, pixel) -> Path:
    import hats

    return Path(hats.io.paths.pixel_catalog_file(base, pixel))


def release_catalogue(release: Path, table: str) -> HatsCatalogue:
    """Catalogue ``table`` of a stellardb release (its collection, margin included)."""
    folder = Path(release) / table
    if not folder.is_dir():
        raise UserError(f"Release {Path(release).name} has no {table} catalogue (its database had no {table} rows); "
                        f"ingest {table} and make a new release.")
    found = open_catalogue(folder, f"the release's {table}")
    if found.margin_arcsec is None and (Path(release) / "manifest.json").is_file():
        # the writer leaves out a margin cache that would be empty (no row near any border); the
        # release's margin width still holds for it
        import json

        manifest = json.loads((Path(release) / "manifest.json").read_text())
        entry = manifest.get("catalogues", {}).get(table, {})
        if "margin_rows" in entry and entry.get("margin_rows") == 0:
            found.margin_arcsec = float(entry.get("margin_arcsec") or manifest["parameters"]["margin_arcsec"])
    return found


def release_settings(release: Path) -> dict:
    """The database settings a release was made with (manifest ``settings``; empty for older releases)."""
    import json

    path = Path(release) / "manifest.json"
    return dict(json.loads(path.read_text()).get("settings") or {}) if path.is_file() else {}


def cluster_output(path, table: str, what: str) -> HatsCatalogue:
    """A cluster run's ``table`` from ``path``: the --out folder it was written in (holding
    ``table/``), or the collection or catalogue itself."""
    path = Path(path)
    if (path / table / "collection.properties").is_file():
        path = path / table
    return open_catalogue(path, what)


def release_identity(release: Path) -> dict:
    """What a cluster run records of the release it read: its name and its manifest's sha256."""
    import hashlib

    return {"name": Path(release).name,
            "manifest_sha256": hashlib.sha256((Path(release) / "manifest.json").read_bytes()).hexdigest()}


def run_record(catalogue: HatsCatalogue) -> dict | None:
    """The cluster_run.json of a cluster run's output (None for a release's own catalogue)."""
    import json

    collection = catalogue.path.parent if (catalogue.path.parent / "collection.properties").is_file() else catalogue.path
    path = collection / "cluster_run.json"
    return json.loads(path.read_text()) if path.is_file() else None


def require_columns(catalogue: HatsCatalogue, columns, what: str, fix: str) -> None:
    """Refuse a catalogue that lacks ``columns`` (a Gaia catalogue that is not gaia_source, a survey
    catalogue of another survey) before any task would fail on it."""
    import pyarrow.parquet as pq

    common = catalogue.path / "dataset" / "_common_metadata"
    names = set(pq.read_schema(common if common.is_file() else catalogue.partitions[0].file).names)
    missing = [c for c in columns if c not in names]
    if missing:
        raise UserError(f"{what} ({catalogue.path}) has no column {missing[0]}; {fix}")
