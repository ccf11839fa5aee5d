"""The package's layers, checked on its import graph (every import, those inside functions too)
and in a fresh interpreter's sys.modules:

    cli -> service -> release
    cli -> cluster -> release, ml
    cli -> ingest, ml, simulate, release -> catalog -> config, errors, cores

catalog imports nothing from ingest, ml, release or cli; ingest and ml never import each other;
release reads the database through catalog and model cards through ml.model_store only; only
ml/mlp.py, ml/train.py and ml/model_store.py import Keras or TensorFlow; only cli/ imports
rich; the service reads releases only (never the database, ingest or ml); and no module
imports itself back through others.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "stellardb"
KERAS_MODULES = {"stellardb.ml.mlp", "stellardb.ml.train", "stellardb.ml.model_store"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """Every module ``name`` imports, anywhere in its body: stellardb modules resolved to the module
    (``from stellardb.catalog import db`` -> stellardb.catalog.db), others by their top package."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module
            submodules = {f"{target}.{alias.name}" for alias in node.names} & set(MODULES)
            # `from package import module` needs only the module (its package is loaded first anyway)
            found |= submodules if len(submodules) == len(node.names) else submodules | {target}
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def stellardb_imports(name: str) -> set[str]:
    return {m for m in GRAPH[name] if m in MODULES and m != name}


def violations(rule) -> list[str]:
    return sorted(f"{name} imports {target}" for name in GRAPH for target in GRAPH[name] if rule(name, target))


def test_the_layers_exist():
    """The package tree the README describes (a rule about an empty layer would prove nothing)."""
    for package in ("catalog", "ingest", "ml", "cli", "simulate", "release", "service", "cluster"):
        assert f"stellardb.{package}" in MODULES, package
    for module in ("config", "errors", "cores", "ingest.pipeline", "ingest.specs", "ingest.checks", "ingest.staging",
                   "ingest.readers", "ingest.presets", "catalog.db", "catalog.schema", "catalog.query", "catalog.xmatch",
                   "catalog.healpix", "catalog.astrometry", "ml.features", "ml.mlp", "ml.scorer", "ml.model_store",
                   "ml.train", "ml.score", "ml.metrics", "ml.plots", "release.writer", "release.reader",
                   "release.partition", "release.layout", "service.adql", "service.app", "service.served",
                   "service.metadata", "service.results", "service.vosi", "service.server"):
        assert f"stellardb.{module}" in MODULES, module


def test_release_reads_through_catalog_and_model_store_only():
    allowed = ("stellardb.catalog", "stellardb.release", "stellardb.config", "stellardb.errors", "stellardb.cores",
               "stellardb.ml.model_store")
    assert not violations(lambda n, t: layer(n) == "release" and t.startswith("stellardb.")
                          and t != "stellardb" and not t.startswith(allowed))
    # nothing but the command line and the service builds on releases
    assert not violations(lambda n, t: layer(n) not in ("cli", "release", "service", "cluster")
                          and t.startswith("stellardb.release"))


def test_only_the_cli_runs_the_cluster_and_the_cluster_never_ingests():
    """stellardb.cluster reads HATS catalogues and runs the crossmatch SQL and the scorer on Dask;
    only the command line starts it, and it never writes the database (no ingest, no service)."""
    assert not violations(lambda n, t: layer(n) not in ("cli", "cluster") and t.startswith("stellardb.cluster"))
    assert not violations(lambda n, t: layer(n) == "cluster"
                          and t.startswith(("stellardb.ingest", "stellardb.service", "stellardb.simulate")))


def test_the_service_reads_releases_only():
    """The service never opens the database (so ingest/train/score never wait for it), nor imports
    ingest, ml or simulate; of catalog it uses only the VOTable writer and SQL quoting."""
    allowed = ("stellardb.release.reader", "stellardb.release.layout", "stellardb.release.partition",
               "stellardb.service", "stellardb.catalog.export", "stellardb.catalog.db", "stellardb.config",
               "stellardb.errors")
    assert not violations(lambda n, t: layer(n) == "service" and t.startswith("stellardb.")
                          and not t.startswith(allowed))
    # of catalog.db, only its SQL quoting: no connection to a database file
    for name, path in MODULES.items():
        if layer(name) == "service":
            assert "db.connect" not in path.read_text() and "catalog.db import connect" not in path.read_text(), name
    # only the command line imports the service
    assert not violations(lambda n, t: layer(n) not in ("cli", "service") and t.startswith("stellardb.service"))


def test_catalog_imports_nothing_above_it():
    above = ("stellardb.ingest", "stellardb.ml", "stellardb.cli", "stellardb.simulate", "stellardb.release")
    assert not violations(lambda n, t: layer(n) == "catalog" and t.startswith(above))


def test_ingest_and_ml_never_import_each_other():
    assert not violations(lambda n, t: (layer(n) == "ingest" and t.startswith("stellardb.ml"))
                          or (layer(n) == "ml" and t.startswith("stellardb.ingest")))


def test_only_the_cli_is_above_everything():
    """Nothing outside cli/ (and ``python -m stellardb``) imports cli/: the library never prints or parses options."""
    assert not violations(lambda n, t: layer(n) not in ("cli", "__main__") and t.startswith("stellardb.cli"))


def test_only_three_modules_import_keras_or_tensorflow():
    assert not violations(lambda n, t: n not in KERAS_MODULES and t.split(".")[0] in ("keras", "tensorflow"))


def test_only_the_cli_imports_rich():
    assert not violations(lambda n, t: layer(n) != "cli" and t.split(".")[0] == "rich")


def test_no_import_cycles():
    """Tarjan's strongly connected components of the stellardb import graph: all of size one."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in stellardb_imports(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def loaded_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return set(out.stdout.split())


@pytest.mark.parametrize("statement, absent", [
    ("import stellardb.ml.scorer, stellardb.ml.metrics, stellardb.ml.score, stellardb.ml.features",
     ("keras", "tensorflow", "rich", "stellardb.ingest", "stellardb.cli")),
    ("import stellardb, stellardb.catalog.query, stellardb.catalog.xmatch, stellardb.catalog.export",
     ("keras", "tensorflow", "rich", "click", "stellardb.ml", "stellardb.ingest", "stellardb.cli")),
    ("import stellardb.release.reader, stellardb.release.layout",
     ("keras", "tensorflow", "rich", "click", "stellardb.ml", "stellardb.ingest", "stellardb.cli", "lsdb", "dask")),
    ("import stellardb.service.app, stellardb.service.served, stellardb.service.adql",
     ("keras", "tensorflow", "rich", "click", "stellardb.ml", "stellardb.ingest", "stellardb.cli", "lsdb", "dask")),
])
def test_a_fresh_interpreter_loads_only_what_the_layer_needs(statement, absent):
    """What a web process or a notebook pays for: no Keras, TensorFlow, rich or command line."""
    loaded = loaded_after(statement)
    assert not [m for m in loaded if m.split(".")[0] in absent or m.startswith(absent)]
