"""The bptt Python module (python/module.cc) against the bptt program and the checkpoint file.

Run by ctest (python_test) with PYTHONPATH at the built module and BPTT_PROGRAM the built bptt;
the torch round trip is skipped where python3-torch is not installed.
"""
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest

import bptt

PROGRAM = os.environ.get("BPTT_PROGRAM", "bptt")

TEXT = (
    "the quick brown fox jumps over the lazy dog.\n"
    "a stitch in time saves nine.\n"
    "all that glitters is not gold.\n"
) * 40


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny LSTM language model trained from Python, and the metrics lines it reported."""
    root = tmp_path_factory.mktemp("run")
    corpus = root / "corpus.txt"
    corpus.write_text(TEXT)
    seen = []
    result = bptt.train(corpus=corpus, out=root / "lm", hidden=24, layers=1, seq_len=16, batch=4,
                        max_steps=60, eval_every=30, log_every=10, threads=1, lr=0.01, verbose=False,
                        progress=seen.append)
    return {"root": root, "corpus": corpus, "dir": root / "lm", "result": result, "seen": seen}


@pytest.fixture(scope="module")
def model(run):
    return bptt.load(run["dir"] / "latest.safetensors")


def cli(*args):
    return subprocess.run([PROGRAM, *map(str, args)], capture_output=True, text=True)


def read_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    tensors = {k: np.frombuffer(data[v["data_offsets"][0]:v["data_offsets"][1]], "<f4").reshape(v["shape"])
               for k, v in header.items() if k != "__metadata__"}
    return header["__metadata__"], tensors


def test_train_reports_progress_and_ends(run):
    result = run["result"]
    assert result["end"] == "finished"
    assert result["steps"] == 60
    assert result["dir"] == str(run["dir"])
    steps = [m["step"] for m in run["seen"]]
    assert steps[:6] == [10, 20, 30, 40, 50, 60]
    lines = [json.loads(line) for line in open(run["dir"] / "metrics.jsonl")]
    assert [m["step"] for m in lines] == steps[:len(lines)]
    assert run["seen"][2]["val_loss"] == pytest.approx(lines[2]["val_loss"])
    assert result["best_val_loss"] == pytest.approx(min(m["val_loss"] for m in lines if m["val_loss"]))


def test_model_config_vocab_and_tensors(model):
    c = model.config
    assert (c["cell"], c["layers"], c["hidden_size"]) == ("lstm", 1, 24)
    assert len(model.vocab) == c["vocab_size"] and "\n" in model.vocab and "q" in model.vocab
    assert model.step == 60 and model.checksum_verified
    assert model.training_options["model"]["hidden_size"] == 24
    t = model.tensors()
    V, H = c["vocab_size"], 24
    assert t["rnn.weight_ih_l0"].shape == (4 * H, V)
    assert t["rnn.weight_hh_l0"].shape == (4 * H, H)
    assert t["rnn.bias_ih_l0"].shape == (4 * H,)
    assert t["decoder.weight"].shape == (V, H) and t["decoder.bias"].shape == (V,)
    assert all(a.dtype == np.float32 for a in t.values())


def test_tensors_are_the_checkpoint_s_values_without_copies(run, model):
    _, stored = read_safetensors(run["dir"] / "latest.safetensors")
    t = model.tensors()
    assert set(k for k in stored if not k.startswith(("optimizer.", "state."))) == set(t)
    for name, array in t.items():
        np.testing.assert_array_equal(array, stored[name])
    again = model.tensors()
    assert np.shares_memory(t["decoder.weight"], again["decoder.weight"])
    assert not t["decoder.weight"].flags["OWNDATA"]


def test_writing_a_tensor_changes_what_the_model_computes(run):
    m = bptt.load(run["dir"] / "latest.safetensors")
    before = m.eval(TEXT[:300])["nats_per_symbol"]
    m.tensors()["decoder.bias"][:] += 5 * np.arange(len(m.vocab), dtype=np.float32)
    assert m.eval(TEXT[:300])["nats_per_symbol"] > before + 1


def test_sample_is_the_cli_s_text(run, model):
    ck = run["dir"] / "latest.safetensors"
    text = model.sample(length=80, temperature=0.7, top_k=5, top_p=0.9, prime="the ", seed=3)
    out = cli("sample", ck, "--length", 80, "--temperature", 0.7, "--top-k", 5, "--top-p", 0.9,
              "--prime", "the ", "--seed", 3)
    assert out.returncode == 0, out.stderr
    assert out.stdout == text + "\n"
    assert text.startswith("the ")
    many = model.sample(length=10, num=3, seed=1, stop="o", argmax=True)
    assert many == cli("sample", ck, "--length", 10, "--num", 3, "--seed", 1, "--stop", "o",
                       "--argmax").stdout.rstrip("\n")


def test_stream_yields_the_sample_piece_by_piece(model):
    options = dict(length=40, prime="a st", seed=5, num=2)
    pieces = list(model.stream(**options))
    assert pieces[0] == "a st"
    assert len(pieces) > 40
    assert "".join(pieces) == model.sample(**options)
    stream = model.stream(length=3)
    assert iter(stream) is stream
    assert len([next(stream) for _ in range(3)]) == 3
    with pytest.raises(StopIteration):
        next(stream)


def test_eval_has_the_keys_and_values_of_the_cli(run, model):
    held = run["root"] / "held.txt"
    held.write_text(TEXT[:500])
    out = cli("eval", run["dir"] / "latest.safetensors", held, "--json")
    assert out.returncode == 0, out.stderr
    expected = json.loads(out.stdout)
    for got in (model.eval(TEXT[:500]), model.eval(file=held)):
        assert set(got) == set(expected)
        assert got["method"] == expected["method"] == "one stream"
        assert got["symbols"] == expected["symbols"]
        assert got["nats_per_symbol"] == pytest.approx(expected["nats_per_symbol"], rel=1e-12)
    stepwise = model.eval(TEXT[:500], precision="bf16")
    assert stepwise["method"] == "stepwise, bf16"
    assert stepwise["nats_per_symbol"] == pytest.approx(expected["nats_per_symbol"], abs=0.01)
    assert model.eval(TEXT[:500], batch=4, seq_len=16)["streams"] == 4


def test_eval_dynamic_has_the_cli_s_numbers_and_leaves_the_model_alone(run, model):
    held = run["root"] / "held_dynamic.txt"
    held.write_text(TEXT[:600])
    options = ["--dynamic", "--dynamic-rule", "sgd", "--dynamic-lr", "0.3", "--dynamic-segment", "25", "--threads", "1"]
    out = cli("eval", run["dir"] / "latest.safetensors", held, "--json", *options)
    assert out.returncode == 0, out.stderr
    expected = json.loads(out.stdout)
    weights = {name: np.array(t) for name, t in model.tensors().items()}
    got = model.eval(TEXT[:600], dynamic=True, dynamic_rule="sgd", dynamic_lr=0.3, dynamic_segment=25, threads=1)
    assert got == expected
    assert got["nats_per_symbol"] != got["static_nats_per_symbol"]
    assert got["static_nats_per_symbol"] == model.eval(TEXT[:600], seq_len=25, threads=1)["nats_per_symbol"]
    for name, t in model.tensors().items():
        assert np.array_equal(np.array(t), weights[name]), name
    with pytest.raises(bptt.Error, match="--dynamic-lr applies only with --dynamic"):
        model.eval(TEXT[:100], dynamic_lr=0.1)


def test_sample_dynamic_adapts_to_the_prime_file_as_the_cli_does(run, model):
    ck = run["dir"] / "latest.safetensors"
    prime = run["root"] / "prime_dynamic.txt"
    prime.write_text(TEXT[:300])
    plain = model.sample(length=60, prime=TEXT[:300], seed=4, threads=1)
    adapted = model.sample(length=60, prime_file=str(prime), dynamic=True, dynamic_rule="sgd", dynamic_lr=0.5,
                           seed=4, threads=1)
    out = cli("sample", ck, "--length", 60, "--prime-file", prime, "--dynamic", "--dynamic-rule", "sgd",
              "--dynamic-lr", 0.5, "--seed", 4, "--threads", 1)
    assert out.returncode == 0, out.stderr
    assert out.stdout == adapted + "\n"
    assert adapted.startswith(TEXT[:300]) and adapted != plain
    assert model.sample(length=60, prime=TEXT[:300], seed=4, threads=1) == plain


def test_encode_and_decode(model):
    ids = model.encode("the lazy dog")
    assert ids.dtype == np.int32 and len(ids) == 12
    assert model.decode(ids) == "the lazy dog"
    assert model.decode(list(ids)) == "the lazy dog"
    with pytest.raises(bptt.Error, match="not in the vocabulary"):
        model.encode("the lazy Zebra")


def test_errors_carry_the_cli_s_messages(run, model):
    ck = run["dir"] / "latest.safetensors"
    cases = [
        (lambda: model.sample(temperature=0), ["sample", ck, "--temperature", 0]),
        (lambda: model.sample(top_p=1.5), ["sample", ck, "--top-p", 1.5]),
        (lambda: model.sample(prime="Zebra"), ["sample", ck, "--prime", "Zebra"]),
        (lambda: model.eval(file=run["root"] / "missing.txt"), ["eval", ck, run["root"] / "missing.txt"]),
        (lambda: model.eval("abc", batch=4, precision="int8"), ["eval", ck, run["corpus"], "--batch", 4,
                                                               "--precision", "int8"]),
        (lambda: bptt.load(run["root"] / "missing.safetensors"), ["inspect", run["root"] / "missing.safetensors"]),
        (lambda: bptt.train(corpus=run["corpus"], out=run["root"] / "x", lr=-1),
         ["train", "--corpus", run["corpus"], "--out", run["root"] / "x", "--lr", -1]),
        (lambda: bptt.train(corpus=run["corpus"], out=run["root"] / "x", cell="lstn"),
         ["train", "--corpus", run["corpus"], "--out", run["root"] / "x", "--cell", "lstn"]),
        (lambda: bptt.train(resume=run["dir"], hidden=32), ["train", "--resume", run["dir"], "--hidden", 32]),
        (lambda: model.sample(argmax=True, top_k=3), ["sample", ck, "--argmax", "--top-k", 3]),
        (lambda: model.sample(threads=5000), ["sample", ck, "--threads", 5000]),
        (lambda: model.eval("abc", precision="fp32", seq_len=8), ["eval", ck, run["corpus"], "--precision", "fp32",
                                                                 "--seq-len", 8]),
        (lambda: model.eval(file=run["root"]), ["eval", ck, run["root"]]),
        (lambda: bptt.decay(checkpoint=ck, hidden=8), ["decay", "--checkpoint", ck, "--hidden", 8, "--out",
                                                       run["root"] / "d"]),
        (lambda: bptt.decay(cell="lstm", threads=0), ["decay", "--cell", "lstm", "--threads", 0, "--out",
                                                      run["root"] / "d"]),
    ]
    for call, args in cases:
        with pytest.raises(bptt.Error) as raised:
            call()
        out = cli(*args)
        assert out.returncode == 1
        command = args[0]
        assert out.stderr.strip() == f"bptt {command}: {raised.value}", args


def test_training_options_come_from_the_option_table(run):
    flags = set()
    for command in ("train", "task"):
        for line in cli(command, "--help").stdout.splitlines():
            if line.startswith("  --"):
                flags.add(line.split()[0][2:])
    flags -= {"help", "resume", "trials", "list"}
    doc = bptt.train.__doc__
    for flag in flags:
        assert "  " + flag.replace("-", "_") in doc, flag
    with pytest.raises(bptt.Error, match="unrecognised option 'hiden'"):
        bptt.train(corpus=run["corpus"], out=run["root"] / "x", hiden=3)
    with pytest.raises(bptt.Error, match="unrecognised option 'T' of bptt train"):
        bptt.train(corpus=run["corpus"], out=run["root"] / "x", T=3)
    with pytest.raises(bptt.Error, match="--hidden"):
        bptt.train(corpus=run["corpus"], out=run["root"] / "x", hidden="lots")


def test_a_progress_callback_stops_and_resume_continues(run):
    out = run["root"] / "stopped"
    common = dict(hidden=16, layers=1, seq_len=16, batch=4, log_every=5, eval_every=50, threads=1,
                  verbose=False)
    result = bptt.train(corpus=run["corpus"], out=out, max_steps=40, progress=lambda m: m["step"] < 10, **common)
    assert result["end"] == "interrupted" and result["steps"] == 10
    assert bptt.load(out / "latest.safetensors").step == 10
    resumed = bptt.train(resume=out, max_steps=40, verbose=False)
    assert resumed["end"] == "finished" and resumed["steps"] == 40
    straight = bptt.train(corpus=run["corpus"], out=run["root"] / "straight", max_steps=40, **common)
    assert straight["steps"] == 40
    a = bptt.load(out / "latest.safetensors").tensors()
    b = bptt.load(run["root"] / "straight" / "latest.safetensors").tensors()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_a_memory_budget_in_bytes_trains_the_weights_of_plain_bptt(run):
    common = dict(hidden=32, layers=1, seq_len=256, batch=2, eval_every=50, threads=1, max_steps=3,
                  verbose=False)
    with pytest.raises(bptt.Error, match=r"at least (\d+) bytes") as refused:
        bptt.train(corpus=run["corpus"], out=run["root"] / "x", memory_budget=1000, **common)
    least = int(re.search(r"at least (\d+) bytes", str(refused.value)).group(1))
    bptt.train(corpus=run["corpus"], out=run["root"] / "budget", memory_budget=least + 40000, **common)
    bptt.train(corpus=run["corpus"], out=run["root"] / "unbudgeted", **common)
    a = bptt.load(run["root"] / "budget" / "latest.safetensors").tensors()
    b = bptt.load(run["root"] / "unbudgeted" / "latest.safetensors").tensors()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_an_exception_in_progress_stops_the_run_saves_and_is_raised(run):
    out = run["root"] / "raised"

    def progress(metrics):
        if metrics["step"] >= 10:
            raise ValueError("enough")

    with pytest.raises(ValueError, match="enough"):
        bptt.train(corpus=run["corpus"], out=out, hidden=16, layers=1, seq_len=16, batch=4, log_every=5,
                   max_steps=1000, threads=1, verbose=False, progress=progress)
    assert bptt.load(out / "latest.safetensors").step == 10


def test_ctrl_c_saves_and_raises_keyboard_interrupt(run):
    out = run["root"] / "interrupted"
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            bptt.train(corpus=run["corpus"], out=out, hidden=16, layers=1, seq_len=16, batch=4,
                       time_budget=60, threads=1, verbose=False)
    finally:
        timer.cancel()
    saved = bptt.load(out / "latest.safetensors")
    assert saved.step > 0


def test_a_task_trains_with_the_task_s_defaults(run):
    result = bptt.train(task="adding", T=20, out=run["root"] / "adding", max_steps=20, eval_every=10,
                        test_size=64, threads=1, verbose=False)
    assert result["end"] == "finished"
    assert result["summary"]["task"] == "adding"
    m = bptt.load(run["root"] / "adding" / "latest.safetensors")
    assert m.config["hidden_size"] == 64 and m.config["head"] == "regression"
    assert m.training_options["init"]["forget_bias"] == 5


@pytest.mark.parametrize("cell,gates", [("mingru", 2), ("minlstm", 3)])
def test_a_minimal_cell_trains_and_its_tensors_compute_what_bptt_does(run, cell, gates):
    """minGRU and minLSTM from Python like every cell: weight_ih and bias_ih alone, and the
    recurrence of docs/cells.md in NumPy over those tensors scores text as bptt's eval does."""
    out = run["root"] / cell
    result = bptt.train(corpus=run["corpus"], out=out, cell=cell, hidden=16, layers=1, seq_len=16, batch=4,
                        max_steps=30, eval_every=30, threads=1, lr=0.01, verbose=False)
    assert result["end"] == "finished"
    m = bptt.load(out / "latest.safetensors")
    t = {k: v.astype(np.float64) for k, v in m.tensors().items()}
    V, H = m.config["vocab_size"], 16
    assert sorted(t) == ["decoder.bias", "decoder.weight", "rnn.bias_ih_l0", "rnn.weight_ih_l0"]
    assert t["rnn.weight_ih_l0"].shape == (gates * H, V) and t["rnn.bias_ih_l0"].shape == (gates * H,)
    sigmoid = lambda x: 1 / (1 + np.exp(-x))
    text = TEXT[5:405]
    ids = m.encode(text)
    h, nats = np.zeros(H), 0.0
    for k in range(len(ids) - 1):
        pre = t["rnn.weight_ih_l0"][:, ids[k]] + t["rnn.bias_ih_l0"]
        if cell == "mingru":
            z, candidate = sigmoid(pre[:H]), pre[H:]
            h = (1 - z) * h + z * candidate
        else:
            f, i, candidate = sigmoid(pre[:H]), sigmoid(pre[H:2 * H]), pre[2 * H:]
            h = f / (f + i) * h + i / (f + i) * candidate
        logits = t["decoder.weight"] @ h + t["decoder.bias"]
        top = logits.max()
        nats += top + np.log(np.exp(logits - top).sum()) - logits[ids[k + 1]]
    assert m.eval(text)["nats_per_symbol"] == pytest.approx(nats / (len(ids) - 1), rel=1e-5)


