"""Where releases live and what a release folder holds (docs/releases.md)::

    releases/                       beside the database file, or --out DIR
      latest -> 2026-12a            symbolic link, switched atomically by each new release
      2026-12a/
        manifest.json               name, time, ingests, model card, rows, versions
        gaia/                       a HATS collection: the catalogue and its margin cache
          collection.properties
          gaia/                     the HATS catalogue (hats.properties, partition_info.csv,
                                    dataset/_metadata, dataset/_common_metadata,
                                    dataset/Norder=k/Dir=d/Npix=n.parquet)
          gaia_10arcs/              margin cache (gaia and catalogue only)
        skymapper/ distances/ labels/ xmatch/ predictions/ catalogue/

A release being written is a hidden folder ``.NAME.partial-PID`` in the same parent, renamed
to ``NAME`` when complete: a reader never sees half a release, and one left behind by a
killed process is removed by the next ``release`` (its process is gone).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from stellardb.cores import pid_alive
from stellardb.errors import UserError

MANIFEST = "manifest.json"
LATEST = "latest"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.partial-(?P<pid>\d+)$")


def default_root(db_path) -> Path:
    """``releases/`` beside the database file."""
    return Path(db_path).absolute().parent / "releases"


def check_name(name: str) -> str:
    if name == LATEST:
        raise UserError("'latest' names the pointer to the newest release; choose another release name.")
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise UserError(f"Release name {name!r} is not allowed: use letters, digits, '.', '_' and '-' (no '/', "
                        "no '..', not starting with '.' or '-'), e.g. 2026-12a.")
    return name


def catalogue_dir(release: Path, table: str) -> Path:
    """The HATS catalogue (not the collection) of ``table``."""
    return release / table / table


def data_files_glob(release: Path, table: str) -> str:
    return str(catalogue_dir(release, table) / "dataset" / "Norder=*" / "Dir=*" / "Npix=*.parquet")


def data_files(release: Path, table: str) -> list[Path]:
    """The Parquet files of a catalogue, from its partition_info.csv (not a glob: a file that is
    not one of its partitions is never read, and a folder name may hold glob characters)."""
    return [path for _, _, path in partitions(release, table)]


def partitions(release: Path, table: str) -> list[tuple[int, int, Path]]:
    """Each partition of a catalogue as (first, last) ``_healpix_29`` of its pixel and its file."""
    import csv

    from stellardb.release.partition import SPATIAL_INDEX_ORDER, Pixel

    base = catalogue_dir(release, table)
    with open(base / "partition_info.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    found = []
    for r in rows:
        order, npix = int(r["Norder"]), int(r["Npix"])
        shift = 2 * (SPATIAL_INDEX_ORDER - order)
        found.append((npix << shift, ((npix + 1) << shift) - 1, base / "dataset" / Pixel(order, npix).path()))
    return found


def is_release(folder: Path) -> bool:
    """Whether ``folder`` is a stellardb release (its manifest and its catalogue collection),
    not any folder that happens to hold a manifest.json."""
    return (folder / MANIFEST).is_file() and (folder / "catalogue" / "collection.properties").is_file()


def release_holding(path: Path) -> Path | None:
    """The release folder that ``path`` is (or lies inside), if any."""
    for folder in (path, *path.parents):
        if is_release(folder):
            return folder
    return None


def partial_dir(root: Path, name: str) -> Path:
    return root / f".{name}.partial-{os.getpid()}"


def sweep_partials(root: Path) -> list[Path]:
    """Remove half-written releases whose writing process is gone (killed, power cut)."""
    removed = []
    if not root.is_dir():
        return removed
    for entry in root.iterdir():
        match = _PARTIAL.match(entry.name)
        if match and entry.is_dir() and not pid_alive(int(match["pid"])):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def publish(partial: Path, final: Path) -> None:
    """Rename the finished release into place; never over an existing one."""
    if final.exists() or final.is_symlink():
        raise UserError(f"Release {final.name} already exists in {final.parent}; releases are never overwritten: "
                        "choose another name.")
    try:
        os.rename(partial, final)  # atomic; fails on a non-empty target (a release made meanwhile)
    except OSError as exc:
        raise UserError(f"Cannot publish release {final.name} in {final.parent}: {exc.strerror or exc}; "
                        "choose another name.") from None


def point_latest(root: Path, name: str) -> None:
    """Switch ``latest`` to ``name`` atomically: a new link, renamed over the old one."""
    tmp = root / f".{LATEST}.tmp-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(name, tmp)
    os.replace(tmp, root / LATEST)


@dataclass
class ReleaseInfo:
    name: str
    path: Path
    manifest: dict
    latest: bool
    #: why the release cannot be read (its manifest is unreadable), or None
    damaged: str | None = None

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())


def resolve(root: Path, name_or_path: str) -> Path:
    """A release folder from a name under ``root`` (``latest`` included) or a path to one."""
    candidate = Path(name_or_path)
    if "/" in name_or_path or os.sep in name_or_path:
        if (candidate / MANIFEST).is_file():
            return candidate.resolve()
        raise UserError(f"{name_or_path} is not a release folder (no {MANIFEST}); give a release name (see "
                        "`stellardb releases`) or the folder of one.")
    if name_or_path != LATEST:
        check_name(name_or_path)
    path = root / name_or_path
    if not (path / MANIFEST).is_file():
        known = [r.name for r in list_releases(root)]
        hint = f"releases in {root}: {', '.join(known)}" if known else f"there are no releases in {root} (make one with " \
               "`stellardb release NAME`)"
        raise UserError(f"No release {name_or_path!r}; {hint}.")
    return path.resolve()


def list_releases(root: Path) -> list[ReleaseInfo]:
    """Releases under ``root``, oldest first (hidden partial folders are not releases)."""
    if not root.is_dir():
        return []
    latest = os.readlink(root / LATEST) if (root / LATEST).is_symlink() else None
    found = []
    for entry in root.iterdir():
        if entry.name.startswith(".") or entry.name == LATEST or not (entry / MANIFEST).is_file():
            continue
        try:
            manifest = json.loads((entry / MANIFEST).read_text())
            damaged = None if isinstance(manifest, dict) and isinstance(manifest.get("catalogues"), dict) else \
                "its manifest.json lists no catalogues"
        except (OSError, ValueError) as exc:
            manifest, damaged = {}, f"its manifest.json cannot be read ({type(exc).__name__})"
        found.append(ReleaseInfo(entry.name, entry, manifest if isinstance(manifest, dict) else {},
                                 entry.name == latest, damaged))
    return sorted(found, key=lambda r: (str(r.manifest.get("created_utc", "")), r.name))
