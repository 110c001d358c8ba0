#!/usr/bin/python3
"""Sampling as a user sees it: whole processes, start-up included, bptt against PyTorch.

  startup.py --bptt BIN --checkpoint CK [--length 600] [--runs 5] [--torch-threads 1]

Runs `BIN sample CK --length LENGTH` and `bench/torch_sample.py CK --length LENGTH` (Debian's
python3, the same weights loaded into PyTorch) alternately, RUNS times each, with their output
on a pseudo-terminal (bptt then writes each symbol as it is drawn, as torch_sample.py does), and
prints one JSON line: the median seconds from start to the first symbol and to exit of each, and
the ratio of the medians to exit (torch / bptt).
"""
import argparse, json, os, pty, statistics, subprocess, sys, time

p = argparse.ArgumentParser()
p.add_argument("--bptt", required=True)
p.add_argument("--checkpoint", required=True)
p.add_argument("--length", type=int, default=600)
p.add_argument("--runs", type=int, default=5)
p.add_argument("--torch-threads", type=int, default=1)
a = p.parse_args()
here = os.path.dirname(os.path.abspath(__file__))


def timed(argv):
    """(seconds to the first byte of output, seconds to exit) of one process on a pseudo-terminal."""
    master, slave = pty.openpty()
    t0 = time.perf_counter()
    child = subprocess.Popen(argv, stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    first = None
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            chunk = b""
        if not chunk:
            break
        if first is None:
            first = time.perf_counter() - t0
    child.wait()
    total = time.perf_counter() - t0
    os.close(master)
    if child.returncode != 0:
        sys.exit(f"startup.py: {' '.join(argv)} failed: {child.stderr.read().decode(errors='replace')}")
    return first, total


commands = {
    "bptt": [a.bptt, "sample", a.checkpoint, "--length", str(a.length)],
    "torch": ["/usr/bin/python3", os.path.join(here, "torch_sample.py"), a.checkpoint, "--length", str(a.length),
              "--threads", str(a.torch_threads)],
}
times = {name: [] for name in commands}
for _ in range(a.runs):
    for name, argv in commands.items():
        times[name].append(timed(argv))
res = {"length": a.length, "runs": a.runs, "torch_threads": a.torch_threads}
for name, ts in times.items():
    res[f"{name}_first_symbol_s"] = round(statistics.median(t[0] for t in ts), 4)
    res[f"{name}_total_s"] = round(statistics.median(t[1] for t in ts), 4)
res["startup_ratio"] = round(res["torch_total_s"] / res["bptt_total_s"], 2)
print(json.dumps(res))