def test_decay_curves_as_arrays(run, tmp_path):
    r = bptt.decay(cell="rnn-tanh,lstm", hidden=8, layers=1, symbols=10, steps=30, batch=4, jacobian_lags=3,
                   out=tmp_path)
    assert [m["model"] for m in r["models"]] == ["rnn-tanh", "lstm"]
    lstm = r["models"][1]
    quantities = [c["quantity"] for c in lstm["curves"]]
    assert quantities == ["h", "c", "jacobian"]
    h = lstm["curves"][0]
    assert isinstance(h["lags"], np.ndarray) and h["lags"][0] == 0 and len(h["lags"]) == 30
    assert h["relative"][0] == pytest.approx(1.0)
    assert np.all(h["q1"] <= h["median"]) and np.all(h["median"] <= h["q3"])
    summary = json.load(open(tmp_path / "summary.json"))
    assert summary == json.loads(json.dumps(r["summary"]))
    assert (tmp_path / "decay.svg").exists()
    trained = bptt.decay(checkpoint=[run["dir"] / "latest.safetensors"], steps=20, batch=4)
    assert trained["models"][0]["model"] == "lm/latest"
    with pytest.raises(bptt.Error, match="give --cell or --checkpoint"):
        bptt.decay()


def help_flags(command):
    """The flags `bptt COMMAND --help` lists, as Python keywords."""
    out = cli(command, "--help")
    assert out.returncode == 0, out.stderr
    return {line.split()[0][2:].replace("-", "_") for line in out.stdout.splitlines()
            if line.startswith("  --")} - {"help"}


