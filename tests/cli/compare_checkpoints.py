#!/usr/bin/env python3
"""Compares the weights of two bptt checkpoints (safetensors files), with no bptt code.

    compare_checkpoints.py A.safetensors B.safetensors --rel 1e-6   # |A - B| / |B| <= 1e-6
    compare_checkpoints.py A.safetensors B.safetensors --exact      # every tensor byte for byte

The weights are the tensors other than the training state ("optimizer.*", "state.*",
"feedback.*"). --rel compares the weights as one vector: the Euclidean norm of the difference
over the norm of B's. --exact compares every tensor, training state included. Prints the figure;
exits 1 when the checkpoints differ by more, 2 when they do not hold the same tensors.
"""
import argparse
import json
import math
import struct
import sys

TRAINING_STATE = ("optimizer.", "state.", "feedback.")


def load(path):
    """{name: (dtype, shape, bytes)} of a safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        tensors[name] = (entry["dtype"], tuple(entry["shape"]), body[begin:end])
    return tensors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--rel", type=float, help="largest relative difference of the weights allowed")
    how.add_argument("--exact", action="store_true", help="every tensor byte for byte")
    args = parser.parse_args()
    a, b = load(args.a), load(args.b)
    if args.exact:
        if a.keys() != b.keys():
            print(f"the tensors differ: {sorted(a.keys() ^ b.keys())}")
            return 2
        differ = sorted(name for name in a if a[name] != b[name])
        print(f"{len(differ)} of {len(a)} tensors differ" + (f": {', '.join(differ[:5])}" if differ else ""))
        return 1 if differ else 0
    weights = sorted(name for name in b if not name.startswith(TRAINING_STATE))
    if sorted(name for name in a if not name.startswith(TRAINING_STATE)) != weights:
        print("the checkpoints do not hold the same weights")
        return 2
    diff2 = norm2 = 0.0
    count = 0
    for name in weights:
        (da, sa, ba), (db, sb, bb) = a[name], b[name]
        if da != "F32" or db != "F32" or sa != sb:
            print(f"{name}: {da} {sa} against {db} {sb}")
            return 2
        n = len(bb) // 4
        va, vb = struct.unpack(f"<{n}f", ba), struct.unpack(f"<{n}f", bb)
        for x, y in zip(va, vb):
            diff2 += (x - y) ** 2
            norm2 += y * y
        count += n
    rel = math.sqrt(diff2 / norm2) if norm2 > 0 else math.sqrt(diff2)
    print(f"relative difference {rel:.3e} over {count} weights (allowed {args.rel:.1e})")
    return 0 if rel <= args.rel else 1


if __name__ == "__main__":
    sys.exit(main())
