#!/usr/bin/python3
"""Reads a safetensors file with NumPy alone and prints each tensor's name, dtype and shape.

An interoperability check for files bptt writes, independent of bptt's code: it follows the
published format (u64 little-endian header length, JSON header, data buffer) and, when
__metadata__ holds "checksum": "crc32:xxxxxxxx", verifies it as bptt defines it: zlib crc32 of the
whole file with those 8 hex digits written as '0'. Not run by the test suite.

    /usr/bin/python3 tests/reference/read_safetensors.py model.safetensors [--values]
"""
import json
import re
import struct
import sys
import zlib

import numpy as np

DTYPES = {"F32": "<f4", "F64": "<f8", "I32": "<i4", "I64": "<i8",
          "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8"}


def read(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    metadata = header.pop("__metadata__", {})
    checksum = metadata.get("checksum")
    if checksum is not None:
        entry = b'"checksum":"' + checksum.encode() + b'"'
        at = raw.index(entry, 8) + len(entry) - 9
        zeroed = raw[:at] + b"00000000" + raw[at + 8:]
        actual = "crc32:%08x" % zlib.crc32(zeroed)
        if actual != checksum:
            sys.exit(f"{path}: checksum mismatch: file says {checksum}, bytes give {actual}")
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        array = np.frombuffer(data[begin:end], dtype=DTYPES[info["dtype"]])
        tensors[name] = array.reshape(info["shape"])
    return metadata, tensors


def main():
    path = sys.argv[1]
    metadata, tensors = read(path)
    print("metadata", json.dumps(metadata, sort_keys=True))
    for name in sorted(tensors):
        array = tensors[name]
        print(name, array.dtype.str, list(array.shape))
        if "--values" in sys.argv[2:]:
            print(" ", np.array2string(array.ravel(), threshold=20))


if __name__ == "__main__":
    main()