def test_keywords_and_their_help_come_from_the_option_tables(model):
    for function, command in ((bptt.Model.sample, "sample"), (bptt.Model.stream, "sample"),
                              (bptt.Model.eval, "eval"), (bptt.decay, "decay")):
        flags = help_flags(command) - {"json"}  # eval --json: the CLI's way of printing
        if command == "eval":  # a sequence model's, whose scores SequenceModel.evaluate gives
            flags -= {"labels", "held_out"}
        for flag in flags:
            assert "  " + flag + " = " in function.__doc__, (command, flag)
            assert flag + "=" in function.__doc__.splitlines()[0], (command, flag)
    with pytest.raises(bptt.Error, match="unrecognised option 'topk' of Model.sample"):
        model.sample(topk=3)
    with pytest.raises(bptt.Error, match="unrecognised option 'cells' of bptt.decay"):
        bptt.decay(cells="lstm")


def test_none_means_not_given(run, model):
    assert model.sample(length=30, seed=None, top_k=None) == model.sample(length=30)
    assert model.eval(TEXT[:200], batch=None, precision=None) == model.eval(TEXT[:200])
    result = bptt.train(corpus=run["corpus"], out=run["root"] / "none", task=None, resume=None, trials=None,
                        progress=None, hidden=8, layers=1, seq_len=8, batch=2, max_steps=2, threads=1,
                        lr=None, verbose=False)
    assert result["end"] == "finished" and result["steps"] == 2


