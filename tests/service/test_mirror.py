"""The cones' memory-mapped Arrow copies of a release's files (stellardb.service.mirror): the rows
read from them are the rows read from Parquet, and DuckDB's; a copy that does not match its file is
never read; two workers write each copy once; a full disk or a stop leaves no half copy; copies of
releases gone are swept; the settings' bad values are one line."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from stellardb.service import rowgroups, web
from stellardb.service.mirror import Mirror

from ..helpers import error_line, invoke
from .conftest import TIMEOUT_S
from .test_rowgroups import _by_translation, _cones, _Holder, _plain
from .test_serve_cli import _free_port

COPIED = ("catalogue", "gaia", "skymapper")


def _files(served, tables=COPIED) -> dict[str, list[str]]:
    return {t.name: [f for _, _, f in t.partitions] for t in served.tables
            if t.schema == served.schema and t.name in tables}


def _copy(served, root: Path, tables=COPIED) -> Mirror:
    mirror = Mirror(root, served.path, _files(served, tables)).start()
    assert mirror.join(120)
    return mirror


@pytest.fixture
def mirrored(grouped, tmp_path):
    """(Served with its copies made and in use, DuckDB on its files, the mirror)."""
    served, con = grouped
    mirror = _copy(served, tmp_path / "cache")
    served.mirror = mirror
    yield served, con, mirror
    served.mirror = None


def _count_reads(monkeypatch) -> dict:
    calls = {"mapped": 0, "parquet": 0}
    for name, key in (("_take_mapped", "mapped"), ("_take_parquet", "parquet")):
        real = getattr(rowgroups._TableFiles, name)

        def counted(self, *args, _real=real, _key=key, **kwargs):
            calls[_key] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(rowgroups._TableFiles, name, counted)
    return calls


@pytest.mark.parametrize("table", ["catalogue", "skymapper"])
def test_cones_from_the_copies_are_parquets_and_duckdbs(mirrored, table, monkeypatch):
    served, con, mirror = mirrored
    assert mirror.progress() == (sum(len(f) for f in _files(served).values()),) * 2 and mirror.note is None
    position = ("raj2000", "dej2000") if table == "skymapper" else ("ra", "dec")
    every = [c.name for c in served.columns[table]]
    key = "object_id" if table == "skymapper" else "source_id"
    calls = _count_reads(monkeypatch)
    rows_seen = 0
    for k, (ra, dec, radius) in enumerate(_cones(con)):
        columns = every if k % 2 == 0 else [key, *position, every[-1]]
        found = rowgroups.cone(served, table, position, ra, dec, radius, columns, TIMEOUT_S)
        if found is None:  # a wide cone: DuckDB answers
            continue
        served.mirror = None
        from_parquet, _ = rowgroups.cone(served, table, position, ra, dec, radius, columns, TIMEOUT_S)
        served.mirror = mirror
        got, _ = found
        assert got.equals(from_parquet), (ra, dec, radius)  # same rows, same order, same types
        expected = _by_translation(served, table, position, ra, dec, radius, columns)
        assert got.schema.equals(expected.schema) and got.sort_by(key).equals(expected.sort_by(key))
        rows_seen += got.num_rows
    assert rows_seen > 100
    # the copies answered (the Parquet reads are the comparison's)
    assert calls["mapped"] > 30 and calls["parquet"] == calls["mapped"]


def test_star_pages_from_the_copies_are_parquets(mirrored, monkeypatch):
    served, con, mirror = mirrored
    rng = np.random.default_rng(11)
    ids = con.execute("select source_id from gaia order by source_id").fetchnumpy()["source_id"]
    calls = _count_reads(monkeypatch)
    for source_id in rng.choice(ids, 12, replace=False).tolist():
        copied = web.star_rows(_Holder(served), source_id, TIMEOUT_S)
        served.mirror = None
        try:
            assert _plain(copied) == _plain(web.star_rows(_Holder(served), source_id, TIMEOUT_S)), source_id
        finally:
            served.mirror = mirror
    assert calls["mapped"] >= 12 * 2  # gaia and the neighbours (catalogue) at least, each star


def test_each_copy_is_one_record_batch_a_row_group_of_the_same_rows(mirrored):
    import pyarrow.parquet as pq

    served, _, mirror = mirrored
    groups = 0
    for paths in _files(served).values():
        for path in paths:
            meta = pq.read_metadata(path)
            for g in range(meta.num_row_groups):
                assert mirror.batch(path, g).equals(pq.ParquetFile(path).read_row_group(g).to_batches()[0])
                groups += 1
    assert groups > len(_files(served)["gaia"])  # files of several row groups


def test_a_copy_that_does_not_match_its_file_is_not_read(grouped, tmp_path, monkeypatch):
    """A damaged copy, or another file's copy under its name (the same shape or not), is removed and
    its file read from Parquet (then copied again at the next start); a Parquet file that changed
    (size or time) gets a new copy, never the stale one, which is then removed."""
    served, con = grouped
    release = tmp_path / "release"
    shutil.copytree(served.path, release)
    from stellardb.service.served import open_release

    mine = open_release(release, memory_limit="1GB")
    try:
        root = tmp_path / "cache"
        first = _copy(mine, root, ("catalogue",))
        paths = _files(mine, ("catalogue",))["catalogue"]
        copies = [first._target("catalogue", first._source(p)) for p in paths]
        assert all(c.exists() for c in copies) and len(paths) > 3
        # damaged: cut short; another file's copy under its name (each way, whatever their shapes)
        copies[0].write_bytes(copies[0].read_bytes()[:1000])
        one, two = copies[1].read_bytes(), copies[2].read_bytes()
        copies[1].write_bytes(two)
        copies[2].write_bytes(one)
        second = _copy(mine, root, ("catalogue",))
        assert second.progress() == (len(paths) - 3, len(paths))
        assert "(3 files could not be copied, read from Parquet)" in second.status()
        assert not any(c.exists() for c in copies[:3])
        mine.mirror = second
        wide = rowgroups.cone(mine, "catalogue", ("ra", "dec"), 10.0, -30.0, 1.0, ["source_id", "ra", "dec"],
                              TIMEOUT_S)
        mine.mirror = None
        assert wide[0].equals(rowgroups.cone(mine, "catalogue", ("ra", "dec"), 10.0, -30.0, 1.0,
                                             ["source_id", "ra", "dec"], TIMEOUT_S)[0])
        assert _copy(mine, root, ("catalogue",)).progress() == (len(paths),) * 2  # copied again
        # a file that changed: its copy is not taken for it, a new one is written, the old one goes
        written = []
        real = Mirror._write
        monkeypatch.setattr(Mirror, "_write", lambda self, p, *a: written.append(p) or real(self, p, *a))
        os.utime(paths[0], ns=(1, 1))
        assert _copy(mine, root, ("catalogue",)).progress() == (len(paths),) * 2
        assert written == [paths[0]] and not copies[0].exists()
        assert len(list((first.folder / "catalogue").glob("*.arrow"))) == len(paths)
    finally:
        mine.retire()


def test_a_copy_of_another_file_of_the_same_shape_is_refused(tmp_path):
    """Two files of the same columns, row groups and rows: each one's copy is refused for the other."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from stellardb.service import mirror as module

    paths = []
    for k in range(2):
        paths.append(str(tmp_path / f"{k}.parquet"))
        pq.write_table(pa.table({"_healpix_29": np.arange(10, dtype=np.int64) + 100 * k, "v": np.full(10, k * 1.0)}),
                       paths[-1], row_group_size=5)
    mirror = Mirror(tmp_path / "cache", tmp_path, {"t": paths}).start()
    assert mirror.join(60) and mirror.progress() == (2, 2)
    targets = [mirror._target("t", mirror._source(p)) for p in paths]
    for k in range(2):
        meta = pq.read_metadata(paths[k])
        assert module._mapped(targets[k], meta, mirror._source(paths[k])) is not None
        assert module._mapped(targets[1 - k], meta, mirror._source(paths[k])) is None


