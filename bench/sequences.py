#!/usr/bin/python3
"""Sequences of your own on real data (docs/sequences.md), side by side with the anchors in one run.

  sequences.py fashion-mnist [--budget-s 300] [--seeds 1,2,3] [bptt train flags ...]
      Fashion-MNIST row by row (28 steps of 28 pixels): bptt train --data on Debian's IDX files
      (dataset-fashion-mnist), scored on the 10,000 test images, against bench/torch_fashion_mnist.py
      (nn.LSTM(28, 128) + linear, Adam 2e-3, batch 128) with the same budget and threads. One row per
      seed and system: test accuracy, epochs, epochs/s; then the mean and spread over the seeds and
      the ratio of epochs/s. --max-steps N stops both systems after N batches (equal compute, a
      comparison that does not depend on the machine's load; the budget then only bounds it).
  sequences.py pixels [--budget-s 600] [--cells rnn-tanh,lstm,gru] [--seeds 1]
      Pixel by pixel (784 steps of 1): what each cell reaches in the budget, with the steps and
      epochs it took (the compute), bptt only (--torch adds the LSTM anchor).
  sequences.py forecast [--budget-s 120] [--seeds 1,2,3]
      The co2 (monthly means of the weekly Mauna Loa series, gaps filled forward; season 12) and
      yearly sunspots (season 1) series of statsmodels.datasets: the first 80% to fit on (bptt
      selects its checkpoint on the last fifth of that part), the last 20% forecast from them in one
      go and scored by MASE, beside the seasonal-naive forecast and statsmodels' SARIMAX and ETS
      fitted on the same 80%.

Every run writes its run directory under --out (default bench/sequences-runs) and prints one JSON
line per measurement before the table. Flags after the subcommand's own are passed to bptt train.
The machine is named from lscpu. Tiny budgets (--budget-s 10) are a smoke test, not a measurement.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FASHION = "/usr/share/datasets/fashion-mnist"
TORCH_PYTHON = "/usr/bin/python3"  # Debian's, beside python3-torch, whichever python3 runs this script


def machine():
    info = {}
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            key, _, value = line.partition(":")
            info[key.strip()] = value.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown machine"
    return f"{info.get('Model name', '?')} (family {info.get('CPU family', '?')} model {info.get('Model', '?')}), " \
           f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start"


def run(command, log):
    print("+", " ".join(map(str, command)), file=sys.stderr, flush=True)
    with open(log, "w") as out:
        subprocess.run(list(map(str, command)), check=True, stdout=out, stderr=subprocess.STDOUT)


def last_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    return lines[-1]


def bptt_run(a, name, data, extra):
    """The run's summary, last metrics, wall time and directory; the summary is None when training
    diverged (bptt train's exit status 3), and the metrics then say its last logged step."""
    out = os.path.join(a.out, name)
    command = [a.bptt, "train", *data, "--time-budget", a.budget_s, "--threads", a.threads, "--out", out, "--force",
               *extra]
    start = time.perf_counter()
    try:
        run(command, out + ".log")
    except subprocess.CalledProcessError as e:
        if e.returncode != 3:
            raise
        with open(out + ".log") as f:
            said = [line.strip() for line in f if "diverged" in line]
        print(f"sequences.py: {name}: {said[-1] if said else 'diverged'}", file=sys.stderr, flush=True)
        wall = time.perf_counter() - start
        try:
            m = last_metrics(out)
        except (OSError, IndexError):  # diverged before its first metrics line
            m = {"epoch": 0.0, "step": 0, "wall_s": wall}
        step = re.search(r"diverged at step (\d+)", said[-1] if said else "")
        m["diverged_at"] = int(step.group(1)) if step else None
        return None, m, wall, out
    wall = time.perf_counter() - start
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    m = last_metrics(out)
    return summary, m, wall, out


def spread(values):
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} (min {min(values):.4f}, max {max(values):.4f})"