def test_non_finite_option_values_are_refused_as_the_cli_refuses_them(run, model):
    for keyword in ("time_budget", "clip_norm", "lr"):
        for value in (float("nan"), float("inf")):
            with pytest.raises(bptt.Error, match=f"--{keyword.replace('_', '-')} must be a finite number"):
                bptt.train(corpus=run["corpus"], out=run["root"] / "nan", hidden=8, layers=1, max_steps=1,
                           threads=1, verbose=False, **{keyword: value})
    assert not (run["root"] / "nan").exists()
    with pytest.raises(bptt.Error, match="--temperature must be a finite number"):
        model.sample(temperature=float("nan"))
    with pytest.raises(bptt.Error, match="--clip-norm must be a finite number"):
        bptt.decay(cell="lstm", clip_norm=float("nan"))
    with pytest.raises(bptt.Error, match="--threads must be in"):
        model.eval(TEXT[:100], threads=2000)


def test_a_stream_is_stepped_by_one_thread_at_a_time(model):
    stream = model.stream(length=300000, precision="fp32")
    errors = []
    stop = threading.Event()

    def drain():
        try:
            for _ in stream:
                if stop.is_set():
                    return
        except bptt.Error as e:
            errors.append(str(e))

    other = threading.Thread(target=drain)
    other.start()
    try:
        for _ in range(300000):
            try:
                next(stream)
            except bptt.Error as e:
                errors.append(str(e))
                break
            except StopIteration:
                break
    finally:
        stop.set()
        other.join()
    assert errors and all(e.startswith("stream in use") for e in errors), errors


