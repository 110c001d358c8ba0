"""bptt.fit, bptt.SequenceModel and the scikit-learn estimators (python/sequences.cc) on small
generated data: they learn, agree with the bptt program on the same checkpoint, take NumPy arrays
without copying them, release the GIL while training, and work in a scikit-learn Pipeline and
cross_val_score.

Run by ctest (python_test) with PYTHONPATH at the built module and BPTT_PROGRAM the built bptt.
"""
import json
import os
import subprocess
import threading
import time
import tracemalloc

import numpy as np
import pytest
import sklearn
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

import bptt

PROGRAM = os.environ.get("BPTT_PROGRAM", "bptt")

SMALL = dict(hidden=16, layers=1, batch=16, lr=1e-2, threads=1, eval_every=50, log_every=50)


def classes_data(n, seed, length=8):
    """Sequences of 2 features whose class is the sign of the sum of the first feature."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, length, 2)).astype(np.float32) + 20  # standardisation matters
    y = (x[:, :, 0].sum(axis=1) > 20 * length).astype(np.int64)
    return x, y


def cli(*args):
    return subprocess.run([PROGRAM, *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    x, y = classes_data(480, 1)
    root = tmp_path_factory.mktemp("fit")
    seen = []
    model = bptt.fit(x, y, max_steps=150, val_frac=0.2, out=root / "run", verbose=False, progress=seen.append,
                     **SMALL)
    return {"model": model, "root": root, "seen": seen}


def test_fit_learns_and_reports_progress(classifier):
    model = classifier["model"]
    x, y = classes_data(200, 2)
    assert model.score(x, y) > 0.85
    assert model.head == "classify"
    assert [m["step"] for m in classifier["seen"]][:3] == [50, 100, 150]
    assert model.summary["validation"]["accuracy"] > 0.8
    p = model.predict_proba(x)
    assert p.shape == (200, 2) and p.dtype == np.float32
    assert np.allclose(p.sum(axis=1), 1, atol=1e-5)
    assert np.array_equal(model.predict(x), p.argmax(axis=1))
    r = model.evaluate(x, y)
    assert r["accuracy"] == pytest.approx(model.score(x, y))
    assert np.array(r["confusion"]).sum() == 200


def test_the_program_reads_what_python_saved(classifier, tmp_path):
    model = classifier["model"]
    path = tmp_path / "model.safetensors"
    model.save(path)
    x, y = classes_data(50, 3)
    np.savez(tmp_path / "test.npz", x=x, y=y)
    out = cli("eval", path, tmp_path / "test.npz", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["accuracy"] == pytest.approx(model.score(x, y))
    out = cli("predict", path, tmp_path / "test.npz", "--out", tmp_path / "p.npy", "--probabilities")
    assert out.returncode == 0, out.stderr
    assert np.allclose(np.load(tmp_path / "p.npy"), model.predict_proba(x), atol=1e-6)
    again = bptt.SequenceModel.load(path)
    assert np.array_equal(again.predict(x), model.predict(x))
    assert again.spec["inputs"]["mean"][0] == pytest.approx(20, abs=0.1)


def test_fit_prints_its_progress_on_python_s_stderr(capsys):
    x, y = classes_data(64, 10)
    bptt.fit(x, y, max_steps=4, val_frac=0.0, **dict(SMALL, log_every=2))
    err = capsys.readouterr().err
    assert "bptt train: lstm 1x16" in err and "step 4  epoch 1.00" in err, err


def test_lengths_masks_and_nan_padding_agree():
    x, y = classes_data(240, 4, length=10)
    lengths = np.random.default_rng(5).integers(3, 11, size=240)
    padded = x.copy()
    for n, length in enumerate(lengths):
        padded[n, length:] = np.nan
    model = bptt.fit(padded, y, max_steps=30, verbose=False, **SMALL)
    mask = (np.arange(10)[None, :] < lengths[:, None]).astype(np.uint8)
    by_nan = model.predict_proba(padded)
    assert np.array_equal(by_nan, model.predict_proba(x, lengths=lengths))
    assert np.array_equal(by_nan, model.predict_proba(x, mask=mask))
    with pytest.raises(bptt.Error, match=r"NaN at element \(0, 1, 0\) of the inputs"):
        bad = x.copy()
        bad[0, 1, 0] = np.nan
        model.predict(bad)


def test_regression_and_forecast():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(300, 6, 1)).astype(np.float32)
    y = x.sum(axis=(1, 2)) * 3 + 100
    model = bptt.fit(x, y, head="regress", loss="huber", max_steps=200, verbose=False, **SMALL)
    assert model.predict(x).shape == (300,)
    assert model.score(x, y) > 0.8  # R^2, in the targets' own units (standardised in training)
    t = np.arange(200)
    series = (np.sin(2 * np.pi * t / 10) * 4 + 50).astype(np.float32)
    f = bptt.fit(series, head="forecast", seq_len=20, season=10, max_steps=200, verbose=False, **SMALL)
    ahead = f.forecast(series, 10)
    assert ahead.shape == (10,)
    assert np.abs(ahead - series[-10:]).mean() < 1.0  # the next period repeats the last
    scores = f.evaluate_forecast(series, 20)
    assert set(scores) >= {"mse", "mae", "mase", "naive_mse", "naive_mae", "naive_mase"}


def test_arrays_come_in_without_copies_and_the_gil_is_released():
    x, y = classes_data(2000, 7, length=50)
    # NumPy reports its buffers to tracemalloc: fit reads a float32 C-contiguous X where it is, and
    # converts (copies) any other array once.
    for array, copied in ((x, False), (x.astype(np.float64), True)):
        tracemalloc.start()
        bptt.fit(array, y, max_steps=1, val_frac=0.0, verbose=False, **SMALL)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert (peak >= x.nbytes) == copied, (array.dtype, peak, x.nbytes)
    # Other Python threads run while fit trains.
    ticks = []
    done = threading.Event()

    def count():
        while not done.is_set():
            ticks.append(1)
            time.sleep(0.001)

    thread = threading.Thread(target=count)
    thread.start()
    try:
        bptt.fit(x[:320, :8], y[:320], max_steps=150, verbose=False, **SMALL)
    finally:
        done.set()
        thread.join()
    assert len(ticks) > 10
    # Outputs are the library's buffers, held by the arrays: no copy on the way out.
    model = bptt.fit(x[:320, :8], y[:320], max_steps=5, verbose=False, **SMALL)
    p = model.predict_proba(x[:320, :8])
    assert p.flags["OWNDATA"] is False and p.base is not None
    p[:] = 0
    assert model.predict_proba(x[:320, :8]).sum() == pytest.approx(320, rel=1e-5)


def test_bad_options_and_arrays_are_one_line_errors():
    x, y = classes_data(64, 8)
    with pytest.raises(bptt.Error, match="unrecognised option 'hiden' of bptt.fit"):
        bptt.fit(x, y, hiden=3)
    with pytest.raises(bptt.Error, match="--unit applies to a text corpus"):
        bptt.fit(x, y, unit="word")
    with pytest.raises(bptt.Error, match="--seq-len applies to --head forecast"):
        bptt.fit(x, y, seq_len=5)
    with pytest.raises(bptt.Error, match="bptt.fit takes arrays, not val_data="):
        bptt.fit(x, y, val_data="v.npz")
    with pytest.raises(bptt.Error, match="--horizon applies to --head forecast, not classify"):
        bptt.fit(x, y, horizon=3)
    with pytest.raises(bptt.Error, match="--huber-delta applies to --loss huber"):
        bptt.SequenceRegressor(huber_delta=2.0).fit(x, y.astype(np.float32))
    with pytest.raises(bptt.Error, match="--hidden must be an integer"):
        bptt.fit(x, y, hidden="lots")
    with pytest.raises(bptt.Error, match=r"y\[3\] = -1.000000 is not a class id"):
        bad = y.copy()
        bad[3] = -1
        bptt.fit(x, bad)
    with pytest.raises(bptt.Error, match="y must be an array \\(N\\) of class labels"):
        bptt.fit(x, y[:10])
    with pytest.raises(bptt.Error, match="X must be sequences"):
        bptt.fit(x[:, 0, 0], y)


def test_estimators_in_a_pipeline_and_cross_validation():
    x, y = classes_data(240, 9)
    labels = np.where(y == 1, "up", "down")  # any labels
    estimator = bptt.SequenceClassifier(hidden=16, layers=1, batch=16, lr=1e-2, max_steps=80, threads=1,
                                        val_frac=0.0)
    params = estimator.get_params()
    assert params["hidden"] == 16 and params["cell"] == "lstm" and params["verbose"] is False
    assert sklearn.base.clone(estimator).get_params()["max_steps"] == 80
    estimator.set_params(max_steps=100)
    assert estimator.get_params()["max_steps"] == 100
    with pytest.raises(ValueError, match="invalid parameter 'hiden'"):
        estimator.set_params(hiden=3)
    pipe = Pipeline([("centre", FunctionTransformer(lambda a: a - 20)), ("rnn", estimator)])
    scores = cross_val_score(pipe, x, labels, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.7, scores
    pipe.fit(x, labels)
    assert set(pipe.predict(x[:10])) <= {"up", "down"}
    assert list(pipe.named_steps["rnn"].classes_) == ["down", "up"]
    regressor = bptt.SequenceRegressor(hidden=16, layers=1, batch=16, lr=1e-2, max_steps=120, threads=1, loss="mae")
    target = x[:, :, 0].sum(axis=1)
    assert cross_val_score(regressor, x, target, cv=2).min() > 0.5
    with pytest.raises(AttributeError, match="not fitted"):
        bptt.SequenceRegressor().predict(x)