def test_two_workers_write_each_copy_once(grouped, tmp_path, monkeypatch):
    served, _ = grouped
    written = []
    real = Mirror._write
    monkeypatch.setattr(Mirror, "_write", lambda self, p, *a: written.append(p) or real(self, p, *a))
    root = tmp_path / "cache"
    from stellardb.service import mirror as module

    warmed = []
    real_warm = module._start_io_threads
    monkeypatch.setattr(module, "_start_io_threads", lambda: warmed.append(threading.get_ident()) or real_warm())
    pair = [Mirror(root, served.path, _files(served)) for _ in range(2)]
    for m in pair:
        m.start()
    # pyarrow's I/O threads started by the starter (this thread), not the copying one
    assert warmed == [threading.get_ident()] * 2
    assert all(m.join(120) for m in pair)
    every = [p for paths in _files(served).values() for p in paths]
    assert sorted(written) == sorted(every)  # each once, by one or the other
    assert all(m.progress() == (len(every), len(every)) for m in pair)
    assert not list(root.rglob("*.partial"))


def test_a_full_disk_copies_nothing_and_says_so(grouped, tmp_path, monkeypatch):
    from stellardb.service import mirror as module

    served, _ = grouped
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(module, "RESERVE_BYTES", usage.free + 1)
    full = _copy(served, tmp_path / "cache")
    assert full.progress()[0] == 0 and "disk is too full" in full.status()
    assert not list((tmp_path / "cache").rglob("*.arrow")) and not list((tmp_path / "cache").rglob("*.partial"))