def interrupt_after(seconds, call):
    """Sends this process SIGINT after `seconds`; the seconds `call` took to raise KeyboardInterrupt."""
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
    start = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            call()
    finally:
        timer.cancel()
    return time.monotonic() - start


def test_ctrl_c_interrupts_a_long_sample_eval_or_decay(model):
    # Each call takes several seconds or more to the end (10^7 symbols; 20 MB of text; 2000 steps
    # with the Jacobian norms at 200 lags); Ctrl-C at 0.3 s must end it with KeyboardInterrupt
    # (interrupt_after), and soon: within 4 s, a bound loose enough for a loaded machine or a
    # sanitizer build. (decay checks between its stages: after the one forward and backward pass
    # over the steps, then between lags, so its steps bound how soon it can stop: 2000 steps take
    # about 0.6 s on a 2-core Zen 4 running two other jobs, 8000 took 4 s there and 18 s under
    # heavier load.)
    assert interrupt_after(0.3, lambda: model.sample(length=10**7, precision="fp32")) < 4
    assert interrupt_after(0.3, lambda: model.eval(TEXT * 8000, threads=1)) < 4
    assert interrupt_after(0.3, lambda: model.eval(TEXT * 8000, precision="fp32")) < 4
    assert interrupt_after(0.3, lambda: bptt.decay(cell="lstm", hidden=64, layers=1, steps=2000, batch=8,
                                                   jacobian_lags=200)) < 4


