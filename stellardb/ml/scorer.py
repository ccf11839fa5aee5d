"""The NumPy scorer: trained networks as float32 matrices, evaluated without Keras.

:func:`stellardb.ml.model_store.fold_model` exports each trained network to plain
float32 matrices - the input standardisation and every BatchNormalization folded into
the adjacent Dense layer - and :class:`NumpyScorer` evaluates the networks of the three
parameters together with batched matrix products (all first layers, ensemble members
included, are one product; an ensemble's members are combined as
:class:`stellardb.ml.mlp.TargetScaling` does).  Its output equals ``model.predict``
within float32 rounding (tests/ml/test_models.py) and it is several times faster
(bench/bench_score.py).

Each row also gets extrapolation flags (:class:`RangeFlags`): whether each prediction
lies outside the training labels' range, and how many inputs lie outside the training
inputs' range (both ranges are in ``card.json``).  No Keras, TensorFlow or rich here.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field

import numpy as np

from stellardb.cores import usable_cores
from stellardb.ml.features import PARAMETERS

# Rows per matrix product: small enough that a layer's activations stay in cache
# (2048 x 384 float32 = 3 MB for six networks), large enough to amortise Python
# overhead.  Measured on the 2-core AMD EPYC VM, all feature sets of the 1 M-star
# family: 2048 and 3072 rows 1.28 M stars/s, 4096 1.24, 6144 1.19, 8192 1.10
# (medians of 5; docs/decisions.md).  After the buffer rework the same day, 1,024,
# 1,536 and 2,048 rows were within the VM's noise of one another.
CHUNK_ROWS = 2048
# Rows whose networks' outputs are combined at once (a multiple of CHUNK_ROWS): 6 MB
# of outputs for six networks.
BLOCK_ROWS = 64 * CHUNK_ROWS
# Scorer threads at most (one per core by default).
MAX_THREADS = 8
# Rows per block of RangeFlags.inputs_outside: 27 inputs x 8192 rows of float32 is 0.9 MB.
# 8192, 16384 and 65536 rows measured 0.045, 0.050 and 0.055 s on 588 k stars (2026-12-07).
FLAG_BLOCK_ROWS = 8192


@dataclass
class FoldedNet:
    """One network (one ensemble member) as float32 arrays; the input is ``[x with NaN -> 0, isfinite(x)]``."""

    first_weight: np.ndarray  # (2 * n_inputs, units)
    first_bias: np.ndarray  # (units,)
    hidden: list = field(default_factory=list)  # [(weight, bias), ...] after the first layer
    head_weight: np.ndarray = None  # (units, 2)
    head_bias: np.ndarray = None  # (2,)


@dataclass
class FoldedMLP:
    """One parameter's model as float32 arrays: its networks (one, or the ensemble members) and the target scaling."""

    members: list  # [FoldedNet, ...]
    target_mean: float = 0.0
    target_scale: float = 1.0
    error_factor: float = 1.0
    log_mask: list = field(default_factory=list)  # raw inputs that enter as log10
    colour_pairs: list = field(default_factory=list)  # appended input differences

    @property
    def n_inputs(self) -> int:
        """Network inputs (raw features plus colours), before the missing flags."""
        return self.members[0].first_weight.shape[0] // 2


