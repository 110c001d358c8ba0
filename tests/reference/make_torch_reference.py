#!/usr/bin/python3
"""Generate tests/reference/torch_reference.json, an independent PyTorch
reference for bptt's forward pass and gradients.

For each case (rnn-tanh, rnn-relu, lstm, gru with one-hot input, and
lstm-embed, gru-embed with a learned nn.Embedding) this script builds a small
character-level language model in float64 with PyTorch's own modules and
parameter names:

    input  : one_hot(x, V) (E == 0)  or  encoder = nn.Embedding(V, E)
    rnn    : nn.RNN(tanh|relu) / nn.LSTM / nn.GRU, num_layers=L, seq-first
    decoder: nn.Linear(H, V)
    loss_ce    = nn.CrossEntropyLoss()(decoder(outputs), targets)  (mean, nats)
    loss_total = loss_ce + 0.5*sum(hT*wh) [+ 0.5*sum(cT*wc) for LSTM]

All weights and biases, the initial states h0 (and c0) and the fixed
final-state weights wh (and wc) are drawn uniform(-0.5, 0.5) from a fixed
seed.  The JSON stores every tensor (flat row-major, with its shape), the
token ids flattened in (T, B) order (index t*B + b), the forward results
(outputs, logits, hT, cT), both losses, and d(loss_total)/d(every parameter,
h0, c0).

Rerun from the repository root (needs Debian's python3-torch):

    /usr/bin/python3 tests/reference/make_torch_reference.py

The output is deterministic for a given torch build.  Running with --check
additionally reloads the written JSON, rebuilds the models from the stored
tensors, verifies losses/grads reproduce bit-exactly, and checks the
gradients against central finite differences.  The C++ tests read only the
JSON; they do not need PyTorch.
"""

import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "torch_reference.json")

V, H, L, B, T = 7, 5, 2, 3, 6
# Seeds were chosen (first seed >= 1001 + case index) so that every symbol
# occurs in the inputs and no gradient element is exactly zero; for rnn-relu,
# where dead units make some zeros unavoidable, every hidden unit of every
# layer is active at least once (all bias/decoder/h0 grads non-zero).
# make_case() asserts these properties.
CASES = [
    # name, cell, E, seed
    ("rnn-tanh", "rnn-tanh", 0, 1001),
    ("rnn-relu", "rnn-relu", 0, 1039),
    ("lstm", "lstm", 0, 1004),
    ("gru", "gru", 0, 1004),
    ("lstm-embed", "lstm", 4, 1008),
    ("gru-embed", "gru", 4, 1006),
]


class CharLM(nn.Module):
    def __init__(self, cell, V, E, H, L):
        super().__init__()
        self.cell, self.V, self.E = cell, V, E
        if E > 0:
            self.encoder = nn.Embedding(V, E)
        nin = E if E > 0 else V
        if cell == "lstm":
            self.rnn = nn.LSTM(nin, H, num_layers=L, dropout=0.0)
        elif cell == "gru":
            self.rnn = nn.GRU(nin, H, num_layers=L, dropout=0.0)
        elif cell in ("rnn-tanh", "rnn-relu"):
            self.rnn = nn.RNN(nin, H, num_layers=L, dropout=0.0,
                              nonlinearity=cell.split("-")[1])
        else:
            raise ValueError(cell)
        self.decoder = nn.Linear(H, V)

    def forward(self, x, state):
        emb = self.encoder(x) if self.E > 0 else \
            F.one_hot(x, self.V).to(torch.get_default_dtype())
        outputs, final = self.rnn(emb, state)
        logits = self.decoder(outputs)
        return outputs, logits, final


def losses(model, cell, x, y, h0, c0, wh, wc):
    state = (h0, c0) if cell == "lstm" else h0
    outputs, logits, final = model(x, state)
    ce = nn.CrossEntropyLoss()(logits.reshape(-1, model.V), y.reshape(-1))
    if cell == "lstm":
        hT, cT = final
        total = ce + 0.5 * (hT * wh).sum() + 0.5 * (cT * wc).sum()
    else:
        hT, cT = final, None
        total = ce + 0.5 * (hT * wh).sum()
    return outputs, logits, hT, cT, ce, total