def without_checksum(source, target):
    """The checkpoint with the "checksum" entry taken out of its header, as another tool writes it."""
    raw = open(source, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    del header["__metadata__"]["checksum"]
    text = json.dumps(header).encode()
    open(target, "wb").write(struct.pack("<Q", len(text)) + text + raw[8 + n:])


def test_a_file_without_checksum_warns_and_warnings_as_errors_raise_the_warning(run, tmp_path):
    bare = tmp_path / "bare.safetensors"
    without_checksum(run["dir"] / "latest.safetensors", bare)
    with pytest.warns(UserWarning, match="has no checksum; loaded unverified"):
        m = bptt.load(bare)
    assert not m.checksum_verified
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="has no checksum"):
            bptt.load(bare)


def test_layer_norm_tensors_are_1_d_as_the_checkpoint_stores_them(run, tmp_path):
    bptt.train(corpus=run["corpus"], out=tmp_path / "ln", cell="gru", layer_norm=True, hidden=6, layers=1,
               seq_len=8, batch=2, max_steps=1, threads=1, verbose=False)
    _, stored = read_safetensors(tmp_path / "ln" / "latest.safetensors")
    t = bptt.load(tmp_path / "ln" / "latest.safetensors").tensors()
    assert t["rnn.ln_ih_weight_l0"].shape == (3 * 6,) and t["rnn.ln_hh_bias_l0"].shape == (3 * 6,)
    for name, array in t.items():
        assert array.shape == stored[name].shape, name
        np.testing.assert_array_equal(array, stored[name])


