"""The NumPy scorer on hand-made networks, without Keras: against a float64 forward pass written
out here, on shapes the trained models never have (a hidden layer wider than every first layer
together, a network with no hidden layer, members of different widths), empty inputs, and two
threads of one process scoring at once."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from stellardb.ml.features import LOG_SIGMA_MAX, LOG_SIGMA_MIN
from stellardb.ml.scorer import CHUNK_ROWS, FoldedMLP, FoldedNet, NumpyScorer

N_FEATURES = 6
LOG_MASK = [True, False, True, False, False, False]
COLOURS = [(0, 1, 1.0), (2, 3, 0.5)]
N_INPUTS = N_FEATURES + len(COLOURS)


def _net(rng, first: int, hidden: list[int]) -> FoldedNet:
    def f32(*shape):
        return (rng.normal(size=shape) * 0.3).astype(np.float32)

    layers, width = [], first
    for units in hidden:
        layers.append((f32(width, units), f32(units)))
        width = units
    return FoldedNet(first_weight=f32(2 * N_INPUTS, first), first_bias=f32(first), hidden=layers,
                     head_weight=f32(width, 2), head_bias=f32(2))


def _model(rng, nets) -> FoldedMLP:
    return FoldedMLP(members=nets, target_mean=float(rng.normal()), target_scale=float(rng.uniform(0.5, 2.0)),
                     error_factor=1.1, log_mask=LOG_MASK, colour_pairs=[list(c) for c in COLOURS])


def _folded(seed=1) -> dict:
    rng = np.random.default_rng(seed)
    return {
        # a hidden layer of 300 units: wider than all first layers together (61)
        "teff": _model(rng, [_net(rng, 16, [64, 8, 300])]),
        # an ensemble of three different shapes, one without a hidden layer
        "logg": _model(rng, [_net(rng, 8, []), _net(rng, 12, [4]), _net(rng, 20, [30, 3])]),
        "feh": _model(rng, [_net(rng, 5, [])]),
    }


def _inputs(n: int, seed=2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, N_FEATURES)) + 1.0).astype(np.float32)
    for value, fraction in ((np.nan, 0.1), (np.inf, 0.02), (-np.inf, 0.02), (0.0, 0.02)):
        x[rng.random(x.shape) < fraction] = value
    x[CHUNK_ROWS:2 * CHUNK_ROWS, 3] = np.nan  # missing in the whole second chunk only
    x[2 * CHUNK_ROWS:3 * CHUNK_ROWS, 5] = 2.0  # present in the whole third chunk only
    return x


def _reference(folded: dict, x: np.ndarray) -> dict:
    """The networks in float64, row by row in matrix form, as the Keras model defines them."""
    x = x.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        for j, logged in enumerate(LOG_MASK):
            if logged:
                x[:, j] = np.where(x[:, j] > 0, np.log10(x[:, j]), np.nan)
        colours = [x[:, i] - k * x[:, j] for i, j, k in COLOURS]
    inputs = np.column_stack([x] + colours)
    finite = np.isfinite(inputs)
    inputs = np.concatenate([np.where(finite, inputs, 0.0), finite.astype(np.float64)], axis=1)
    out = {}
    for p, model in folded.items():
        mus, log_sigmas = [], []
        for net in model.members:
            h = np.maximum(inputs @ net.first_weight.astype(np.float64) + net.first_bias, 0.0)
            for w, b in net.hidden:
                h = np.maximum(h @ w.astype(np.float64) + b, 0.0)
            head = h @ net.head_weight.astype(np.float64) + net.head_bias
            mus.append(head[:, 0])
            log_sigmas.append(np.clip(head[:, 1], LOG_SIGMA_MIN, LOG_SIGMA_MAX))
        mus, log_sigmas = np.array(mus), np.array(log_sigmas)
        mu = mus.mean(axis=0)
        sigma = np.sqrt(np.exp(2 * log_sigmas).mean(axis=0) + mus.var(axis=0))
        out[p] = (mu * model.target_scale + model.target_mean, sigma * model.target_scale * model.error_factor)
    return out


@pytest.mark.parametrize("n", [1, 7, CHUNK_ROWS, CHUNK_ROWS + 1, 3 * CHUNK_ROWS + 17])
def test_scorer_equals_a_float64_forward_pass(n):
    """Every shape of network and every missing-value pattern, one chunk or several, partial last chunk:
    float32 results within rounding of float64, and bit-identical on one thread and three."""
    folded = _folded()
    x = _inputs(max(n, 3 * CHUNK_ROWS + 17))[:n]
    want = _reference(folded, x)
    one, three = NumpyScorer(folded, threads=1).predict(x), NumpyScorer(folded, threads=3).predict(x)
    for p in folded:
        for k in range(2):
            assert one[p][k].dtype == np.float32 and one[p][k].shape == (n,)
            scale = folded[p].target_scale
            np.testing.assert_allclose(one[p][k], want[p][k], rtol=1e-5, atol=1e-5 * scale)
            np.testing.assert_array_equal(one[p][k], three[p][k])


def test_no_rows_give_empty_predictions():
    """An empty batch (an Arrow batch with no rows) gives empty arrays, not an error."""
    got = NumpyScorer(_folded()).predict(np.empty((0, N_FEATURES), np.float32))
    assert set(got) == {"teff", "logg", "feh"}
    assert all(a.shape == (0,) and a.dtype == np.float32 for pair in got.values() for a in pair)


def _blas_threads() -> int:
    return max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")


@pytest.mark.parametrize("long_first", [True, False])
def test_overlapping_calls_keep_blas_on_one_thread_and_restore_it_after(long_first):
    """Two threads of one process score at once.  A short call that enters after a long one and leaves
    before it must not give BLAS its threads back under the long one (a prediction must not depend on
    BLAS's threads), nor a short call that entered first and leaves while the long one still runs; and
    when both are done BLAS has the threads it had before, whichever thread finished last."""
    before = _blas_threads()
    if before < 2:
        pytest.skip("LOUD SKIP: BLAS runs on one thread here, so a lost limit cannot be seen (needs 2+ cores)")
    folded = _folded()
    long_scorer, short_scorer = NumpyScorer(folded, threads=1), NumpyScorer(folded, threads=1)
    seen, long_in, short_in = [], threading.Event(), threading.Event()
    chunk = NumpyScorer._predict_chunk

    def long_chunk(*args):
        seen.append(_blas_threads())
        long_in.set()
        time.sleep(0.02)  # (so that the short call runs inside the long one)
        return chunk(long_scorer, *args)

    def short_chunk(*args):
        short_in.set()
        assert long_in.wait(60)  # the short call is still inside when the long one starts
        return chunk(short_scorer, *args)

    long_scorer._predict_chunk = long_chunk  # these objects only
    short_scorer._predict_chunk = short_chunk
    x = _inputs(12 * CHUNK_ROWS)
    want = NumpyScorer(folded, threads=1).predict(x)
    calls = [threading.Thread(target=lambda: got.update(long_scorer.predict(x))),
             threading.Thread(target=short_scorer.predict, args=(x[:10],))]
    got = {}
    if long_first:
        calls[0].start()
        assert long_in.wait(60)
        calls[1].start()
    else:
        calls[1].start()
        assert short_in.wait(60)
        calls[0].start()
    for call in calls:
        call.join(120)
    assert set(seen) == {1} and len(seen) == 12
    assert _blas_threads() == before
    for p in folded:
        np.testing.assert_array_equal(got[p][0], want[p][0])


@pytest.mark.parametrize("threads", [1, 3])
def test_blocks_of_rows_give_the_one_block_result(monkeypatch, threads):
    """The members are combined per block of rows: with blocks of two chunks, 3 chunks + 17 rows run as
    two blocks (the second partial) and give bit for bit what one block gives, and the float64 answer."""
    from stellardb.ml import scorer as scorer_module

    folded = _folded()
    x = _inputs(3 * CHUNK_ROWS + 17)
    one_block = NumpyScorer(folded, threads=threads).predict(x)
    monkeypatch.setattr(scorer_module, "BLOCK_ROWS", 2 * CHUNK_ROWS)
    blocks = NumpyScorer(folded, threads=threads).predict(x)
    want = _reference(folded, x)
    for p in folded:
        for k in range(2):
            np.testing.assert_array_equal(blocks[p][k], one_block[p][k])
            np.testing.assert_allclose(blocks[p][k], want[p][k], rtol=1e-5, atol=1e-5 * folded[p].target_scale)


def test_benchmark_peer_runs_the_scorers_products():
    """bench/bench_feature_sets.py's peer (the scorer's bare matrix products) multiplies the scorer's own
    weights: it runs on odd shapes (a network without a hidden layer, three hidden layers, a partial
    last chunk).  It broke once when the scorer's weights changed shape and no test ran it."""
    import importlib
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[2] / "bench"
    # the benchmark puts bench/ on sys.path and imports its neighbours as top-level modules: undone after
    saved_path, saved_modules = list(sys.path), set(sys.modules)
    sys.path.insert(0, str(bench))
    try:
        module = importlib.import_module("bench_feature_sets")
        seconds = module.products_only_seconds(NumpyScorer(_folded(), threads=2), 3 * CHUNK_ROWS + 17)
    finally:
        sys.path[:] = saved_path
        for name in set(sys.modules) - saved_modules:
            if getattr(sys.modules[name], "__file__", None) and Path(sys.modules[name].__file__).parent == bench:
                del sys.modules[name]
    assert 0.0 < seconds < 60.0