def tjson(t):
    t = t.detach().contiguous()
    return {"shape": list(t.shape),
            "data": [float(v) for v in t.reshape(-1).tolist()]}


def make_case(name, cell, E, seed):
    torch.manual_seed(seed)
    model = CharLM(cell, V, E, H, L)
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.5, 0.5)
    x = torch.randint(0, V, (T, B))
    y = torch.randint(0, V, (T, B))
    u = lambda *s: torch.empty(*s).uniform_(-0.5, 0.5)
    h0 = u(L, B, H).requires_grad_(True)
    wh = u(L, B, H)
    c0 = wc = None
    if cell == "lstm":
        c0 = u(L, B, H).requires_grad_(True)
        wc = u(L, B, H)

    outputs, logits, hT, cT, ce, total = losses(model, cell, x, y,
                                                h0, c0, wh, wc)
    model.zero_grad()
    total.backward()

    tensors, grads = {}, {}
    for pname, p in model.named_parameters():
        tensors[pname] = tjson(p)
        grads[pname] = tjson(p.grad)
    tensors["h0"] = tjson(h0)
    grads["h0"] = tjson(h0.grad)
    tensors["wh"] = tjson(wh)
    if cell == "lstm":
        tensors["c0"] = tjson(c0)
        grads["c0"] = tjson(c0.grad)
        tensors["wc"] = tjson(wc)
    tensors["outputs"] = tjson(outputs)
    tensors["logits"] = tjson(logits)
    tensors["hT"] = tjson(hT)
    if cell == "lstm":
        tensors["cT"] = tjson(cT)

    assert len(set(x.reshape(-1).tolist())) == V, (name, "missing symbol")
    for gname, g in grads.items():
        nzero = sum(1 for v in g["data"] if v == 0.0)
        if cell != "rnn-relu" or "bias" in gname or gname in (
                "decoder.weight", "h0"):
            assert nzero == 0, (name, gname, "zero gradient elements")

    return {"name": name, "cell": cell, "V": V, "E": E, "H": H, "L": L,
            "B": B, "T": T,
            "inputs": [int(v) for v in x.reshape(-1).tolist()],
            "targets": [int(v) for v in y.reshape(-1).tolist()],
            "tensors": tensors,
            "loss_ce": float(ce.item()), "loss_total": float(total.item()),
            "grads": grads}


# ---------------------------------------------------------------- checking

def _t(j):
    return torch.tensor(j["data"]).reshape(j["shape"])


def rebuild(case):
    model = CharLM(case["cell"], case["V"], case["E"], case["H"], case["L"])
    tens = case["tensors"]
    with torch.no_grad():
        for pname, p in model.named_parameters():
            p.copy_(_t(tens[pname]))
    x = torch.tensor(case["inputs"]).reshape(case["T"], case["B"])
    y = torch.tensor(case["targets"]).reshape(case["T"], case["B"])
    h0 = _t(tens["h0"]).requires_grad_(True)
    wh = _t(tens["wh"])
    c0 = wc = None
    if case["cell"] == "lstm":
        c0 = _t(tens["c0"]).requires_grad_(True)
        wc = _t(tens["wc"])
    return model, x, y, h0, c0, wh, wc


def check_reproduce(case):
    model, x, y, h0, c0, wh, wc = rebuild(case)
    cell = case["cell"]
    outputs, logits, hT, cT, ce, total = losses(model, cell, x, y,
                                                h0, c0, wh, wc)
    model.zero_grad()
    total.backward()
    got = {pname: p.grad for pname, p in model.named_parameters()}
    got["h0"] = h0.grad
    if cell == "lstm":
        got["c0"] = c0.grad
    fwd = {"outputs": outputs, "logits": logits, "hT": hT}
    if cell == "lstm":
        fwd["cT"] = cT
    assert ce.item() == case["loss_ce"], (case["name"], "loss_ce")
    assert total.item() == case["loss_total"], (case["name"], "loss_total")
    assert set(got) == set(case["grads"]), (case["name"], sorted(got))
    maxdiff = 0.0
    for k, g in list(got.items()) + list(fwd.items()):
        ref = case["grads"][k] if k in got else case["tensors"][k]
        assert list(g.shape) == ref["shape"], (case["name"], k)
        d = (g.detach() - _t(ref)).abs().max().item()
        maxdiff = max(maxdiff, d)
    assert maxdiff == 0.0, (case["name"], maxdiff)
    return maxdiff