def test_a_failed_write_leaves_no_half_copy(grouped, tmp_path, monkeypatch):
    """The disk filling up under a write (ENOSPC at the second batch): no copy, no temporary file,
    and the copying says it stopped."""
    import errno

    import pyarrow.ipc as ipc

    from stellardb.service import mirror as module

    served, _ = grouped
    module._start_io_threads()  # its own small write first: the calls counted are the copy's
    calls = []
    writer = type(ipc.new_file(__import__("pyarrow").BufferOutputStream(),
                               __import__("pyarrow").schema([("a", "int8")])))
    real = writer.write_batch

    def write_batch(self, batch, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, batch, *args, **kwargs)

    monkeypatch.setattr(writer, "write_batch", write_batch)
    # a file of several row groups: the first batch is written before the disk fills
    import pyarrow.parquet as pq

    gaia = _files(served, ("gaia",))["gaia"]
    path = max(gaia, key=lambda p: pq.read_metadata(p).num_row_groups)
    assert pq.read_metadata(path).num_row_groups >= 2
    # that file first: it fails, the others are copied
    failed = Mirror(tmp_path / "cache", served.path, {"gaia": [path] + [p for p in gaia if p != path]}).start()
    assert failed.join(60)
    assert len(calls) > 2 and failed.status() == (f"cone cache: {len(gaia) - 1} of {len(gaia)} files ready "
                                                   "(1 file could not be copied, read from Parquet)")
    assert failed.batch(path, 0) is None
    assert len(list((tmp_path / "cache").rglob("*.arrow"))) == len(gaia) - 1
    assert not list((tmp_path / "cache").rglob("*.partial"))


