#!/usr/bin/python3
"""The PyTorch anchor (../shared/anchors/torch_charlstm.py) with the cell as a flag, for the GRU and RNN rows of
bench/run, and the sampling anchor of every row.

Same work as the project's benchmark: one-hot (embedding) input, L stacked LSTM, GRU or tanh-RNN layers of H units,
softmax over the vocabulary, truncated BPTT with state carried between batches, global-norm
clipping at 5, Adam. Prints one JSON line.

Sampling is timed as bptt_bench times bptt's: batch 1, --sample characters once untimed, then the best of
--sample-repeats runs of --sample characters (float32).

  torch_cells.py --cell gru --corpus FILE --hidden 512 --layers 2 --seq 64 --batch 32 --steps 30 --threads 2
  add --budget-s N to train for N seconds and report validation loss (nats/char) on the last 10%;
  --sample-only to time sampling alone (an untrained model), --sample 0 to skip it.
"""
import argparse, json, math, time
import torch, torch.nn as nn

p = argparse.ArgumentParser()
p.add_argument("--corpus", required=True)
p.add_argument("--cell", choices=["lstm", "gru", "rnn-tanh"], default="lstm")
p.add_argument("--hidden", type=int, default=512)
p.add_argument("--layers", type=int, default=2)
p.add_argument("--seq", type=int, default=64)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--steps", type=int, default=30)
p.add_argument("--warmup", type=int, default=3)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--sample", type=int, default=2000)
p.add_argument("--sample-repeats", type=int, default=5)
p.add_argument("--sample-only", action="store_true")
p.add_argument("--budget-s", type=float, default=0.0)
p.add_argument("--lr", type=float, default=2e-3)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)

text = open(a.corpus, encoding="utf-8").read()
chars = sorted(set(text))
idx = {c: i for i, c in enumerate(chars)}
data = torch.tensor([idx[c] for c in text], dtype=torch.long)
n_val = len(data) // 10
train, val = data[:-n_val], data[-n_val:]
V = len(chars)


class Model(nn.Module):
    def __init__(s):
        super().__init__()
        s.emb = nn.Embedding(V, V)  # one-hot equivalent width
        with torch.no_grad():
            s.emb.weight.copy_(torch.eye(V))
        s.emb.weight.requires_grad_(False)
        if a.cell == "lstm":
            s.rnn = nn.LSTM(V, a.hidden, a.layers)
        elif a.cell == "gru":
            s.rnn = nn.GRU(V, a.hidden, a.layers)
        else:
            s.rnn = nn.RNN(V, a.hidden, a.layers, nonlinearity="tanh")
        s.out = nn.Linear(a.hidden, V)

    def forward(s, x, h):
        y, h = s.rnn(s.emb(x), h)
        return s.out(y), h


m = Model()
opt = torch.optim.Adam([q for q in m.parameters() if q.requires_grad], lr=a.lr)
lossf = nn.CrossEntropyLoss()


def batches(d):
    # batch-major contiguous streams, like char-rnn: row b reads d[b*L : (b+1)*L]
    L = (len(d) - 1) // a.batch
    xs = d[: a.batch * L].view(a.batch, L).t()
    ys = d[1 : a.batch * L + 1].view(a.batch, L).t()
    while True:
        for t in range(0, L - a.seq + 1, a.seq):
            yield xs[t : t + a.seq], ys[t : t + a.seq]


def step(it, h):
    x, y = next(it)
    h = tuple(t.detach() for t in h) if a.cell == "lstm" else h.detach()
    logits, h = m(x, h)
    loss = lossf(logits.reshape(-1, V), y.reshape(-1))
    opt.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(m.parameters(), 5.0)
    opt.step()
    return loss.item(), h


def zero_state(b):
    if a.cell != "lstm":
        return torch.zeros(a.layers, b, a.hidden)
    return (torch.zeros(a.layers, b, a.hidden), torch.zeros(a.layers, b, a.hidden))


res = dict(impl="pytorch-" + torch.__version__, cell=a.cell, hidden=a.hidden, layers=a.layers, threads=a.threads)
it = batches(train)
h = zero_state(a.batch)
if not a.sample_only:
    for _ in range(a.warmup):
        _, h = step(it, h)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        loss, h = step(it, h)
    dt = time.perf_counter() - t0
    res.update(seq=a.seq, batch=a.batch, train_chars_per_s=round(a.steps * a.seq * a.batch / dt, 1),
               loss=round(loss, 4))

if a.budget_s > 0 and not a.sample_only:
    t0 = time.perf_counter()
    steps = 0
    while time.perf_counter() - t0 < a.budget_s:
        loss, h = step(it, h)
        steps += 1
    with torch.no_grad():
        hv = zero_state(1)
        x = val[:-1].view(-1, 1)
        y = val[1:]
        logits, _ = m(x, hv)
        vl = lossf(logits.view(-1, V), y).item()
    res.update(budget_s=a.budget_s, budget_steps=steps, val_loss_nats=round(vl, 4), val_bpc=round(vl / math.log(2), 4))



def sample_seconds():
    """Seconds to sample a.sample characters, one at a time, from a zero state."""
    with torch.no_grad():
        hs = zero_state(1)
        x = torch.tensor([[0]])
        t0 = time.perf_counter()
        for _ in range(a.sample):
            logits, hs = m(x, hs)
            x = torch.multinomial(torch.softmax(logits[0, 0], -1), 1).view(1, 1)
        return time.perf_counter() - t0


if a.sample > 0:
    sample_seconds()  # untimed
    best = min(sample_seconds() for _ in range(a.sample_repeats))
    res.update(sample_chars_per_s=round(a.sample / best, 1), sample_repeats=a.sample_repeats)

print(json.dumps(res))