def test_mean_of_members_of_one_row_is_that_rows_mean():
    """The members' mean of a one-row slice equals that row's mean in a longer slice, bit for bit, for
    ensembles of 2 to 12 members (NumPy's mean(axis=0) differs for 8 or more: another summation order)."""
    from stellardb.ml.scorer import _mean_of_members

    rng = np.random.default_rng(11)
    for members in range(2, 13):
        a = (rng.normal(size=(members, 500)) * 10.0 ** rng.uniform(-3, 3, size=500)).astype(np.float32)
        whole = _mean_of_members(a)
        rows = np.concatenate([_mean_of_members(a[:, j:j + 1]) for j in range(a.shape[1])])
        np.testing.assert_array_equal(rows, whole, err_msg=f"{members} members")
        if members < 8:  # the trained ensembles' sizes: the same bits as NumPy's mean, so no prediction moved
            np.testing.assert_array_equal(whole, a.mean(axis=0))


@pytest.mark.parametrize("threads", [2, 3, 5])
def test_large_ensemble_does_not_depend_on_the_thread_count(monkeypatch, threads):
    """A parameter of 9 members, the last block 3 rows long, so that some threads combine a single row:
    the same bits as one thread.  NumPy's mean over 8 or more members of one row adds them in another
    order than over many rows, and the scorer once used it (found in review)."""
    from stellardb.ml import scorer as scorer_module

    rng = np.random.default_rng(7)
    folded = {"logg": _model(rng, [_net(rng, 6, [5]) for _ in range(9)])}
    x = _inputs(5 * CHUNK_ROWS + 3)  # six chunks: five threads run, and the last block's 3 rows are split
    monkeypatch.setattr(scorer_module, "BLOCK_ROWS", CHUNK_ROWS)
    one = NumpyScorer(folded, threads=1).predict(x)
    many = NumpyScorer(folded, threads=threads).predict(x)
    want = _reference(folded, x)
    for k in range(2):
        np.testing.assert_array_equal(many["logg"][k], one["logg"][k])
        np.testing.assert_allclose(one["logg"][k], want["logg"][k], rtol=1e-5, atol=1e-5 * folded["logg"].target_scale)