def fashion(a, extra, pixels=False):
    idx = lambda split, kind: os.path.join(a.dir, f"{split}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz")
    if not os.path.exists(idx("train", "images")):
        sys.exit(f"{idx('train', 'images')}: not there (apt-get install dataset-fashion-mnist, or --dir)")
    data = ["--data", idx("train", "images"), "--labels", idx("train", "labels"), "--test-data", idx("t10k", "images"),
            "--test-labels", idx("t10k", "labels")]
    rows = []
    where = machine()  # the load average before the runs
    cells = a.cells.split(",") if pixels else [None]
    for seed in a.seeds.split(","):
        for cell in cells:
            recipe = ["--seed", seed] + (["--cell", cell, "--steps", "elements"] if pixels else []) + extra + \
                (["--max-steps", a.max_steps] if a.max_steps else [])
            name = f"{'pixels-' + cell if pixels else 'fashion'}-seed{seed}"
            summary, m, wall, out = bptt_run(a, name, data, recipe)
            row = {"system": f"bptt {cell}" if pixels else "bptt", "seed": int(seed),
                   "test_accuracy": summary["test"]["accuracy"] if summary else None, "epochs": m["epoch"],
                   "steps": m["step"], "train_s": m["wall_s"], "epochs_per_s": m["epoch"] / m["wall_s"], "run": out}
            if not summary:
                row["diverged_at_step"] = m["diverged_at"]
            print(json.dumps(row), flush=True)
            rows.append(row)
        if a.torch:
            log = os.path.join(a.out, f"torch-{'pixels' if pixels else 'fashion'}-seed{seed}.log")
            print("+ torch_fashion_mnist.py", file=sys.stderr, flush=True)
            result = subprocess.run([TORCH_PYTHON, os.path.join(HERE, "torch_fashion_mnist.py"), "--dir", a.dir,
                                     "--budget-s", str(a.budget_s), "--threads", str(a.threads), "--seed", seed,
                                     "--max-steps", str(a.max_steps or 0)]
                                    + (["--pixels"] if pixels else []), capture_output=True, text=True)
            open(log, "w").write(result.stderr)
            if result.returncode != 0:
                last = (result.stderr.strip().splitlines() or ["no output"])[-1]
                sys.exit(f"sequences.py: the PyTorch anchor failed ({last}); its log is {log}")
            row = json.loads(result.stdout.strip().splitlines()[-1])
            row["system"] = "pytorch lstm" if pixels else "pytorch"
            print(json.dumps(row), flush=True)
            rows.append(row)
    limit = f"{a.budget_s} s" + (f" or {a.max_steps} batches, whichever came first," if a.max_steps else "")
    print(f"\n{'Pixel by pixel' if pixels else 'Fashion-MNIST row by row'}, {limit} of training on "
          f"{a.threads} threads; {where}")
    print("| system | test accuracy | epochs | epochs/s | diverged |\n| --- | --- | --- | --- | --- |")
    rates = {}
    for system in dict.fromkeys(r["system"] for r in rows):
        mine = [r for r in rows if r["system"] == system]
        finished = [r for r in mine if r["test_accuracy"] is not None]
        rates[system] = statistics.mean(r["epochs_per_s"] for r in mine)
        diverged = [f"seed {r['seed']} at step {r['diverged_at_step']}" for r in mine if r not in finished]
        print(f"| {system} | {spread([r['test_accuracy'] for r in finished])} | "
              f"{statistics.mean(r['epochs'] for r in finished) if finished else 0:.2f} | {rates[system]:.4f} | "
              f"{len(diverged)} of {len(mine)}{': ' + ', '.join(diverged) if diverged else ''} |")
    if "bptt" in rates and "pytorch" in rates:
        print(f"\nbptt / PyTorch epochs per second: {rates['bptt'] / rates['pytorch']:.2f}")


