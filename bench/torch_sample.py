#!/usr/bin/python3
"""The start-up anchor: what a PyTorch user runs to sample from a bptt checkpoint.

  torch_sample.py CHECKPOINT --length 600 [--threads N] [--seed S]

Reads the safetensors file (bptt writes PyTorch's names and layouts, so the recurrent weights load
into nn.LSTM / nn.GRU / nn.RNN as they are), builds the model, and prints LENGTH characters
sampled at temperature 1 from a line start, each as it is drawn (flushed), as `bptt sample` does
on a terminal. bench/startup times the whole process, start-up included.
"""
import argparse, json, struct, sys

import numpy as np
import torch, torch.nn as nn

p = argparse.ArgumentParser()
p.add_argument("checkpoint")
p.add_argument("--length", type=int, default=600)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--seed", type=int, default=1)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)

with open(a.checkpoint, "rb") as f:
    blob = f.read()
(n,) = struct.unpack("<Q", blob[:8])
header = json.loads(blob[8 : 8 + n])
data = memoryview(blob)[8 + n :]
meta = header.pop("__metadata__")
config, symbols = json.loads(meta["config"]), json.loads(meta["vocab"])["symbols"]
if config["embed_size"] != 0 or config["head"] != "softmax" or config["layer_norm"] or config["residual"]:
    sys.exit("torch_sample.py: one-hot language models without layer norm or residual connections only")


def tensor(name):
    entry = header[name]
    begin, end = entry["data_offsets"]
    return torch.from_numpy(np.frombuffer(data[begin:end], dtype=np.float32).reshape(entry["shape"]).copy())


V, H, L = config["vocab_size"], config["hidden_size"], config["layers"]
cell = config["cell"]
if cell == "lstm":
    rnn = nn.LSTM(V, H, L)
elif cell == "gru":
    rnn = nn.GRU(V, H, L)
elif cell in ("rnn-tanh", "rnn-relu"):
    rnn = nn.RNN(V, H, L, nonlinearity=cell[4:])
else:
    sys.exit(f"torch_sample.py: PyTorch has no {cell} cell")
rnn.load_state_dict({k[4:]: tensor(k) for k in header if k.startswith("rnn.")})
decoder = nn.Linear(H, V)
decoder.load_state_dict({"weight": tensor("decoder.weight"), "bias": tensor("decoder.bias")})
eye = torch.eye(V)

with torch.no_grad():
    state = None
    x = symbols.index("\n") if "\n" in symbols else 0
    out = sys.stdout
    for _ in range(a.length):
        y, state = rnn(eye[x].view(1, 1, V), state)
        x = int(torch.multinomial(torch.softmax(decoder(y[0, 0]), -1), 1))
        out.write(symbols[x])
        out.flush()
    out.write("\n")