def test_training_regularisers_are_keywords_stored_in_the_config(run, tmp_path):
    bptt.train(corpus=run["corpus"], out=tmp_path / "reg", cell="gru", hidden=6, layers=2, seq_len=8, batch=2,
               max_steps=2, threads=1, verbose=False, dropout=0.2, input_dropout=0.1, output_dropout=0.3,
               variational=True, weight_drop=0.4, ar=2.0, tar=1.0)
    m = bptt.load(tmp_path / "reg" / "latest.safetensors")
    for key, value in {"dropout": 0.2, "input_dropout": 0.1, "output_dropout": 0.3, "variational": True,
                       "weight_drop": 0.4, "ar": 2.0, "tar": 1.0}.items():
        assert m.config[key] == value, key
    with pytest.raises(bptt.Error, match="--weight-drop drops weights of the recurrent matrix W_hh, which mingru"):
        bptt.train(corpus=run["corpus"], out=tmp_path / "x", cell="mingru", hidden=6, layers=1, seq_len=8, batch=2,
                   max_steps=1, threads=1, verbose=False, weight_drop=0.4)


def test_recurrent_dropout_and_zoneout_are_keywords_stored_in_the_checkpoint(run, tmp_path):
    bptt.train(corpus=run["corpus"], out=tmp_path / "zone", cell="lstm", hidden=6, layers=1, recurrent_dropout=0.25,
               zoneout=0.125, zoneout_cell=0.0625, seq_len=8, batch=2, max_steps=2, threads=1, verbose=False)
    m = bptt.load(tmp_path / "zone" / "latest.safetensors")
    assert m.config["recurrent_dropout"] == 0.25
    assert m.config["zoneout"] == 0.125 and m.config["zoneout_cell"] == 0.0625
    with pytest.raises(bptt.Error, match="--zoneout-cell applies to cells with a cell state"):
        bptt.train(corpus=run["corpus"], out=tmp_path / "gru", cell="gru", hidden=6, layers=1, zoneout_cell=0.1,
                   seq_len=8, batch=2, max_steps=1, threads=1, verbose=False)


@pytest.mark.skipif(shutil.which("mpiexec") is None or "distributed: MPI" not in bptt.version_text(),
                    reason="no MPI: bptt.train under mpiexec is not tried")
def test_train_under_mpiexec_trains_distributed(run, tmp_path):
    out = tmp_path / "mpi"
    script = (f"import bptt; bptt.train(corpus={str(run['corpus'])!r}, out={str(out)!r}, hidden=8, layers=1, "
              "seq_len=8, batch=4, max_steps=3, threads=1)")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    done = subprocess.run(["mpiexec", "-n", "2", "--oversubscribe", "--bind-to", "none", sys.executable, "-c",
                           script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "distributed over 2 ranks" in done.stderr
    summary = json.load(open(out / "summary.json"))
    assert len(summary["weights_fnv1a_by_rank"]) == 2


def test_torch_round_trip(run, model):
    """The checkpoint in torch.nn.LSTM + torch.nn.Linear scores text as the module's eval does."""
    try:  # a torch that is not installed, or does not import (a broken install), skips the round trip
        import torch
    except Exception as e:
        pytest.skip(f"python3-torch does not import ({type(e).__name__}: {e}): no round trip through PyTorch")
    c = model.config
    V, H = c["vocab_size"], c["hidden_size"]
    t = {k: torch.from_numpy(np.array(v)) for k, v in model.tensors().items()}
    lstm = torch.nn.LSTM(V, H, c["layers"]).double()
    lstm.load_state_dict({k[4:]: v.double() for k, v in t.items() if k.startswith("rnn.")})
    decoder = torch.nn.Linear(H, V).double()
    decoder.load_state_dict({"weight": t["decoder.weight"].double(), "bias": t["decoder.bias"].double()})
    text = TEXT[7:707]
    ids = torch.from_numpy(model.encode(text).astype(np.int64))
    with torch.no_grad():
        x = torch.nn.functional.one_hot(ids[:-1], V).double().unsqueeze(1)  # (T, 1, V)
        out, _ = lstm(x)
        loss = torch.nn.functional.cross_entropy(decoder(out[:, 0]), ids[1:]).item()
    ours = model.eval(text)["nats_per_symbol"]
    print(f"torch round trip: {len(text) - 1} symbols, torch {loss:.6f} nats, bptt {ours:.6f} nats")
    assert ours == pytest.approx(loss, rel=1e-5)