def forecast(a, extra):
    import numpy as np
    import statsmodels.api as sm
    from statsmodels.tsa.holtwinters import ExponentialSmoothing
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    co2 = sm.datasets.co2.load_pandas().data["co2"].resample("M").mean().ffill().to_numpy()
    sunspots = sm.datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy()
    series = {
        "co2": (co2, 12, dict(order=(1, 1, 1), seasonal_order=(1, 1, 1, 12)),
                dict(trend="add", seasonal="add", seasonal_periods=12)),
        "sunspots": (sunspots, 1, dict(order=(3, 0, 0), trend="c"), dict(trend="add", damped_trend=True)),
    }
    os.makedirs(a.out, exist_ok=True)
    where = machine()  # the load average before the runs
    rows = []
    for name, (values, season, sarimax, ets) in series.items():
        n = len(values)
        test = n - int(round(0.8 * n))
        fit, held = values[:n - test], values[n - test:]
        scale = np.mean(np.abs(fit[season:] - fit[:-season]))
        mase = lambda f: float(np.mean(np.abs(np.asarray(f) - held)) / scale)
        full_csv, fit_csv = os.path.join(a.out, f"{name}.csv"), os.path.join(a.out, f"{name}-fit.csv")
        np.savetxt(full_csv, values, header="value", comments="", fmt="%.6f")
        np.savetxt(fit_csv, fit, header="value", comments="", fmt="%.6f")
        naive = np.array([fit[n - test + h - season * ((h // season) + 1)] for h in range(test)])
        rows.append({"series": name, "system": f"seasonal naive (m = {season})", "mase": mase(naive)})
        rows.append({"series": name, "system": f"SARIMAX{sarimax['order']}{sarimax.get('seasonal_order', '')}",
                     "mase": mase(SARIMAX(fit, **sarimax).fit(disp=False).forecast(test))})
        rows.append({"series": name, "system": f"ETS {ets}", "mase": mase(ExponentialSmoothing(fit, **ets).fit().forecast(test))})
        for row in rows[-3:]:
            print(json.dumps(row), flush=True)
        scores = []
        for seed in a.seeds.split(","):
            recipe = ["--head", "forecast", "--season", season, "--val-frac", 0.2, "--seed", seed,
                      "--seq-len", a.seq_len] + extra + (["--max-steps", a.max_steps] if a.max_steps else [])
            _, m, _, out = bptt_run(a, f"{name}-seed{seed}", ["--data", fit_csv], recipe)
            result = subprocess.run([a.bptt, "eval", os.path.join(out, "best.safetensors"), full_csv, "--held-out",
                                     str(test), "--json"], capture_output=True, text=True, check=True)
            r = json.loads(result.stdout)
            scores.append(r["mase"])
            row = {"series": name, "system": "bptt lstm", "seed": int(seed), "mase": r["mase"],
                   "naive_mase_check": r["naive_mase"], "steps": m["step"], "train_s": m["wall_s"]}
            print(json.dumps(row), flush=True)
        rows.append({"series": name, "system": "bptt", "mase": scores})
    print(f"\nForecasting the last 20% of each series from the first 80%, MASE (lower is better; bptt "
          f"trained {a.budget_s} s" + (f" or {a.max_steps} steps, whichever came first," if a.max_steps else "") +
          f" per seed); {where}")
    print("| series | forecast | MASE |\n| --- | --- | --- |")
    for r in rows:
        m = r["mase"]
        print(f"| {r['series']} | {r['system']} | {spread(m) if isinstance(m, list) else f'{m:.3f}'} |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bench", choices=["fashion-mnist", "pixels", "forecast"])
    p.add_argument("--bptt", default=os.path.join(ROOT, "build", "bptt"))
    p.add_argument("--dir", default=FASHION, help="the Fashion-MNIST IDX files")
    p.add_argument("--budget-s", type=float, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seeds", default="1")
    p.add_argument("--cells", default="rnn-tanh,lstm,gru")
    p.add_argument("--seq-len", type=int, default=48, help="forecast: the training windows' steps")
    p.add_argument("--max-steps", type=int, default=0, help="stop every bptt run (and the PyTorch anchor) "
                   "after this many batches: equal compute, whatever the machine's load")
    p.add_argument("--torch", action=argparse.BooleanOptionalAction, default=None,
                   help="run the PyTorch anchor (default: yes for fashion-mnist, no for pixels)")
    p.add_argument("--out", default=os.path.join(HERE, "sequences-runs"))
    a, extra = p.parse_known_args()
    os.makedirs(a.out, exist_ok=True)
    if a.bench == "fashion-mnist":
        a.budget_s = a.budget_s or 300
        a.torch = True if a.torch is None else a.torch
        fashion(a, extra)
    elif a.bench == "pixels":
        a.budget_s = a.budget_s or 600
        a.torch = bool(a.torch)
        fashion(a, extra, pixels=True)
    else:
        a.budget_s = a.budget_s or 120
        forecast(a, extra)


if __name__ == "__main__":
    main()