def test_block_smaller_than_a_chunk_is_one_chunk(monkeypatch):
    """BLOCK_ROWS below CHUNK_ROWS means blocks of one chunk (it crashed on the first full chunk)."""
    from stellardb.ml import scorer as scorer_module

    folded = _folded()
    x = _inputs(2 * CHUNK_ROWS + 5)
    want = NumpyScorer(folded, threads=2).predict(x)
    monkeypatch.setattr(scorer_module, "BLOCK_ROWS", CHUNK_ROWS // 3)
    got = NumpyScorer(folded, threads=2).predict(x)
    for p in folded:
        for k in range(2):
            np.testing.assert_array_equal(got[p][k], want[p][k])


def _inputs_outside_by_columns(flags, x):
    """The flag count the direct way: each input column of the whole matrix in turn (log10
    where the model takes logs, +-inf missing, then the colours of the processed columns)."""
    x = np.asarray(x, dtype=np.float32)
    lo, hi = flags.input_min.astype(np.float32), flags.input_max.astype(np.float32)
    count, columns = np.zeros(len(x), np.int16), []
    with np.errstate(divide="ignore", invalid="ignore"):
        for j in range(x.shape[1]):
            column = x[:, j].copy()
            if flags.log_mask[j]:
                column = np.log10(np.where(column > 0, column, np.nan))
            column[np.isinf(column)] = np.nan
            columns.append(column)
            count += (column < lo[j]) | (column > hi[j])
        for c, (i, j, k) in enumerate(flags.colour_pairs):
            colour = columns[i] - k * columns[j] if k != 1.0 else columns[i] - columns[j]
            count += (colour < lo[x.shape[1] + c]) | (colour > hi[x.shape[1] + c])
    return count


@pytest.mark.parametrize("n", [0, 1, 5, 6, 7, 13, 100])
def test_inputs_outside_in_blocks_equals_the_column_count(monkeypatch, n):
    """Blocks of rows (a block of one row included) give the whole matrix's count, NaN, +-inf, zero
    and negative inputs of log features included, and leave the caller's matrix as it was."""
    from stellardb.ml import scorer as scorer_module
    from stellardb.ml.features import colour_pairs_for, input_names, log_mask_for
    from stellardb.ml.scorer import RangeFlags

    monkeypatch.setattr(scorer_module, "FLAG_BLOCK_ROWS", 6)
    features = ["r_med_geo", "phot_bp_mean_mag", "phot_rp_mean_mag", "gabs", "rabs", "e_g_psf", "teff_gspphot"]
    names = input_names(features)
    rng = np.random.default_rng(n)
    assert any(log_mask_for(features)) and colour_pairs_for(features)
    ranges = {"labels": {"teff": [4000, 7000], "logg": [1, 5], "feh": [-2, 0.5]},
              "inputs": {name: sorted(rng.normal(size=2).tolist()) for name in names}}
    ranges["inputs"][names[-1]] = None  # an input never finite in training: any finite value is outside
    flags = RangeFlags(ranges, features)
    x = rng.normal(size=(n, len(features))).astype(np.float32)
    for value in (np.nan, np.inf, -np.inf, 0.0, -1.0):
        x[rng.random(x.shape) < 0.05] = value
    before = x.copy()
    got = flags.inputs_outside(x)
    np.testing.assert_array_equal(x, before)
    assert got.dtype == np.int16
    np.testing.assert_array_equal(got, _inputs_outside_by_columns(flags, x))
    if n >= 13:
        assert 0 < got.max() <= len(names)