class NumpyScorer:
    """Evaluate several folded models on the same raw inputs with batched NumPy.

    Parameters
    ----------
    folded : dict
        ``{parameter: FoldedMLP}``, all with the same inputs.
    threads : int or None
        Worker threads, each scoring its own chunks of rows; default one per CPU
        core (at most :data:`MAX_THREADS`).

    Notes
    -----
    Every product writes into a buffer allocated once per thread and call, and
    every element-wise pass runs on whole contiguous arrays, for three reasons
    measured on the 2-core AMD EPYC VM (docs/decisions.md, "Scoring"):

    * a fresh multi-megabyte result per product can be fresh pages for the kernel
      to map: in a VM those faults doubled a chunk's time in one layout tried;
    * NumPy's ``maximum`` against the scalar 0 ran at 0.44 ns per element, against a
      same-shaped array of zeros at 0.12, and an added bias row broadcast over the
      rows at twice the cost of a contiguous array of the bias;
    * a product written into a strided view (one network's columns of a wider
      array) made OpenBLAS zero that output in a separate pass, 10 % of the time.

    The first layer's bias is a row of its weights against a column of ones in the
    input buffer, and the first hidden layer's a row of its weights against a column
    of ones in the first layer's output, so neither costs a pass.
    """

    def __init__(self, folded: dict, threads: int | None = None):
        from stellardb.ml.features import LOG_SIGMA_MAX, LOG_SIGMA_MIN

        self.threads = max(1, int(threads if threads is not None else min(usable_cores(), MAX_THREADS)))

        self.parameters = tuple(folded)
        models = [folded[p] for p in self.parameters]
        # Network inputs: the raw features, then the colours appended to them.
        self.n_inputs = models[0].n_inputs
        if any(m.n_inputs != self.n_inputs for m in models):
            raise ValueError("all networks of a NumpyScorer must take the same inputs")
        self.colour_pairs = [(int(p[0]), int(p[1]), float(p[2]) if len(p) > 2 else 1.0) for p in models[0].colour_pairs]
        self.n_features = self.n_inputs - len(self.colour_pairs)
        # One product for the first layers of every network (ensemble members
        # included): the input matrix is read once.
        self.nets = [net for m in models for net in m.members]
        # A network with a hidden layer gets one more first-layer column, with weights 0 and
        # bias 1: after the ReLU it is exactly 1 on every row, and the first hidden layer takes
        # its bias as one more weight row against it.  Its bias then costs no pass over the
        # rows (added after the product, it took 6-9 % of a chunk's time; docs/decisions.md).
        ones = [1 if f.hidden else 0 for f in self.nets]  # the extra column, or none
        self.first_weight = np.ascontiguousarray(
            np.concatenate([np.pad(f.first_weight, ((0, 0), (0, e))) for f, e in zip(self.nets, ones)], axis=1))
        self.first_bias = np.concatenate([np.append(f.first_bias, np.ones(e, np.float32)) for f, e in zip(self.nets, ones)])
        edges = np.cumsum([0] + [f.first_bias.size + e for f, e in zip(self.nets, ones)])
        # each network's columns of the first-layer output (its column of ones last)
        self.net_columns = [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]
        # each network's hidden-layer weights as the products use them: the first with its
        # bias as a last row; a deeper layer's bias is added after its product (_tiles)
        self.hidden_weights = [[np.ascontiguousarray(np.vstack([w, b[None, :]])) if i == 0 else w
                                for i, (w, b) in enumerate(net.hidden)] for net in self.nets]
        # per parameter: its FoldedMLP and the indices of its networks in self.nets
        first = np.cumsum([0] + [len(m.members) for m in models])
        self.plan = [(p, m, range(int(a), int(b))) for p, m, a, b in zip(self.parameters, models, first[:-1], first[1:])]
        masks = {(tuple(f.log_mask), tuple(map(tuple, f.colour_pairs))) for f in models}
        if len(masks) != 1:
            raise ValueError("all networks of a NumpyScorer must transform their inputs the same way")
        self.log_columns = np.flatnonzero(models[0].log_mask or [False] * self.n_features)
        self.log_sigma_range = (LOG_SIGMA_MIN, LOG_SIGMA_MAX)
        # widest activation of any network after its first layer (a buffer's size)
        self._widest_hidden = max([w.shape[1] for net in self.nets for w, _ in net.hidden] + [1])
        self._first_layers = {}  # missing-flag pattern of a chunk -> its first-layer weights (see _first_layer)
        self._bias_tiles = {}  # rows -> per network, per hidden layer, its bias repeated on every row
        self._head_bias = np.stack([net.head_bias for net in self.nets])[:, None, :]  # (networks, 1, 2)

    def predict(self, x: np.ndarray) -> dict:
        """Predictions for raw inputs ``x`` (n, n_features); NaN or inf means missing.

        Returns
        -------
        dict
            ``{parameter: (value, error)}``, float32 arrays of length n, physical units.
        """
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected inputs of shape (n, {self.n_features}), got {x.shape}")
        n = x.shape[0]
        out = {p: (np.empty(n, np.float32), np.empty(n, np.float32)) for p in self.parameters}
        if n == 0:  # (an empty Arrow batch)
            return out
        starts = list(range(0, n, CHUNK_ROWS))
        workers = min(self.threads, len(starts))
        # built before the threads start, which then only read them
        tiles = {rows: self._tiles(rows) for rows in {min(n - lo, CHUNK_ROWS) for lo in starts[:1] + starts[-1:]}}
        spaces = [{} for _ in range(workers)]  # per worker: rows -> its buffers (a full chunk, and the last one)
        # every network's two outputs for a block of rows: the chunks write them, then the
        # members are combined for the whole block at once (per chunk, those few dozen
        # small operations took a fifth of the time with two threads, mostly waiting on the GIL)
        per_block = max(1, BLOCK_ROWS // CHUNK_ROWS)  # whole chunks, at least one
        heads = np.empty((len(self.nets), min(n, per_block * CHUNK_ROWS), 2), np.float32)

        def work(k, first, last):
            block_lo = starts[first]  # heads holds the block's rows from 0
            for lo in starts[first + k:last:workers]:
                hi = min(n, lo + CHUNK_ROWS)
                space = spaces[k].get(hi - lo)
                if space is None:
                    space = spaces[k][hi - lo] = self._workspace(hi - lo)
                self._predict_chunk(x[lo:hi], space, tiles[hi - lo], heads[:, lo - block_lo:hi - block_lo])

        # BLAS is single-threaded on every path, one thread or many: a multi-threaded
        # OpenBLAS may split a product differently and change the last bit of a few
        # values (seen: 77 of 30,000 differed by 1 ulp on an AMD EPYC), and a star's
        # prediction must not depend on the thread count.  Chunks are the same rows
        # whatever the thread count, so each thread computes exactly what one thread
        # would.  With one chunk per thread at a time, NumPy releases the GIL in its
        # loops, so the element-wise work runs on every core too, and BLAS threads do
        # not fight the workers for the cores.
        with contextlib.ExitStack() as stack:
            stack.enter_context(self._blas_limit())
            pool = None
            if workers > 1:
                from concurrent.futures import ThreadPoolExecutor

                pool = stack.enter_context(ThreadPoolExecutor(workers))
            for first in range(0, len(starts), per_block):
                last = min(len(starts), first + per_block)
                lo, hi = starts[first], min(n, starts[last - 1] + CHUNK_ROWS)
                if pool is None:
                    work(0, first, last)
                    self._combine(heads[:, :hi - lo], out, lo, hi)
                else:
                    list(pool.map(lambda k: work(k, first, last), range(workers)))
                    # the combination too is shared: each worker takes a slice of the block's
                    # rows (row by row, so the same values however it is split).  In the
                    # calling thread alone it took 7-10 % of the time with the other core idle.
                    cuts = [lo + (hi - lo) * k // workers for k in range(workers + 1)]

                    def combine(k, cuts=cuts, lo=lo):
                        a, b = cuts[k], cuts[k + 1]
                        self._combine(heads[:, a - lo:b - lo], out, a, b)

                    list(pool.map(combine, range(workers)))
        return out

    def _combine(self, heads, out, lo, hi):
        """Each parameter's value and error for rows ``lo:hi`` from its networks' outputs ``heads``
        (networks, rows, 2), in physical units, into ``out``."""
        heads += self._head_bias
        mus = heads[:, :, 0]
        log_sigmas = np.clip(heads[:, :, 1], *self.log_sigma_range)
        for p, model, members in self.plan:
            value, error = out[p]
            if len(members) == 1:
                mu = mus[members[0]]
                np.exp(log_sigmas[members[0]], out=error[lo:hi])
            else:
                # the mixture of the members' Gaussians (stellardb.ml.mlp.TargetScaling)
                m = mus[members.start:members.stop]
                mu = _mean_of_members(m)
                variance = _mean_of_members(np.exp(2.0 * log_sigmas[members.start:members.stop]))
                variance += _mean_of_members(np.square(m - mu))
                np.sqrt(variance, out=error[lo:hi])
            np.multiply(mu, model.target_scale, out=value[lo:hi])
            value[lo:hi] += model.target_mean
            error[lo:hi] *= model.target_scale * model.error_factor

    def _blas_limit(self):
        """Context: BLAS on one thread (see :func:`blas_on_one_thread`)."""
        return blas_on_one_thread()

    def _tiles(self, rows: int) -> list:
        """Each network's biases of its hidden layers after the first, repeated on ``rows`` rows
        (contiguous; a full chunk's are kept)."""
        tiles = self._bias_tiles.get(rows)
        if tiles is None:
            tiles = [[np.ascontiguousarray(np.broadcast_to(b, (rows, b.size))) for _, b in net.hidden[1:]]
                     for net in self.nets]
            if rows == CHUNK_ROWS:
                self._bias_tiles[rows] = tiles
        return tiles

    def _workspace(self, rows: int) -> dict:
        """One thread's buffers for chunks of ``rows`` rows."""
        ni = self.n_inputs
        # inputs: [network inputs (ni) | ones (the first layer's bias) | varying missing flags (<= ni)],
        # column-major: the per-column log10, colours and masks touch contiguous memory
        inputs = np.empty((rows, 2 * ni + 1), np.float32, order="F")
        inputs[:, ni] = 1.0
        widest = max(self.first_bias.size, self._widest_hidden)
        return {
            "inputs": inputs,
            "first": np.empty((rows, self.first_bias.size), np.float32),
            # per network two flat buffers its hidden layers alternate between
            "hidden": [(np.empty(rows * self._widest_hidden, np.float32), np.empty(rows * self._widest_hidden, np.float32))
                       for _ in self.nets],
            "zeros": np.zeros(rows * widest, np.float32),
        }

    def _first_layer(self, finite):
        """First-layer weights for a chunk whose is-finite matrix is ``finite``: (weight, flag columns).

        ``weight`` has a row per network input, then the bias row (the input buffer's
        column of ones), then a row per varying flag column.  Inputs go missing
        together (a SkyMapper band takes its absolute magnitudes, error and colours
        with it; GSP-Phot its six columns), so within a chunk many flag columns are
        identical, and some are 1 everywhere.  Identical columns f share one column
        with the sum of their weight rows (``f Wi + f Wj = f (Wi + Wj)``) and a column
        of ones moves into the bias: the same result with about a third fewer
        first-layer products.  The merged weights are cached per pattern.
        """
        ni = self.n_inputs
        everywhere, anywhere = finite.all(axis=0), finite.any(axis=0)
        groups = {}
        for j in range(ni):
            groups.setdefault(finite[:, j].tobytes(), []).append(j)
        key = tuple((tuple(cols), 1 if everywhere[cols[0]] else 0 if not anywhere[cols[0]] else 2)
                    for cols in groups.values())
        cached = self._first_layers.get(key)
        if cached is None:
            flag_weight = self.first_weight[ni:].astype(np.float64)
            bias = self.first_bias.astype(np.float64)
            rows, flag_columns = [], []
            for cols, kind in key:
                merged = flag_weight[list(cols)].sum(axis=0)
                if kind == 1:  # finite in every row: a constant
                    bias += merged
                elif kind == 2:
                    rows.append(merged)
                    flag_columns.append(cols[0])
            # (no varying flag column at all, e.g. a chunk of one star: an empty block of rows)
            rows = np.asarray(rows, dtype=np.float64).reshape(len(rows), flag_weight.shape[1])
            weight = np.concatenate([self.first_weight[:ni], bias[None, :].astype(np.float32),
                                     rows.astype(np.float32)], axis=0)
            cached = (np.ascontiguousarray(weight), np.asarray(flag_columns, dtype=np.intp))
            if len(self._first_layers) < 256:
                self._first_layers[key] = cached
        return cached

    def _predict_chunk(self, x, space, tiles, heads):
        """The networks' outputs for the rows ``x`` into ``heads`` (networks, rows, 2), head biases not yet added."""
        nf, ni = self.n_features, self.n_inputs
        rows = x.shape[0]
        inp = space["inputs"]
        xin = inp[:, :ni]
        xin[:, :nf] = x
        with np.errstate(divide="ignore", invalid="ignore"):
            for j in self.log_columns:
                # log10 of a negative value is NaN and of 0 is -inf: both non-finite,
                # so missing, as the Keras layer treats non-positive values.
                np.log10(xin[:, j], out=xin[:, j])
            for c, (i, j, k) in enumerate(self.colour_pairs):
                col = xin[:, nf + c]
                if k == 1.0:
                    np.subtract(xin[:, i], xin[:, j], out=col)
                else:
                    np.multiply(xin[:, j], -k, out=col)
                    col += xin[:, i]
        finite = np.isfinite(xin)
        np.copyto(xin, 0.0, where=~finite)
        weight, flag_columns = self._first_layer(finite)
        width = ni + 1 + len(flag_columns)
        inp[:, ni + 1:width] = finite[:, flag_columns]
        zeros = space["zeros"]
        first = np.matmul(inp[:, :width], weight, out=space["first"])
        np.maximum(first, zeros[:first.size].reshape(first.shape), out=first)
        for k, (net, cols) in enumerate(zip(self.nets, self.net_columns)):
            a = first[:, cols]
            weights = self.hidden_weights[k]
            for layer, (w, buf) in enumerate(zip(weights, space["hidden"][k] * len(weights))):
                # a network's own buffer, contiguous (see the class notes); layers alternate the two
                h = np.matmul(a, w, out=buf[:rows * w.shape[1]].reshape(rows, w.shape[1]))
                if layer:  # (the first hidden layer's bias came with the column of ones)
                    h += tiles[k][layer - 1]
                np.maximum(h, zeros[:h.size].reshape(h.shape), out=h)
                a = h
            np.matmul(a, net.head_weight, out=heads[k])


def _mean_of_members(a: np.ndarray) -> np.ndarray:
    """The mean over the members (axis 0 of ``a``), adding them in their order.  NumPy's
    ``mean(axis=0)`` adds 8 or more members of a one-row slice in another order than
    of a longer one, so a star's value would depend on how the rows were split between
    the threads (found in review, 2026-12-07)."""
    total = a[0].copy()
    for member in a[1:]:
        total += member
    total /= np.float32(a.shape[0])
    return total


# BLAS thread limit, shared by every scorer of the process.  threadpoolctl's limit is
# process-wide and restores what it found when it exits, so two overlapping predict calls
# (two threads of one process) each taking their own would let the first to finish give
# BLAS its threads back in the middle of the other.  And threadpoolctl (3.8) lets only the
# thread that set OpenBLAS's pool change it back: a restore from another thread is
# silently ignored.  So the first call in takes the limit, later calls share it, and the
# first call restores it once the last of them is done, waiting for them if need be.  (A
# threadpoolctl limit that another thread holds open wins: the scorer cannot change it.)
_BLAS = threading.Condition()
_BLAS_STATE = {"users": 0, "limiter": None}


@contextlib.contextmanager
def blas_on_one_thread():
    """Context: BLAS limited to one thread while any scorer in the process is inside it
    (a no-op without threadpoolctl)."""
    with _BLAS:
        owner = _BLAS_STATE["limiter"] is None
        if owner:
            try:
                from threadpoolctl import ThreadpoolController

                # a new controller each time (1 ms): it sees every BLAS loaded by now
                limiter = ThreadpoolController().limit(limits=1, user_api="blas")
            except ImportError:  # pragma: no cover - threadpoolctl is a dependency
                limiter = contextlib.nullcontext()
            limiter.__enter__()  # this thread holds threadpoolctl's control until __exit__
            _BLAS_STATE["limiter"] = limiter
        _BLAS_STATE["users"] += 1
    try:
        yield
    finally:
        with _BLAS:
            _BLAS_STATE["users"] -= 1
            if owner:
                _BLAS.wait_for(lambda: _BLAS_STATE["users"] == 0)
                limiter, _BLAS_STATE["limiter"] = _BLAS_STATE["limiter"], None
                limiter.__exit__(None, None, None)
            else:
                _BLAS.notify_all()


# ---------------------------------------------------------------- extrapolation flags


class RangeFlags:
    """Flags for predictions and inputs outside the training data (card.json ``training_ranges``).

    * ``{parameter}_outside_training``: the prediction is below the smallest or
      above the largest label of the training split;
    * ``inputs_outside_training``: the number of network inputs (features in the
      units the network sees, then colours) whose finite value lies outside the
      training split's range; missing inputs do not count.

    Parameters
    ----------
    ranges : dict
        ``card["training_ranges"]`` (``labels``: parameter -> [min, max];
        ``inputs``: input name -> [min, max], in network-input order).
    features : sequence of str
        The model's raw input columns.
    """

    def __init__(self, ranges: dict, features):
        from stellardb.ml.features import colour_pairs_for, input_names, log_mask_for

        self.features = list(features)
        self.log_mask = log_mask_for(self.features)
        self.colour_pairs = colour_pairs_for(self.features)
        names = input_names(self.features)
        inputs = ranges["inputs"]
        if list(inputs) != names:
            raise ValueError(f"training_ranges.inputs names {list(inputs)[:3]}... do not match the model's inputs")
        lo = [(r[0] if r is not None else np.inf) for r in inputs.values()]
        hi = [(r[1] if r is not None else -np.inf) for r in inputs.values()]
        # an input never seen finite in training: any finite value is outside
        self.input_min = np.asarray(lo, dtype=np.float64)
        self.input_max = np.asarray(hi, dtype=np.float64)
        labels = ranges["labels"]
        if set(labels) != set(PARAMETERS):
            raise ValueError(f"training_ranges.labels has {sorted(labels)}, not {list(PARAMETERS)}")
        if any(r is not None and len(r) != 2 for r in labels.values()) or any(
                r is not None and len(r) != 2 for r in inputs.values()):
            raise ValueError("a training range is not a [min, max] pair")
        self.label_range = {p: (tuple(float(v) for v in r) if r is not None else (np.inf, -np.inf)) for p, r in labels.items()}

    @classmethod
    def from_card(cls, card: dict):
        """The flags of a model, or None for a card written before ``training_ranges`` existed."""
        ranges = card.get("training_ranges")
        if not ranges:
            return None
        return cls(ranges, card["features"])

    def inputs_outside(self, x: np.ndarray) -> np.ndarray:
        """Per row of raw inputs ``x``: how many network inputs lie outside the training range (int16).

        Computed in float32 column by column, as training computed the ranges
        (log10, then colours), so a training star at a bound is inside.  Rows go in
        blocks of FLAG_BLOCK_ROWS, each transposed once: every input is then a short
        contiguous row that stays in cache through its few operations (a column of the
        whole matrix is strided, and each operation on it a pass through memory: 5x the
        time on 588 k stars of 27 inputs).
        """
        x = np.asarray(x, dtype=np.float32)
        n, n_raw = x.shape
        count = np.empty(n, np.int16)
        lo, hi = self.input_min.astype(np.float32), self.input_max.astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            for start in range(0, n, FLAG_BLOCK_ROWS):
                # inputs x rows, always a copy (ascontiguousarray returns a one-row block itself)
                block = x[start:start + FLAG_BLOCK_ROWS].T.copy(order="C")
                counted = np.zeros(block.shape[1], np.int16)
                for j in range(n_raw):
                    column = block[j]  # a view: the network-unit value is written back for the colours
                    if self.log_mask[j]:
                        np.log10(np.where(column > 0, column, np.nan), out=column)
                    # +-inf is missing for the network, as NaN is; NaN compares False
                    column[np.isinf(column)] = np.nan
                    counted += (column < lo[j]) | (column > hi[j])
                for c, (i, j, k) in enumerate(self.colour_pairs):
                    colour = block[i] - block[j] if k == 1.0 else block[i] - k * block[j]
                    counted += (colour < lo[n_raw + c]) | (colour > hi[n_raw + c])
                count[start:start + FLAG_BLOCK_ROWS] = counted
        return count

    def outside_label_range(self, parameter: str, value: np.ndarray) -> np.ndarray:
        """Whether each prediction of ``parameter`` lies outside the training labels' range."""
        lo, hi = self.label_range[parameter]
        value = np.asarray(value, dtype=np.float64)
        return (value < lo) | (value > hi)