def test_a_stop_leaves_no_half_copy(grouped, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    served, _ = grouped
    mirror = Mirror(tmp_path / "cache", served.path, _files(served, ("gaia",)))
    real = pq.ParquetFile.read_row_group

    def stop_after_one(self, *args, **kwargs):
        mirror.stop()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", stop_after_one)
    mirror.start()
    assert mirror.join(60)
    assert mirror.progress()[0] == 0
    assert not list((tmp_path / "cache").rglob("*.arrow")) and not list((tmp_path / "cache").rglob("*.partial"))


def _marked(root: Path, release: Path, touched: float, format_: str | None = None) -> Path:
    """A folder of the cache as a service leaves it for ``release``, its marker touched at ``touched``."""
    import json

    from stellardb.service import mirror as module

    folder = Mirror(root, release, {}).folder
    folder.mkdir(parents=True)
    (folder / module.MARKER).write_text(json.dumps({"format": format_ or module.FORMAT,
                                                    "release": str(release.resolve())}))
    os.utime(folder / module.MARKER, (touched, touched))
    return folder


@pytest.mark.parametrize("disk", ["room", "full"])
def test_copies_of_releases_gone_are_swept_and_two_are_kept(grouped, tmp_path, monkeypatch, disk):
    """Before copying (so on a full disk too): the service's folders of releases gone, or of an
    older layout, go; of the others, the one served last stays beside this one, and one touched in
    the last FRESH_S (being copied by another service); folders not the service's are never touched."""
    import time

    from stellardb.service import mirror as module

    served, _ = grouped
    root = tmp_path / "cache"
    releases = {name: tmp_path / name for name in ("gone", "old", "kept-0", "kept-1", "kept-2", "busy")}
    for release in releases.values():
        release.mkdir()
    folders = {name: _marked(root, release, 1000 + i) for i, (name, release) in enumerate(releases.items())}
    os.utime(folders["busy"] / module.MARKER)  # now: being copied
    newer = tmp_path / "newer"
    newer.mkdir()
    folders["newer"] = _marked(root, newer, time.time(), format_="arrow-ipc-99")  # another version, copying now
    shutil.rmtree(folders["old"])
    folders["old"] = _marked(root, releases["old"], 1000, format_="arrow-ipc-0")
    releases["gone"].rmdir()
    # not the service's: no marker; a marker that is not the service's JSON; a name not of the form
    foreign = [root / "not-ours", root / "notes-0123456789ab", root / "my-notes"]
    for folder in foreign:
        folder.mkdir()
    (root / "notes-0123456789ab" / module.MARKER).write_text("my notes")
    (root / "my-notes" / module.MARKER).write_text((folders["gone"] / module.MARKER).read_text())
    (root / "my-notes" / "draft.md").write_text("mine")
    # served now by another service (it holds its marker's lock), though touched long ago
    import fcntl

    served_elsewhere = tmp_path / "elsewhere"
    served_elsewhere.mkdir()
    folders["elsewhere"] = _marked(root, served_elsewhere, 900)
    in_use = os.open(folders["elsewhere"] / module.MARKER, os.O_RDONLY)
    fcntl.flock(in_use, fcntl.LOCK_SH)
    if disk == "full":
        monkeypatch.setattr(module.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12, 0))
    order = []
    for name in ("_sweep", "_copy"):
        real = getattr(Mirror, name)
        monkeypatch.setattr(Mirror, name, lambda self, *a, _real=real, _name=name: order.append(_name) or _real(self, *a))
    try:
        copied = _copy(served, root, ("catalogue",))
    finally:
        os.close(in_use)
    assert order[0] == "_sweep" and order[-1] == "_sweep" and "_copy" in order  # before copying, and after
    assert ("disk is too full" in copied.status()) == (disk == "full")
    left = {p.name for p in root.iterdir()}
    assert folders["gone"].name not in left and folders["old"].name not in left and folders["newer"].name in left
    assert folders["kept-2"].name in left and folders["busy"].name in left
    assert folders["kept-0"].name not in left and folders["kept-1"].name not in left
    assert folders["elsewhere"].name in left
    assert {f.name for f in foreign} <= left and (root / "my-notes" / "draft.md").exists()
    assert copied.folder.name in left and time.time() - (copied.folder / module.MARKER).stat().st_mtime < 60


def test_a_copying_stops_when_its_folder_is_swept_by_another(grouped, tmp_path, monkeypatch):
    served, _ = grouped
    root = tmp_path / "cache"
    mirror = Mirror(root, served.path, _files(served, ("gaia",)))
    real = Mirror._copy
    done = []

    def copy(self, table, path):
        done.append(path)
        if len(done) == 2:
            from stellardb.service import mirror as module

            (self.folder / module.MARKER).unlink()  # as another service's sweep starts removing it
        return real(self, table, path)

    monkeypatch.setattr(Mirror, "_copy", copy)
    mirror.start()
    assert mirror.join(60)
    assert len(done) == 2 and mirror.status().endswith(
        "(the copies were removed meanwhile; the rest are read from Parquet)")


