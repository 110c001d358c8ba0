#!/usr/bin/env python3
"""Training throughput with each regulariser of bptt train against plain dropout, same model.

Runs `bptt_bench train` (exactly the trainer's step, bench/README.md) on tinyshakespeare for a
plain-dropout row and one row per regulariser (docs/regularisation.md), the rows interleaved
round after round so that a change in the machine's load falls on all of them alike, and prints
each row's median characters per second and its ratio to the plain-dropout row's median, with
the machine (lscpu) and its load (/proc/loadavg) before and after.

  bench/regularisers.py                                 # LSTM 2x512, B 32, T 64, 3 rounds
  bench/regularisers.py --cell gru --rounds 5 --build build-perf
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name, bptt_bench flags; the first row is the reference.
ROWS = [
    ("dropout 0.25", ["--dropout", "0.25"]),
    ("no dropout", []),
    ("dropout 0.25 --variational", ["--dropout", "0.25", "--variational"]),
    ("+ --input-dropout 0.1", ["--dropout", "0.25", "--input-dropout", "0.1"]),
    ("+ --output-dropout 0.25", ["--dropout", "0.25", "--output-dropout", "0.25"]),
    ("+ --weight-drop 0.5", ["--dropout", "0.25", "--weight-drop", "0.5"]),
    ("+ --ar 2 --tar 1", ["--dropout", "0.25", "--ar", "2", "--tar", "1"]),
    ("+ --recurrent-dropout 0.25", ["--dropout", "0.25", "--recurrent-dropout", "0.25"]),
    ("+ --zoneout 0.1", ["--dropout", "0.25", "--zoneout", "0.1"]),
    ("+ --zoneout-cell 0.25", ["--dropout", "0.25", "--zoneout-cell", "0.25"]),
    ("all of them, --variational", ["--dropout", "0.25", "--input-dropout", "0.1", "--output-dropout", "0.25",
                                    "--variational", "--weight-drop", "0.5", "--ar", "2", "--tar", "1"]),
]


def machine():
    fields = {}
    for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return "%s (family %s, model %s), %s CPUs" % (fields.get("Model name"), fields.get("CPU family"),
                                                 fields.get("Model"), fields.get("CPU(s)"))


def load():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=os.path.join(ROOT, "build"), help="build directory holding bptt_bench")
    p.add_argument("--corpus", default=os.path.join(ROOT, "..", "shared", "corpora", "tinyshakespeare.txt"))
    p.add_argument("--cell", default="lstm")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    bench = os.path.join(a.build, "bptt_bench")
    if not os.path.exists(bench):
        sys.exit("regularisers.py: %s not found (build the bptt_bench target)" % bench)
    if not os.path.exists(a.corpus):
        sys.exit("regularisers.py: --corpus %s not found" % a.corpus)
    common = [bench, "train", "--corpus", a.corpus, "--cell", a.cell, "--hidden", str(a.hidden), "--layers",
              str(a.layers), "--batch", str(a.batch), "--seq", str(a.seq), "--steps", str(a.steps), "--threads",
              str(a.threads)]
    print("machine: %s" % machine())
    print("load average before: %s" % load())
    speeds = {name: [] for name, _ in ROWS}
    for r in range(a.rounds):
        order = ROWS[r % len(ROWS):] + ROWS[:r % len(ROWS)]
        for name, flags in order:
            out = subprocess.run(common + flags, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit("regularisers.py: %s failed: %s" % (name, out.stderr.strip()))
            line = json.loads(out.stdout.strip().splitlines()[-1])
            speeds[name].append(line["train_chars_per_s"])
    print("load average after: %s" % load())
    reference = statistics.median(speeds[ROWS[0][0]])
    print("\n%s %dx%d, B %d, T %d, %d threads, %d timed steps, median of %d rounds\n" %
          (a.cell, a.layers, a.hidden, a.batch, a.seq, a.threads, a.steps, a.rounds))
    print("| row | chars/s (median) | min..max | vs dropout 0.25 |")
    print("| --- | ---: | ---: | ---: |")
    for name, _ in ROWS:
        s = speeds[name]
        print("| %s | %.0f | %.0f..%.0f | %.3f |" % (name, statistics.median(s), min(s), max(s),
                                                    statistics.median(s) / reference))
    for name, flags in ROWS:
        print(json.dumps({"row": name, "flags": flags, "cell": a.cell, "hidden": a.hidden, "layers": a.layers,
                          "chars_per_s": speeds[name], "ratio": statistics.median(speeds[name]) / reference}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
