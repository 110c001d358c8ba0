#!/usr/bin/python3
"""The PyTorch anchor of bench/sequences.py fashion-mnist: Fashion-MNIST read row by row, as a PyTorch
user writes it — nn.LSTM(28, 128) and a linear layer on the last step, Adam 2e-3, batch 128, pixels
scaled to [0, 1], on --threads threads — trained for --budget-s seconds (or until --max-steps
batches, whichever comes first), then scored on the 10,000 test images. Prints one JSON line: test_accuracy, epochs (fractional), steps, train_s, epochs_per_s.

  torch_fashion_mnist.py --dir /usr/share/datasets/fashion-mnist --budget-s 300 --threads 2 --seed 1
  --pixels reads each image pixel by pixel (784 steps of 1), the long-lag version.
"""
import argparse
import gzip
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn


def idx(path):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * k:8 + 4 * k], "big") for k in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


p = argparse.ArgumentParser()
p.add_argument("--dir", default="/usr/share/datasets/fashion-mnist")
p.add_argument("--budget-s", type=float, default=300)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--seed", type=int, default=1)
p.add_argument("--hidden", type=int, default=128)
p.add_argument("--batch", type=int, default=128)
p.add_argument("--lr", type=float, default=2e-3)
p.add_argument("--max-steps", type=int, default=0, help="stop after this many batches (0: the budget alone)")
p.add_argument("--pixels", action="store_true")
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)
np.random.seed(a.seed)


def load(split):
    x = idx(os.path.join(a.dir, f"{split}-images-idx3-ubyte.gz")).astype(np.float32) / 255.0
    y = idx(os.path.join(a.dir, f"{split}-labels-idx1-ubyte.gz")).astype(np.int64)
    x = x.reshape(len(x), 784, 1) if a.pixels else x.reshape(len(x), 28, 28)
    return torch.from_numpy(x), torch.from_numpy(y)


x_train, y_train = load("train")
x_test, y_test = load("t10k")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(x_train.shape[2], a.hidden, batch_first=True)
        self.out = nn.Linear(a.hidden, 10)

    def forward(self, x):
        h, _ = self.lstm(x)
        return self.out(h[:, -1])


net = Net()
opt = torch.optim.Adam(net.parameters(), lr=a.lr)
loss_fn = nn.CrossEntropyLoss()
n = len(x_train)
steps_per_epoch = n // a.batch
steps = 0
start = time.perf_counter()
done = False
while not done:
    order = torch.randperm(n)
    for k in range(steps_per_epoch):
        if time.perf_counter() - start >= a.budget_s or (a.max_steps and steps >= a.max_steps):
            done = True
            break
        batch = order[k * a.batch:(k + 1) * a.batch]
        opt.zero_grad()
        loss = loss_fn(net(x_train[batch]), y_train[batch])
        loss.backward()
        opt.step()
        steps += 1
train_s = time.perf_counter() - start
with torch.no_grad():
    right = sum((net(x_test[k:k + 1000]).argmax(1) == y_test[k:k + 1000]).sum().item() for k in range(0, len(x_test), 1000))
epochs = steps / steps_per_epoch
print(json.dumps({"anchor": "pytorch", "torch": torch.__version__, "pixels": a.pixels, "seed": a.seed,
                  "test_accuracy": right / len(x_test), "epochs": epochs, "steps": steps, "train_s": train_s,
                  "epochs_per_s": epochs / train_s}))