def test_availability_says_how_far_the_copies_are(service_release, limits, tmp_path, client, holder, monkeypatch):
    import warnings

    from stellardb.service.app import create_app
    from stellardb.service.served import Holder

    root, _ = service_release
    held = Holder(root, "svc-1", memory_limit="1GB", cache=tmp_path / "cache")
    try:
        assert held.current.mirror.join(120)
        files = held.current.mirror.progress()[1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from starlette.testclient import TestClient
        with TestClient(create_app(held, limits)) as copied:
            text = copied.get("/tap/availability").text
            assert f"cone cache: {files} of {files} files ready" in text and files > 2
            assert str(tmp_path) not in text
            # /scs from the copies: the bytes of the service without them
            calls = _count_reads(monkeypatch)
            monkeypatch.setattr(holder.current, "mirror", None)  # the session's service, from Parquet
            for params in ({"RA": 10, "DEC": -30, "SR": 2}, {"RA": 0, "DEC": -90, "SR": 1, "VERB": 3}):
                cone = copied.get("/scs", params=params)
                assert cone.status_code == 200 and cone.content == client.get("/scs", params=params).content
                assert cone.content.count(b"<FIELD") > 3 and len(cone.content) > 3000
            assert calls["mapped"] > 0 and calls["parquet"] > 0
    finally:
        held.close()


@pytest.mark.parametrize("value, expected", [("catalogue, gaia", ("catalogue", "gaia")), (" xmatch,,", ("xmatch",))])
def test_cache_settings(value, expected, monkeypatch, tmp_path):
    from stellardb.service.server import cache_from_settings

    monkeypatch.setenv("STELLARDB_SERVE_CACHE_TABLES", value)
    assert cache_from_settings(tmp_path / "x.duckdb") == (tmp_path / "serve-cache", expected)
    monkeypatch.setenv("STELLARDB_SERVE_CACHE", "OFF")
    assert cache_from_settings(tmp_path / "x.duckdb") == (None, expected)


def test_an_unknown_cache_table_is_one_line(service_release, monkeypatch):
    root, _ = service_release
    monkeypatch.setenv("STELLARDB_SERVE_CACHE_TABLES", "catalogue,stars")
    result = invoke(root.parent / "x.duckdb", "serve", "--releases", str(root), "--port", str(_free_port()))
    assert result.exit_code != 0
    assert error_line(result).startswith("Error: STELLARDB_SERVE_CACHE_TABLES names stars, not a table of a release")


def test_a_closed_release_drops_its_maps_and_lets_its_folder_go(service_release, tmp_path):
    from stellardb.service.served import Holder

    root, _ = service_release
    held = Holder(root, "svc-1", memory_limit="1GB", cache=tmp_path / "cache")
    mirror = held.current.mirror
    assert mirror.join(120) and mirror.progress()[0] > 2
    from stellardb.service import mirror as module

    import fcntl

    probe = os.open(mirror.folder / module.MARKER, os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):  # served: no sweep may remove it
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.close()
        assert mirror.progress()[0] == 0
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # closed: free to be swept
    finally:
        os.close(probe)


def test_the_copying_thread_starts_no_io_thread_at_its_low_priority(tmp_path):
    """pyarrow's I/O threads, which every request's reads use, are started at the worker's priority
    (_start_io_threads) before the copying thread lowers its own: mapping a copy there starts none.
    In a fresh process (the test process has its threads already)."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import os, threading
        import pyarrow as pa, pyarrow.ipc as ipc
        from stellardb.service import mirror
        path = {str(tmp_path / "one.arrow")!r}
        with pa.OSFile(path, "wb") as sink, ipc.new_file(sink, pa.schema([("a", pa.int64())])) as w:
            w.write_batch(pa.record_batch([pa.array(range(1000))], names=["a"]))
        if os.environ.get("WARM") == "1":
            mirror._start_io_threads()
        counts = []
        def low():
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
            counts.append(len(os.listdir("/proc/self/task")))
            ipc.open_file(pa.memory_map(path)).get_batch(0)
            counts.append(len(os.listdir("/proc/self/task")))
        t = threading.Thread(target=low)
        t.start()
        t.join()
        print(counts[1] - counts[0])
    """)
    started = {}
    for warm in ("1", "0"):
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "WARM": warm})
        assert out.returncode == 0, out.stderr
        started[warm] = int(out.stdout.strip())
    assert started["1"] == 0
    assert started["0"] > 0  # else this pyarrow maps without threads and the test shows nothing


def test_stopping_the_service_abandons_a_copy_being_written(service_release, tmp_path, monkeypatch):
    """Holder.close (and the app's shutdown, through Holder.stop_copying) stops the copying and waits
    for it: no temporary file is left, and no copy is made after."""
    import threading as th

    import pyarrow.parquet as pq

    from stellardb.service.served import Holder

    import time

    reading = th.Event()
    real = pq.ParquetFile.read_row_group

    def slow(self, *args, **kwargs):
        # a read that ends half a second after the stop: closing must wait for it
        reading.set()
        deadline = time.monotonic() + 30
        while (mirror is None or not mirror._stop.is_set()) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", slow)
    root, _ = service_release
    mirror = None
    held = Holder(root, "svc-1", memory_limit="1GB", cache=tmp_path / "cache")
    mirror = held.current.mirror
    assert reading.wait(60)  # a copy is being written
    assert list((tmp_path / "cache").rglob("*.partial"))
    held.close()
    assert mirror.join(0)  # the copying ended before close returned
    assert not list((tmp_path / "cache").rglob("*.partial")) and not list((tmp_path / "cache").rglob("*.arrow"))
