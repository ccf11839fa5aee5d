"""The Keras network, its missing-value handling, the NumPy scorer and the split rule."""

from __future__ import annotations

from stellardb.config import quiet_tensorflow_logs

quiet_tensorflow_logs()

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from stellardb.ml.features import FEATURES, colour_pairs_for, log_mask_for, prepare_inputs  # noqa: E402
from stellardb.ml.mlp import (  # noqa: E402
    MissingAwareScaling,
    build_mlp,
    ensemble_members,
    heteroscedastic_loss,
    member_model,
    training_head,
    value_loss,
)
from stellardb.ml.model_store import fold_model  # noqa: E402
from stellardb.ml.scorer import CHUNK_ROWS, NumpyScorer  # noqa: E402
from stellardb.ml.train import SPLIT_RULE, assign_split, split_bucket  # noqa: E402

from ..helpers import splitmix64_bucket

N_FEATURES = len(FEATURES)


def _inputs(n, seed=0, missing_fraction=0.1):
    """Raw-unit inputs (means and spreads far from 0/1) with some NaN and inf."""
    rng = np.random.default_rng(seed)
    x = rng.normal(50.0, 20.0, (n, N_FEATURES)).astype(np.float32)
    x[rng.random(x.shape) < missing_fraction] = np.nan
    x[0, 3] = np.inf
    x[1, :] = np.nan
    return x


def _trained_model(seed=1, n=512, hidden_units=(16, 8), epochs=2, members=1):
    """A small model (log10 inputs and colours included) fitted for a couple of epochs, so BatchNormalization statistics are not trivial."""
    keras.utils.set_random_seed(seed)
    x = _inputs(n, seed)
    log_mask, pairs = log_mask_for(FEATURES), colour_pairs_for(FEATURES)
    prepared = prepare_inputs(x, log_mask, pairs)
    prepared[~np.isfinite(prepared)] = np.nan
    mean, scale = np.nanmean(prepared, axis=0), np.nanstd(prepared, axis=0)
    y = np.nan_to_num(x[:, 0], nan=50.0) * 3.0 + 5000.0
    model = build_mlp(N_FEATURES, hidden_units, 0.02, mean, scale, target_mean=5150.0, target_scale=60.0, name="teff",
                      log_mask=log_mask, colour_pairs=pairs, members=members)
    model.get_layer("target_scaling").error_factor = 1.3
    head = training_head(model)
    head.compile(optimizer=keras.optimizers.Adam(1e-2), loss=heteroscedastic_loss())
    head.fit(x, ((y - 5150.0) / 60.0).astype(np.float32), epochs=epochs, batch_size=64, verbose=0)
    return model, x


def test_build_save_reload_predict_identical(tmp_path):
    """A saved and reloaded model predicts exactly what the original does."""
    model, x = _trained_model()
    path = tmp_path / "teff.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, compile=False)
    np.testing.assert_array_equal(model.predict(x, verbose=0), reloaded.predict(x, verbose=0))
    assert reloaded.get_layer("target_scaling").error_factor == pytest.approx(1.3)


def test_model_has_the_seed_layer_pattern():
    """Every hidden Dense layer is followed by BatchNormalization, ReLU and Dropout 0.02; the head is 2 units."""
    model = build_mlp(N_FEATURES, (32, 16))
    assert model.input_shape == (None, N_FEATURES)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds[1:2] == ["MissingAwareScaling"]
    assert kinds.count("Dense") == 3 and kinds.count("BatchNormalization") == 2
    assert all(layer.rate == 0.02 for layer in model.layers if isinstance(layer, keras.layers.Dropout))
    assert model.get_layer("head").units == 2
    assert model.output_shape == (None, 2)