def check_finite_diff(case, eps=1e-6):
    """Central differences of loss_total w.r.t. every element of every
    parameter and initial state, compared with the stored gradients."""
    model, x, y, h0, c0, wh, wc = rebuild(case)
    cell = case["cell"]
    leaves = dict(model.named_parameters())
    leaves["h0"] = h0
    if cell == "lstm":
        leaves["c0"] = c0

    def f():
        with torch.no_grad():
            return losses(model, cell, x, y, h0, c0, wh, wc)[5].item()

    worst_abs, worst_rel, n = 0.0, 0.0, 0
    for k, p in leaves.items():
        ref = _t(case["grads"][k]).reshape(-1)
        flat = p.data.view(-1)
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + eps
            fp = f()
            flat[i] = old - eps
            fm = f()
            flat[i] = old
            num = (fp - fm) / (2 * eps)
            a = abs(num - ref[i].item())
            worst_abs = max(worst_abs, a)
            worst_rel = max(worst_rel, a / max(1e-3, abs(num)))
            n += 1
    return n, worst_abs, worst_rel


def check_gradcheck(case):
    """torch.autograd.gradcheck on loss_total as a function of all leaves."""
    model, x, y, h0, c0, wh, wc = rebuild(case)
    cell = case["cell"]
    names = [n for n, _ in model.named_parameters()]
    init = [p.detach().clone().requires_grad_(True)
            for p in model.parameters()]
    init.append(h0.detach().clone().requires_grad_(True))
    if cell == "lstm":
        init.append(c0.detach().clone().requires_grad_(True))

    def fn(*args):
        params = dict(zip(names, args[:len(names)]))
        hh = args[len(names)]
        cc = args[len(names) + 1] if cell == "lstm" else None
        state = (hh, cc) if cell == "lstm" else hh
        outs, logits, final = torch.func.functional_call(
            model, params, (x, state)) if hasattr(torch, "func") else \
            torch.nn.utils.stateless.functional_call(model, params, (x, state))
        ce = nn.CrossEntropyLoss()(logits.reshape(-1, model.V),
                                   y.reshape(-1))
        if cell == "lstm":
            return ce + 0.5 * (final[0] * wh).sum() + 0.5 * (final[1] * wc).sum()
        return ce + 0.5 * (final * wh).sum()

    return torch.autograd.gradcheck(fn, tuple(init), eps=1e-6, atol=1e-7,
                                    rtol=1e-5)


def main():
    doc = {"generator": "tests/reference/make_torch_reference.py",
           "torch_version": torch.__version__,
           "cases": [make_case(*c) for c in CASES]}
    with open(OUT, "w") as fh:
        json.dump(doc, fh, separators=(",", ":"))
        fh.write("\n")
    print("wrote %s (%d bytes)" % (OUT, os.path.getsize(OUT)))
    for c in doc["cases"]:
        print("  %-11s loss_ce=%.17g loss_total=%.17g"
              % (c["name"], c["loss_ce"], c["loss_total"]))

    if "--check" in sys.argv[1:]:
        with open(OUT) as fh:
            back = json.load(fh)
        for c in back["cases"]:
            check_reproduce(c)
            print("  %-11s reload: losses, forward tensors and grads "
                  "reproduce bit-exactly" % c["name"])
        for c in back["cases"]:
            n, wa, wr = check_finite_diff(c)
            print("  %-11s central differences over %d elements: "
                  "max abs err %.3g, max rel err %.3g" % (c["name"], n, wa, wr))
            assert wr < 1e-6, c["name"]
        for name in ("lstm-embed", "gru"):
            c = next(cc for cc in back["cases"] if cc["name"] == name)
            print("  %-11s torch.autograd.gradcheck: %s"
                  % (name, check_gradcheck(c)))


if __name__ == "__main__":
    main()