def test_missing_values_become_zero_and_flag():
    """NaN and inf inputs become 0 after standardising and set their flag; finite inputs are standardised."""
    layer = MissingAwareScaling(mean=[10.0, 20.0, 30.0], scale=[2.0, 4.0, 5.0])
    x = np.array([[12.0, np.nan, 30.0], [np.inf, 16.0, -np.inf]], dtype=np.float32)
    out = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(out[:, :3], [[1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    np.testing.assert_array_equal(out[:, 3:], [[0, 1, 0], [1, 0, 1]])


def test_log_inputs_and_colours():
    """log10 inputs treat non-positive values as missing; a derived input a - k b is missing when either is."""
    layer = MissingAwareScaling(mean=[0.0] * 5, scale=[1.0] * 5, log_mask=[True, False, False], colour_pairs=[[1, 2], [1, 0, 5.0]])
    x = np.array([[100.0, 5.0, 3.0], [-1.0, 5.0, np.nan]], dtype=np.float32)
    out = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(out[:, :5], [[2.0, 5.0, 3.0, 2.0, -5.0], [0.0, 5.0, 0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(out[:, 5:], [[0, 0, 0, 0, 0], [1, 0, 1, 1, 1]])


def test_missing_inputs_give_finite_predictions():
    """A star with every input missing still gets a finite prediction and a positive error."""
    model, x = _trained_model()
    out = model.predict(x[1:2], verbose=0)
    assert np.all(np.isfinite(out)) and out[0, 1] > 0


def test_missing_flag_changes_prediction():
    """The network sees missingness itself, not only the filled value: flagging an input changes the output."""
    model, x = _trained_model()
    row = np.nan_to_num(x[2:3], nan=50.0).copy()
    filled_with_mean = row.copy()
    filled_with_mean[0, 1] = model.get_layer("scaling").mean[1]
    missing = row.copy()
    missing[0, 1] = np.nan
    a, b = model.predict(filled_with_mean, verbose=0), model.predict(missing, verbose=0)
    assert not np.allclose(a, b)


def test_numpy_scorer_equals_keras_predict():
    """The folded NumPy scorer reproduces Keras predict within float32 tolerance, NaNs included."""
    model, x = _trained_model(hidden_units=(32, 16, 8), epochs=3)
    other, _ = _trained_model(seed=2, hidden_units=(8,))
    x = np.concatenate([x, _inputs(20_000, seed=5)])  # more than one scorer chunk
    scorer = NumpyScorer({"teff": fold_model(model), "logg": fold_model(other)})
    got = scorer.predict(x)
    for name, m in (("teff", model), ("logg", other)):
        want = m.predict(x, batch_size=4096, verbose=0)
        scale = m.get_layer("target_scaling").scale
        np.testing.assert_allclose(got[name][0], want[:, 0], rtol=1e-5, atol=1e-4 * scale)
        np.testing.assert_allclose(got[name][1], want[:, 1], rtol=1e-4, atol=1e-5 * scale)


def test_numpy_scorer_rejects_wrong_width():
    """Inputs with the wrong number of columns are refused, not silently misread."""
    model, _ = _trained_model()
    scorer = NumpyScorer({"teff": fold_model(model)})
    with pytest.raises(ValueError, match="shape"):
        scorer.predict(np.zeros((3, N_FEATURES - 1), np.float32))


def test_split_equals_independent_recomputation():
    """split_bucket equals a pure-Python splitmix64 of the source_id, for edge and random ids."""
    rng = np.random.default_rng(3)
    ids = np.concatenate([[0, 1, 2**35, 2**63 - 1, 4295806720, 6917528997577384320], rng.integers(0, 2**63 - 1, 2000)])
    got = split_bucket(ids)
    want = [splitmix64_bucket(int(i)) for i in ids]
    np.testing.assert_array_equal(got, want)
    assert "splitmix64" in SPLIT_RULE


def test_split_is_stable_and_80_10_10():
    """The split depends only on source_id (order and repetition do not matter) and is 80/10/10."""
    ids = np.random.default_rng(4).integers(0, 2**63 - 1, 200_000)
    split = assign_split(ids)
    perm = np.random.default_rng(5).permutation(ids.size)
    np.testing.assert_array_equal(assign_split(ids[perm]), split[perm])
    fractions = [np.mean(split == s) for s in ("train", "validation", "test")]
    np.testing.assert_allclose(fractions, [0.8, 0.1, 0.1], atol=0.005)


# ---------------------------------------------------------------- deep ensembles


def test_ensemble_averages_its_members():
    """An ensemble's value is the mean of its members' Keras predictions and its error the mixture sigma times error_factor."""
    model, x = _trained_model(members=3, epochs=3)
    assert ensemble_members(model) == 3
    got = model.predict(x, verbose=0)
    members = [member_model(model, k).predict(x, verbose=0).astype(np.float64) for k in range(3)]
    values = np.stack([m[:, 0] for m in members], axis=1)
    sigmas = np.stack([m[:, 1] for m in members], axis=1)
    # the members were initialised differently, so they disagree
    assert np.median(np.std(values, axis=1)) > 0.01
    value = values.mean(axis=1)
    error = np.sqrt(np.mean(sigmas**2, axis=1) + np.var(values, axis=1)) * 1.3
    np.testing.assert_allclose(got[:, 0], value, rtol=1e-5, atol=1e-4 * 60.0)
    np.testing.assert_allclose(got[:, 1], error, rtol=1e-4, atol=1e-5 * 60.0)
    with pytest.raises(ValueError, match="member 3"):
        member_model(model, 3)


def test_single_network_is_its_own_member():
    """A one-member model is the plain network: same layer names as before ensembles, and member_model reproduces it."""
    model, x = _trained_model()
    assert ensemble_members(model) == 1
    assert {"dense_0", "batchnorm_0", "head", "target_scaling"} <= {layer.name for layer in model.layers}
    member = member_model(model, 0)
    member.get_layer("target_scaling").error_factor = 1.3
    np.testing.assert_array_equal(member.predict(x, verbose=0), model.predict(x, verbose=0))


def test_ensemble_save_reload_predict_identical(tmp_path):
    """A saved ensemble reloads as one .keras model with the same members and outputs."""
    model, x = _trained_model(members=3)
    path = tmp_path / "logg.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, compile=False)
    assert ensemble_members(reloaded) == 3 and reloaded.get_layer("head").output.shape[-1] == 6
    np.testing.assert_array_equal(model.predict(x, verbose=0), reloaded.predict(x, verbose=0))


def test_ensemble_loss_is_the_sum_of_member_losses():
    """Training an ensemble minimises the sum of its members' losses; early stopping watches the Huber loss of their mean."""
    rng = np.random.default_rng(6)
    y = rng.normal(0, 1, 64).astype(np.float32)
    heads = [rng.normal(0, 1, (64, 2)).astype(np.float32) for _ in range(3)]
    loss = heteroscedastic_loss(1.0)
    single = sum(keras.ops.convert_to_numpy(loss(y, h)) for h in heads)
    joint = keras.ops.convert_to_numpy(loss(y, np.concatenate(heads, axis=1)))
    np.testing.assert_allclose(joint, single, rtol=1e-5)
    mean_head = np.stack([np.mean([h[:, 0] for h in heads], axis=0), np.zeros(64, np.float32)], axis=1)
    huber = value_loss(1.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(huber(y, np.concatenate(heads, axis=1))),
                               keras.ops.convert_to_numpy(huber(y, mean_head)), rtol=1e-5)


def test_numpy_scorer_equals_keras_for_ensembles():
    """The NumPy scorer reproduces Keras for an ensemble next to a single network, within float32 tolerance."""
    ensemble, x = _trained_model(members=3, hidden_units=(32, 16), epochs=3)
    single, _ = _trained_model(seed=2, hidden_units=(8,))
    x = np.concatenate([x, _inputs(20_000, seed=7)])
    folded = fold_model(ensemble)
    assert len(folded.members) == 3
    got = NumpyScorer({"teff": fold_model(single), "logg": folded, "feh": fold_model(single)}).predict(x)
    for name, m in (("teff", single), ("logg", ensemble), ("feh", single)):
        want = m.predict(x, batch_size=4096, verbose=0)
        np.testing.assert_allclose(got[name][0], want[:, 0], rtol=1e-5, atol=1e-4 * 60.0)
        np.testing.assert_allclose(got[name][1], want[:, 1], rtol=1e-4, atol=1e-5 * 60.0)


def test_numpy_scorer_merges_flag_columns_exactly():
    """Inputs that go missing together share one first-layer flag column, always-finite ones fold into the bias: same output as Keras."""
    model, _ = _trained_model(members=2, hidden_units=(16, 8))
    rng = np.random.default_rng(8)
    x = rng.normal(50.0, 20.0, (12_000, N_FEATURES)).astype(np.float32)
    x[rng.random(12_000) < 0.1, 3:9] = np.nan      # a survey's columns missing together
    x[rng.random(12_000) < 0.05, 21:27] = np.nan   # another's
    x[:, 15] = np.nan                               # one input never present
    x[:5000, 16] = np.inf                           # one missing in a whole first chunk only
    scorer = NumpyScorer({"logg": fold_model(model)})
    chunk = x[:4096].copy()
    prepared = prepare_inputs(chunk, log_mask_for(FEATURES), colour_pairs_for(FEATURES))
    weight, flag_columns = scorer._first_layer(np.isfinite(prepared))
    # network inputs, the bias row, then the varying flag columns
    assert len(flag_columns) < scorer.n_inputs / 2 and weight.shape[0] == scorer.n_inputs + 1 + len(flag_columns)
    got = scorer.predict(x)
    want = model.predict(x, batch_size=4096, verbose=0)
    np.testing.assert_allclose(got["logg"][0], want[:, 0], rtol=1e-5, atol=1e-4 * 60.0)
    np.testing.assert_allclose(got["logg"][1], want[:, 1], rtol=1e-4, atol=1e-5 * 60.0)


def test_numpy_scorer_blas_single_threaded_on_every_path(monkeypatch):
    """BLAS runs on one thread while chunks are scored, with one scorer thread as with several.

    A multi-threaded OpenBLAS may split a product differently and change the last bit
    of some values (seen on an AMD EPYC: 77 of 30,000), so the one-thread path must not
    leave BLAS on its own threads.  BLAS is first allowed two threads, as it has by
    default on a two-core machine, so the test fails if a path forgets the limit."""
    from threadpoolctl import threadpool_info, threadpool_limits

    model, _ = _trained_model()
    x = _inputs(20_000, seed=4)
    seen = []
    chunk = NumpyScorer._predict_chunk

    def spy(self, *args):
        seen.append(max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"))
        return chunk(self, *args)

    monkeypatch.setattr(NumpyScorer, "_predict_chunk", spy)
    with threadpool_limits(limits=2, user_api="blas"):
        NumpyScorer({"teff": fold_model(model)}, threads=1).predict(x)
        NumpyScorer({"teff": fold_model(model)}, threads=2).predict(x)
    assert len(seen) == 2 * len(range(0, 20_000, CHUNK_ROWS)) and set(seen) == {1}


@pytest.mark.parametrize("n", [1, CHUNK_ROWS + 1])
def test_numpy_scorer_chunk_of_one_star(n):
    """A chunk whose missing flags never vary (one star; CHUNK_ROWS + 1 rows leave one in the last chunk) scores,
    equal to Keras (it crashed on an empty block of merged flag rows)."""
    model, _ = _trained_model()
    x = _inputs(n + 1, seed=3)[1:]  # row 0 of _inputs has an inf, row 1 is all NaN: start at a normal row
    got = NumpyScorer({"teff": fold_model(model)}).predict(x)
    want = model.predict(x, batch_size=4096, verbose=0)
    np.testing.assert_allclose(got["teff"][0], want[:, 0], rtol=1e-5, atol=1e-4 * 60.0)


def test_numpy_scorer_threads_give_identical_results():
    """Scoring chunks on several threads gives bit-for-bit the single-threaded result."""
    model, _ = _trained_model(members=3)
    x = _inputs(30_000, seed=9)
    folded = {"teff": fold_model(model), "logg": fold_model(model)}
    one, three = NumpyScorer(folded, threads=1).predict(x), NumpyScorer(folded, threads=3).predict(x)
    for p in folded:
        np.testing.assert_array_equal(one[p][0], three[p][0])
        np.testing.assert_array_equal(one[p][1], three[p][1])
