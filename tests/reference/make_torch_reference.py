#!/usr/bin/python3
"""Generate tests/reference/torch_reference.json, an independent PyTorch
reference for bptt's forward pass, its gradients and its step mode.

Each case is a model built in float64 from PyTorch's own modules and
parameter names:

    input  : one_hot(x, V)  or  encoder = nn.Embedding(V, E)  or  x dense (D)
    rnn    : nn.RNN(tanh|relu) / nn.LSTM / nn.GRU, num_layers=L, seq-first;
             rnn-sigmoid (which nn.RNN lacks) is LoopRNN below, a loop over
             torch.sigmoid(x W_ih^T + b_ih + h W_hh^T + b_hh) with nn.RNN's
             parameter names; the layer-normalised LSTM and GRU ("layer_norm":
             true) are LayerNormRNN below, a loop over F.layer_norm, matrix
             products, torch.sigmoid and torch.tanh with nn.LSTM / nn.GRU's
             parameter names plus ln_{ih,hh,c}_{weight,bias}_l{k}; minGRU and
             minLSTM (Feng et al. 2024), which PyTorch lacks, are MinRNN below,
             a loop over torch.sigmoid and elementwise arithmetic with
             weight_ih_l{k} and bias_ih_l{k} alone
    decoder: nn.Linear(H, O)
    head   : softmax: mean over the scored positions of cross-entropy (nats)
             regression: sum over the scored positions of (out - value)^2,
             divided by (scored positions * O)
    loss_total = loss_head + 0.5*sum(hT*wh) [+ 0.5*sum(cT*wc) for LSTM]

so gradients flow from the final state too. For every case the JSON holds the
inputs ("inputs" ids or "dense"), targets ("targets" classes or "values") and
mask ("scored", absent when every position is), all flattened in (T, B)
order, index t*B + b; the parameters, h0, c0, wh, wc ("tensors"); the forward
results ("results": top_hidden, outputs, hT, cT); loss_head and loss_total;
d(loss_total)/d(every parameter, h0, c0) ("grads"); and the head outputs and
head loss of a second forward pass from the zero state ("zero_state": what
bptt's Stepper, which starts from zero, must reproduce step by step).

Two kinds of case:

  small  V=7, H=5, L=2, B=3, T=6: every tensor is stored in full, flat
         row-major with its shape ({"shape", "data"}). Weights, states and
         inputs are drawn by torch from a fixed seed.
  big    V=9, H=70, L=2, B=11, T=5, one per cell (~60k parameters for LSTM):
         sizes that cross the 32-row panels of bptt's packed kernel. Weights,
         states and inputs are not stored but generated, identically here and
         in the C++ test, by an integer LCG
             x_{n+1} = (6364136223846793005 x_n + 1442695040888963407) mod 2^64
         from a stored seed (the first value uses x_1):
             real tensor element = scale * ((x >> 11) * 2^-53 - 0.5)
             symbol id           = (x >> 33) mod below
         ({"shape", "lcg": {"seed", "scale"}, "check": {"sum", "first",
         "last"}}, or {"lcg": {"seed", "below"}, "count"} for ids; "check"
         lets the C++ side prove its generator exact). Results are stored in
         full where small (head outputs) and otherwise as a sample:
         {"shape", "index", "value", "sum", "abs_sum", "norm", "max_abs"},
         64 flat row-major indices that include every panel boundary row and
         column (0, 31, 32, 63, 64, ..., the last) and the tensor's sum, sum
         of magnitudes, Frobenius norm and largest magnitude.

Rerun from the repository root (needs Debian's python3-torch):

    /usr/bin/python3 tests/reference/make_torch_reference.py [--check]

The output is deterministic for a given torch build. --check reloads the
written JSON, rebuilds every model from it, verifies that everything stored
reproduces bit-exactly, checks every gradient element of the small cases
(and a few sampled elements of each big one) against central differences,
runs torch.autograd.gradcheck on six cases, and checks LoopRNN with tanh
against nn.RNN, LayerNormRNN without its LNs against nn.LSTM / nn.GRU, and
MinRNN's loop against the closed form of its linear recurrence.
The C++ tests read only the JSON; they do not need PyTorch.
"""

import json
import math
import os
import random
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "torch_reference.json")

# ------------------------------------------------------------------ cases

SMALL = dict(V=7, H=5, L=2, B=3, T=6)
SMALL_D = 3        # dense input features
SMALL_O_REG = 2    # regression outputs
SMALL_O_CLS = 4    # classes of the classifier
# Seeds were chosen (first seed >= the listed base that passes) so that every
# symbol occurs in the inputs of a symbol-input case and no gradient element
# is exactly zero; for rnn-relu, where dead units make some zeros unavoidable,
# every hidden unit of every layer is active at least once (all bias/decoder/
# h0 grads non-zero). make_case() asserts these properties.
SMALL_CASES = [
    # name, cell, input (onehot|embed|dense), task (lm|classify|regress), seed
    ("rnn-tanh", "rnn-tanh", "onehot", "lm", 1001),
    ("rnn-relu", "rnn-relu", "onehot", "lm", 1039),
    ("lstm", "lstm", "onehot", "lm", 1004),
    ("gru", "gru", "onehot", "lm", 1004),
    ("lstm-embed", "lstm", "embed", "lm", 1008),
    ("gru-embed", "gru", "embed", "lm", 1006),
    ("rnn-sigmoid", "rnn-sigmoid", "onehot", "lm", 1102),
    ("rnn-tanh-dense-regress", "rnn-tanh", "dense", "regress", 1201),
    ("rnn-sigmoid-dense-regress", "rnn-sigmoid", "dense", "regress", 1201),
    ("rnn-relu-dense-regress", "rnn-relu", "dense", "regress", 1206),
    ("lstm-dense-regress", "lstm", "dense", "regress", 1201),
    ("gru-dense-regress", "gru", "dense", "regress", 1201),
    ("lstm-classify", "lstm", "onehot", "classify", 1301),
    ("gru-classify", "gru", "onehot", "classify", 1302),
    ("mingru", "mingru", "onehot", "lm", 1501),
    ("minlstm", "minlstm", "onehot", "lm", 1501),
    ("mingru-embed", "mingru", "embed", "lm", 1511),
    ("minlstm-dense-regress", "minlstm", "dense", "regress", 1521),
]
# Layer normalisation (bptt --layer-norm): the same kinds of case with LayerNormRNN. Their LN
# gains are drawn as 1 + uniform(-0.5, 0.5), everything else as above.
SMALL_LN_CASES = [
    ("lstm-ln", "lstm", "onehot", "lm", 1404),
    ("gru-ln", "gru", "onehot", "lm", 1402),
    ("lstm-ln-embed", "lstm", "embed", "lm", 1411),
    ("gru-ln-dense-regress", "gru", "dense", "regress", 1421),
    ("lstm-ln-dense-regress", "lstm", "dense", "regress", 1421),
]

BIG = dict(V=9, H=70, L=2, B=11, T=5)
BIG_CASES = [
    # name, cell, seed (tensor k of the case is drawn from LCG seed seed*100 + k)
    ("big-rnn-tanh", "rnn-tanh", 2001),
    ("big-rnn-sigmoid", "rnn-sigmoid", 2002),
    ("big-rnn-relu", "rnn-relu", 2003),
    ("big-lstm", "lstm", 2004),
    ("big-gru", "gru", 2005),
    ("big-mingru", "mingru", 2006),
    ("big-minlstm", "minlstm", 2007),
]
BIG_LN_CASES = [
    ("big-lstm-ln", "lstm", 2014),
    ("big-gru-ln", "gru", 2015),
]
SAMPLES = 64  # sampled elements per big tensor


def big_scale(name):
    """uniform(-0.5, 0.5) times this: pre-activations of order 1 at H = 70."""
    if name in ("rnn.weight_ih_l0", "h0", "c0", "wh", "wc"):
        return 1.0
    if "bias" in name:
        return 0.5
    if ".ln_" in name:
        return 2.0  # layer-norm gains: uniform(-1, 1)
    return 0.25  # weights with H inputs


# ------------------------------------------------------------------ models

class LoopRNN(nn.Module):
    """An Elman RNN as a plain loop over torch primitives, with nn.RNN's
    parameter names and layout: h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T
    + b_hh). Used for the sigmoid activation, which nn.RNN does not offer."""

    def __init__(self, nin, H, L, act):
        super().__init__()
        self.L, self.act = L, act
        for l in range(L):
            e = nin if l == 0 else H
            setattr(self, "weight_ih_l%d" % l, nn.Parameter(torch.empty(H, e)))
            setattr(self, "weight_hh_l%d" % l, nn.Parameter(torch.empty(H, H)))
            setattr(self, "bias_ih_l%d" % l, nn.Parameter(torch.empty(H)))
            setattr(self, "bias_hh_l%d" % l, nn.Parameter(torch.empty(H)))

    def forward(self, x, h0):
        inp, finals = x, []
        for l in range(self.L):
            w_ih, w_hh = getattr(self, "weight_ih_l%d" % l), getattr(self, "weight_hh_l%d" % l)
            b_ih, b_hh = getattr(self, "bias_ih_l%d" % l), getattr(self, "bias_hh_l%d" % l)
            h, outs = h0[l], []
            for t in range(x.shape[0]):
                h = self.act(inp[t] @ w_ih.t() + b_ih + h @ w_hh.t() + b_hh)
                outs.append(h)
            inp = torch.stack(outs)
            finals.append(h)
        return inp, torch.stack(finals)


LN_EPS = 1e-5  # bptt's and nn.LayerNorm's


class LayerNormRNN(nn.Module):
    """The layer-normalised LSTM or GRU of bptt --layer-norm as a plain loop
    over torch primitives, with nn.LSTM / nn.GRU's parameter names and layout
    plus, per layer, ln_ih_weight/bias and ln_hh_weight/bias (G*H) and for the
    LSTM ln_c_weight/bias (H). Each LN is F.layer_norm over a whole column:
        LSTM  a = LN(x W_ih^T) + LN(h W_hh^T) + b_ih + b_hh;  i, f, g, o
              c = f c + i g;  h = o tanh(LN(c))
        GRU   a = LN(x W_ih^T) + b_ih;  u = LN(h W_hh^T) + b_hh
              r = sigmoid(a_r + u_r), z = sigmoid(a_z + u_z),
              n = tanh(a_n + r u_n), h = (1 - z) n + z h
    With norm=False every LN is the identity and the loop is nn.LSTM / nn.GRU
    (check_layer_norm_loop)."""

    def __init__(self, cell, nin, H, L, norm=True):
        super().__init__()
        self.cell, self.H, self.L, self.norm = cell, H, L, norm
        G = 4 if cell == "lstm" else 3
        for l in range(L):
            e = nin if l == 0 else H
            setattr(self, "weight_ih_l%d" % l, nn.Parameter(torch.empty(G * H, e)))
            setattr(self, "weight_hh_l%d" % l, nn.Parameter(torch.empty(G * H, H)))
            setattr(self, "bias_ih_l%d" % l, nn.Parameter(torch.empty(G * H)))
            setattr(self, "bias_hh_l%d" % l, nn.Parameter(torch.empty(G * H)))
            if norm:
                for part, n in (("ih", G * H), ("hh", G * H)) + ((("c", H),) if cell == "lstm" else ()):
                    setattr(self, "ln_%s_weight_l%d" % (part, l), nn.Parameter(torch.empty(n)))
                    setattr(self, "ln_%s_bias_l%d" % (part, l), nn.Parameter(torch.empty(n)))

    def ln(self, z, part, l):
        if not self.norm:
            return z
        return F.layer_norm(z, (z.shape[-1],), getattr(self, "ln_%s_weight_l%d" % (part, l)),
                            getattr(self, "ln_%s_bias_l%d" % (part, l)), eps=LN_EPS)

    def forward(self, x, state):
        lstm = self.cell == "lstm"
        h0, c0 = state if lstm else (state, None)
        inp, hs, cs = x, [], []
        for l in range(self.L):
            p = lambda name: getattr(self, "%s_l%d" % (name, l))
            h, c, outs = h0[l], c0[l] if lstm else None, []
            for t in range(x.shape[0]):
                a = self.ln(inp[t] @ p("weight_ih").t(), "ih", l) + p("bias_ih")
                u = self.ln(h @ p("weight_hh").t(), "hh", l) + p("bias_hh")
                if lstm:
                    i, f, g, o = (a + u).chunk(4, -1)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                    h = torch.sigmoid(o) * torch.tanh(self.ln(c, "c", l))
                else:
                    a_r, a_z, a_n = a.chunk(3, -1)
                    u_r, u_z, u_n = u.chunk(3, -1)
                    r, z = torch.sigmoid(a_r + u_r), torch.sigmoid(a_z + u_z)
                    h = (1 - z) * torch.tanh(a_n + r * u_n) + z * h
                outs.append(h)
            inp = torch.stack(outs)
            hs.append(h)
            cs.append(c)
        if lstm:
            return inp, (torch.stack(hs), torch.stack(cs))
        return inp, torch.stack(hs)


class MinRNN(nn.Module):
    """minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?") as a
    plain loop over torch primitives, their gates from the input alone, with
    bptt's parameter names weight_ih_l{k} (G*H, E) and bias_ih_l{k} (G*H):
        minGRU   z, h~ = (x W_ih^T + b_ih).chunk(2);  z = sigmoid(z)
                 h = (1 - z) h + z h~
        minLSTM  f, i, h~ = (x W_ih^T + b_ih).chunk(3);  f, i = sigmoid(f), sigmoid(i)
                 h = f / (f + i) h + i / (f + i) h~
    check_min_scan checks it against the closed form of the same linear
    recurrence, h_t = A_t h_0 + sum_k A_t / A_k b_k with A_t = prod a."""

    def __init__(self, cell, nin, H, L):
        super().__init__()
        self.cell, self.L = cell, L
        G = 2 if cell == "mingru" else 3
        for l in range(L):
            e = nin if l == 0 else H
            setattr(self, "weight_ih_l%d" % l, nn.Parameter(torch.empty(G * H, e)))
            setattr(self, "bias_ih_l%d" % l, nn.Parameter(torch.empty(G * H)))

    def coefficients(self, x, l):
        """a_t, b_t of h_t = a_t h_{t-1} + b_t for every step of x (T, B, E)."""
        pre = x @ getattr(self, "weight_ih_l%d" % l).t() + getattr(self, "bias_ih_l%d" % l)
        if self.cell == "mingru":
            z, h = pre.chunk(2, -1)
            z = torch.sigmoid(z)
            return 1 - z, z * h
        f, i, h = pre.chunk(3, -1)
        f, i = torch.sigmoid(f), torch.sigmoid(i)
        return f / (f + i), i / (f + i) * h

    def forward(self, x, h0):
        inp, finals = x, []
        for l in range(self.L):
            a, b = self.coefficients(inp, l)
            h, outs = h0[l], []
            for t in range(x.shape[0]):
                h = a[t] * h + b[t]
                outs.append(h)
            inp = torch.stack(outs)
            finals.append(h)
        return inp, torch.stack(finals)


def make_rnn(cell, nin, H, L, layer_norm=False):
    if cell in ("mingru", "minlstm"):
        return MinRNN(cell, nin, H, L)
    if layer_norm:
        return LayerNormRNN(cell, nin, H, L)
    if cell == "lstm":
        return nn.LSTM(nin, H, num_layers=L, dropout=0.0)
    if cell == "gru":
        return nn.GRU(nin, H, num_layers=L, dropout=0.0)
    if cell in ("rnn-tanh", "rnn-relu"):
        return nn.RNN(nin, H, num_layers=L, dropout=0.0, nonlinearity=cell.split("-")[1])
    if cell == "rnn-sigmoid":
        return LoopRNN(nin, H, L, torch.sigmoid)
    raise ValueError(cell)


class Net(nn.Module):
    def __init__(self, cell, V, E, D, H, L, O, layer_norm=False):
        super().__init__()
        self.V, self.E, self.D, self.O = V, E, D, O
        if E > 0:
            self.encoder = nn.Embedding(V, E)
        self.rnn = make_rnn(cell, D if D > 0 else E if E > 0 else V, H, L, layer_norm)
        self.decoder = nn.Linear(H, O)

    def forward(self, x, state):
        if self.D > 0:
            inp = x
        elif self.E > 0:
            inp = self.encoder(x)
        else:
            inp = F.one_hot(x, self.V).to(torch.get_default_dtype())
        top, final = self.rnn(inp, state)
        return top, self.decoder(top), final


class Problem:
    """What one case feeds a model and scores it against."""

    def __init__(self, case, x, classes, values, scored, h0, c0, wh, wc):
        self.cell, self.head, self.O = case["cell"], case["head"], case["O"]
        self.x, self.classes, self.values, self.scored = x, classes, values, scored
        self.h0, self.c0, self.wh, self.wc = h0, c0, wh, wc

    def mask(self):
        T, B = self.x.shape[0], self.x.shape[1]
        return torch.ones(T, B) if self.scored is None else self.scored.to(torch.get_default_dtype())

    def head_loss(self, outputs):
        m = self.mask()
        if self.head == "softmax":
            per = F.cross_entropy(outputs.reshape(-1, self.O), self.classes.reshape(-1), reduction="none")
            return (per * m.reshape(-1)).sum() / m.sum()
        return ((outputs - self.values) ** 2 * m[..., None]).sum() / (m.sum() * self.O)

    def run(self, net, h0=None, c0=None):
        """top, outputs, hT, cT, loss_head, loss_total from (h0, c0)."""
        h0 = self.h0 if h0 is None else h0
        c0 = self.c0 if c0 is None else c0
        lstm = self.cell == "lstm"
        top, outputs, final = net(self.x, (h0, c0) if lstm else h0)
        hT, cT = final if lstm else (final, None)
        head = self.head_loss(outputs)
        total = head + 0.5 * (hT * self.wh).sum()
        if lstm:
            total = total + 0.5 * (cT * self.wc).sum()
        return top, outputs, hT, cT, head, total

    def zero_state(self, net):
        with torch.no_grad():
            z = torch.zeros_like(self.h0)
            return self.run(net, z, z if self.c0 is not None else None)

    def leaves(self, net):
        out = dict(net.named_parameters())
        out["h0"] = self.h0
        if self.c0 is not None:
            out["c0"] = self.c0
        return out


def empty_net(case):
    return Net(case["cell"], case["V"], case["E"], case["D"], case["H"], case["L"], case["O"],
               case.get("layer_norm", False))


# ------------------------------------------------------------------ storing

def tjson(t):
    t = t.detach().contiguous()
    return {"shape": list(t.shape), "data": [float(v) for v in t.reshape(-1).tolist()]}


def _t(j):
    return torch.tensor(j["data"]).reshape(j["shape"])


LCG_A, LCG_C, LCG_MASK = 6364136223846793005, 1442695040888963407, (1 << 64) - 1


def lcg(seed, n):
    x = seed
    for _ in range(n):
        x = (LCG_A * x + LCG_C) & LCG_MASK
        yield x


def lcg_reals(seed, n, scale):
    return [scale * ((x >> 11) * 2.0 ** -53 - 0.5) for x in lcg(seed, n)]


def lcg_ids(seed, n, below):
    return [(x >> 33) % below for x in lcg(seed, n)]


def lcg_check(seed, n, scale):
    """What the C++ side must reproduce bit for bit: the sum (in order, as it
    sums), first and last element."""
    vals = lcg_reals(seed, n, scale)
    total = 0.0
    for v in vals:
        total += v
    return {"sum": total, "first": vals[0], "last": vals[-1]}


def lcg_spec(shape, seed, scale):
    return {"shape": list(shape), "lcg": {"seed": seed, "scale": scale},
            "check": lcg_check(seed, math.prod(shape), scale)}


def from_lcg(spec):
    g = spec["lcg"]
    return torch.tensor(lcg_reals(g["seed"], math.prod(spec["shape"]), g["scale"])).reshape(spec["shape"])


def ids_from_lcg(spec, T, B):
    g = spec["lcg"]
    return torch.tensor(lcg_ids(g["seed"], T * B, g["below"])).reshape(T, B)


def boundaries(n):
    """0, the last, and both sides of every 32-row panel boundary below n."""
    out = {0, n - 1}
    for k in range(32, n, 32):
        out.update((k - 1, k))
    return sorted(out)


def sample_indices(shape, seed):
    """SAMPLES flat row-major indices of a tensor viewed as (rows, last dim),
    covering every panel boundary row and column."""
    cols = shape[-1] if len(shape) > 1 else 1
    rows = math.prod(shape) // cols
    n = rows * cols
    if n <= SAMPLES:
        return list(range(n))
    br, bc = boundaries(rows), boundaries(cols)
    rng = random.Random(seed)
    chosen = []
    for i, r in enumerate(br):
        chosen.append(r * cols + bc[i % len(bc)])
    for c in bc:
        chosen.append(rng.randrange(rows) * cols + c)
    chosen = list(dict.fromkeys(chosen))
    while len(chosen) < SAMPLES:
        k = rng.randrange(n)
        if k not in chosen:
            chosen.append(k)
    return sorted(chosen[:SAMPLES])


def sampled(t, seed):
    t = t.detach().contiguous()
    flat = t.reshape(-1)
    idx = sample_indices(list(t.shape), seed)
    return {"shape": list(t.shape), "index": idx, "value": [float(flat[i]) for i in idx],
            "sum": float(flat.sum()), "abs_sum": float(flat.abs().sum()),
            "norm": float(flat.norm()), "max_abs": float(flat.abs().max())}


# ------------------------------------------------------------------ making

def describe(name, cell, kind, task, V, E, D, H, L, B, T, layer_norm=False):
    head = "regression" if task == "regress" else "softmax"
    O = SMALL_O_REG if task == "regress" else SMALL_O_CLS if task == "classify" else V
    case = {"name": name, "cell": cell, "task": task, "head": head,
            "V": 0 if kind == "dense" else V, "E": E, "D": D if kind == "dense" else 0,
            "H": H, "L": L, "B": B, "T": T, "O": O}
    if layer_norm:
        case["layer_norm"] = True
    return case


def forward_and_grads(net, prob):
    top, outputs, hT, cT, head, total = prob.run(net)
    net.zero_grad()
    total.backward()
    grads = {k: p.grad for k, p in prob.leaves(net).items()}
    fwd = {"top_hidden": top, "outputs": outputs, "hT": hT}
    if cT is not None:
        fwd["cT"] = cT
    return fwd, grads, head, total


def small_problem(case, seed):
    """The model and problem of a small case, drawn by torch from `seed`, in
    the order the first six cases have always used."""
    T, B, L, H = case["T"], case["B"], case["L"], case["H"]
    torch.manual_seed(seed)
    net = empty_net(case)
    with torch.no_grad():
        for k, p in net.named_parameters():
            p.uniform_(-0.5, 0.5)
            if ".ln_" in k and "weight" in k:
                p.add_(1.0)  # layer-norm gains around 1
    u = lambda *s: torch.empty(*s).uniform_(-0.5, 0.5)
    x = u(T, B, case["D"]) if case["D"] > 0 else torch.randint(0, case["V"], (T, B))
    classes = values = None
    if case["head"] == "softmax":
        classes = torch.randint(0, case["O"], (T, B))
    else:
        values = u(T, B, case["O"])
    h0 = u(L, B, H).requires_grad_(True)
    wh = u(L, B, H)
    c0 = wc = None
    if case["cell"] == "lstm":
        c0 = u(L, B, H).requires_grad_(True)
        wc = u(L, B, H)
    scored = None
    if case["task"] == "classify":
        scored = torch.zeros(T, B, dtype=torch.long)
        scored[T - 1] = 1
    elif case["task"] == "regress":
        scored = (torch.rand(T, B) < 0.5).long()
    return net, Problem(case, x, classes, values, scored, h0, c0, wh, wc)


def store_problem(case, prob):
    if case["D"] > 0:
        case["dense"] = tjson(prob.x)
    else:
        case["inputs"] = [int(v) for v in prob.x.reshape(-1).tolist()]
    if prob.classes is not None:
        case["targets"] = [int(v) for v in prob.classes.reshape(-1).tolist()]
    else:
        case["values"] = tjson(prob.values)
    if prob.scored is not None:
        case["scored"] = [int(v) for v in prob.scored.reshape(-1).tolist()]


def make_small(name, cell, kind, task, seed, layer_norm=False):
    case = describe(name, cell, kind, task, SMALL["V"], 4 if kind == "embed" else 0, SMALL_D,
                    SMALL["H"], SMALL["L"], SMALL["B"], SMALL["T"], layer_norm)
    net, prob = small_problem(case, seed)
    fwd, grads, head, total = forward_and_grads(net, prob)
    zero = prob.zero_state(net)

    tensors = {k: tjson(p) for k, p in net.named_parameters()}
    tensors["h0"] = tjson(prob.h0)
    tensors["wh"] = tjson(prob.wh)
    if cell == "lstm":
        tensors["c0"] = tjson(prob.c0)
        tensors["wc"] = tjson(prob.wc)
    store_problem(case, prob)
    case.update({"tensors": tensors, "results": {k: tjson(t) for k, t in fwd.items()},
                 "loss_head": float(head.item()), "loss_total": float(total.item()),
                 "grads": {k: tjson(g) for k, g in grads.items()},
                 "zero_state": {"outputs": tjson(zero[1]), "loss_head": float(zero[4].item())}})

    if kind != "dense":
        assert len(set(case["inputs"])) == case["V"], (name, "missing symbol")
    if task == "regress":
        n = sum(case["scored"])
        assert 0 < n < case["T"] * case["B"], (name, "mask scores all or nothing")
    for gname, g in case["grads"].items():
        nzero = sum(1 for v in g["data"] if v == 0.0)
        if cell != "rnn-relu" or "bias" in gname or gname in ("decoder.weight", "h0"):
            assert nzero == 0, (name, gname, "zero gradient elements")
    return case


def big_problem(case):
    """The model and problem of a big case, generated from the LCG specs that
    `case` holds (filled in by make_big)."""
    T, B = case["T"], case["B"]
    net = empty_net(case)
    specs = case["tensors"]
    with torch.no_grad():
        for k, p in net.named_parameters():
            p.copy_(from_lcg(specs[k]))
    x = ids_from_lcg(case["inputs"], T, B)
    classes = ids_from_lcg(case["targets"], T, B)
    h0 = from_lcg(specs["h0"]).requires_grad_(True)
    wh = from_lcg(specs["wh"])
    c0 = wc = None
    if case["cell"] == "lstm":
        c0 = from_lcg(specs["c0"]).requires_grad_(True)
        wc = from_lcg(specs["wc"])
    return net, Problem(case, x, classes, None, None, h0, c0, wh, wc)


def make_big(name, cell, seed, layer_norm=False):
    V, H, L, B, T = (BIG[k] for k in "VHLBT")
    case = describe(name, cell, "onehot", "lm", V, 0, 0, H, L, B, T, layer_norm)
    shapes = [(k, list(p.shape)) for k, p in empty_net(case).named_parameters()]
    shapes += [(k, [L, B, H]) for k in (["h0", "wh", "c0", "wc"] if cell == "lstm" else ["h0", "wh"])]
    specs = {}
    for k, (tname, shape) in enumerate(shapes):
        specs[tname] = lcg_spec(shape, seed * 100 + k, big_scale(tname))
    case["tensors"] = specs
    case["inputs"] = {"lcg": {"seed": seed * 100 + 90, "below": V}, "count": T * B}
    case["targets"] = {"lcg": {"seed": seed * 100 + 91, "below": V}, "count": T * B}

    net, prob = big_problem(case)
    fwd, grads, head, total = forward_and_grads(net, prob)
    zero = prob.zero_state(net)
    results = {}
    for j, (k, t) in enumerate(fwd.items()):
        results[k] = tjson(t) if k == "outputs" else sampled(t, seed * 100 + 50 + j)
    case.update({"results": results, "loss_head": float(head.item()), "loss_total": float(total.item()),
                 "grads": {k: sampled(g, seed * 100 + 60 + j) for j, (k, g) in enumerate(grads.items())},
                 "zero_state": {"outputs": tjson(zero[1]), "loss_head": float(zero[4].item())}})

    assert len(set(lcg_ids(seed * 100 + 90, T * B, V))) == V, (name, "missing symbol")
    for gname, g in grads.items():
        if cell != "rnn-relu":
            assert (g != 0).all(), (name, gname, "zero gradient elements")
    return case


# ------------------------------------------------------------------ checking

def rebuild(case):
    if case["name"].startswith("big-"):
        return big_problem(case)
    net = empty_net(case)
    tens = case["tensors"]
    with torch.no_grad():
        for k, p in net.named_parameters():
            p.copy_(_t(tens[k]))
    T, B = case["T"], case["B"]
    x = _t(case["dense"]) if case["D"] > 0 else torch.tensor(case["inputs"]).reshape(T, B)
    classes = torch.tensor(case["targets"]).reshape(T, B) if "targets" in case else None
    values = _t(case["values"]) if "values" in case else None
    scored = torch.tensor(case["scored"]).reshape(T, B) if "scored" in case else None
    h0 = _t(tens["h0"]).requires_grad_(True)
    c0 = _t(tens["c0"]).requires_grad_(True) if case["cell"] == "lstm" else None
    wc = _t(tens["wc"]) if case["cell"] == "lstm" else None
    return net, Problem(case, x, classes, values, scored, h0, c0, _t(tens["wh"]), wc)


def same(got, ref, what):
    got = got.detach().contiguous()
    assert list(got.shape) == ref["shape"], what
    if "data" in ref:
        assert torch.equal(got, _t(ref)), what
    else:
        flat = got.reshape(-1)
        assert [float(flat[i]) for i in ref["index"]] == ref["value"], what
        assert float(flat.sum()) == ref["sum"] and float(flat.norm()) == ref["norm"], what


def check_reproduce(case):
    name = case["name"]
    big = name.startswith("big-")
    if big:
        for tname, spec in case["tensors"].items():
            g = spec["lcg"]
            assert spec["check"] == lcg_check(g["seed"], math.prod(spec["shape"]), g["scale"]), (name, tname)
    net, prob = rebuild(case)
    fwd, grads, head, total = forward_and_grads(net, prob)
    zero = prob.zero_state(net)
    assert head.item() == case["loss_head"] and total.item() == case["loss_total"], (name, "losses")
    assert zero[4].item() == case["zero_state"]["loss_head"], (name, "zero-state loss")
    same(zero[1], case["zero_state"]["outputs"], (name, "zero-state outputs"))
    assert set(grads) == set(case["grads"]), (name, sorted(grads))
    for k, g in grads.items():
        same(g, case["grads"][k], (name, k))
    for k, t in fwd.items():
        same(t, case["results"][k], (name, k))


def check_finite_diff(case, eps=1e-6, per_tensor=None):
    """Central differences of loss_total w.r.t. every element (or, with
    per_tensor, that many sampled elements) of every parameter and initial
    state, compared with the stored gradients."""
    net, prob = rebuild(case)

    def f():
        with torch.no_grad():
            return prob.run(net)[5].item()

    worst_abs, worst_rel, n = 0.0, 0.0, 0
    for k, p in prob.leaves(net).items():
        ref = case["grads"][k]
        if "data" in ref:
            pairs = list(enumerate(ref["data"]))
        else:
            pairs = list(zip(ref["index"], ref["value"]))
        if per_tensor is not None:
            pairs = pairs[::max(1, len(pairs) // per_tensor)][:per_tensor]
        flat = p.data.view(-1)
        for i, g in pairs:
            old = flat[i].item()
            flat[i] = old + eps
            fp = f()
            flat[i] = old - eps
            fm = f()
            flat[i] = old
            num = (fp - fm) / (2 * eps)
            a = abs(num - g)
            worst_abs = max(worst_abs, a)
            worst_rel = max(worst_rel, a / max(1e-3, abs(num)))
            n += 1
    return n, worst_abs, worst_rel


def check_gradcheck(case):
    """torch.autograd.gradcheck on loss_total as a function of all leaves."""
    net, prob = rebuild(case)
    names = [n for n, _ in net.named_parameters()]
    lstm = case["cell"] == "lstm"
    init = [p.detach().clone().requires_grad_(True) for p in net.parameters()]
    init.append(prob.h0.detach().clone().requires_grad_(True))
    if lstm:
        init.append(prob.c0.detach().clone().requires_grad_(True))

    def fn(*args):
        params = dict(zip(names, args[:len(names)]))
        hh = args[len(names)]
        state = (hh, args[len(names) + 1]) if lstm else hh
        call = torch.func.functional_call if hasattr(torch, "func") else \
            torch.nn.utils.stateless.functional_call
        _, outputs, final = call(net, params, (prob.x, state))
        hT, cT = final if lstm else (final, None)
        total = prob.head_loss(outputs) + 0.5 * (hT * prob.wh).sum()
        return total + 0.5 * (cT * prob.wc).sum() if lstm else total

    return torch.autograd.gradcheck(fn, tuple(init), eps=1e-6, atol=1e-7, rtol=1e-5)


def check_loop_rnn():
    """LoopRNN with tanh agrees with nn.RNN(tanh) in outputs and gradients:
    the loop that stands in for the missing sigmoid is PyTorch's RNN."""
    worst = 0.0
    for (nin, H, L, B, T) in ((7, 5, 2, 3, 6), (9, 70, 2, 11, 5)):
        torch.manual_seed(7)
        ref = nn.RNN(nin, H, num_layers=L)
        loop = LoopRNN(nin, H, L, torch.tanh)
        with torch.no_grad():
            for (_, p), (_, q) in zip(ref.named_parameters(), loop.named_parameters()):
                q.copy_(p)
        assert [n for n, _ in ref.named_parameters()] == [n for n, _ in loop.named_parameters()]
        x = torch.randn(T, B, nin)
        h0 = torch.randn(L, B, H)
        w = torch.randn(T, B, H)
        outs = []
        for m in (ref, loop):
            top, hT = m(x, h0)
            m.zero_grad()
            ((top * w).sum() + hT.sum()).backward()
            outs.append([top.detach(), hT.detach()] + [p.grad for p in m.parameters()])
        for a, b in zip(*outs):
            worst = max(worst, ((a - b).abs().max() / b.abs().max()).item())
    assert worst < 1e-13, worst
    return worst


def check_min_scan():
    """MinRNN's loop agrees with the closed form of its linear recurrence,
    h_t = A_t h_0 + sum_{k<=t} (A_t / A_k) b_k, A_t = a_1 ... a_t, in outputs
    and gradients: the loop is the recurrence the paper scans in parallel."""
    worst = 0.0
    for cell in ("mingru", "minlstm"):
        torch.manual_seed(9)
        nin, H, L, B, T = 7, 5, 2, 3, 6
        loop = MinRNN(cell, nin, H, L)
        with torch.no_grad():
            for p in loop.parameters():
                p.uniform_(-0.5, 0.5)
        x, h0, w = torch.randn(T, B, nin), torch.randn(L, B, H), torch.randn(T, B, H)

        def closed(m):
            inp, finals = x, []
            for l in range(L):
                a, b = m.coefficients(inp, l)
                A = torch.cumprod(a, 0)
                inp = A * (h0[l] + torch.cumsum(b / A, 0))
                finals.append(inp[-1])
            return inp, torch.stack(finals)

        outs = []
        for run in (loop.forward, lambda x_, h_: closed(loop)):
            top, hT = run(x, h0)
            loop.zero_grad()
            ((top * w).sum() + hT.sum()).backward()
            outs.append([top.detach(), hT.detach()] + [p.grad.clone() for p in loop.parameters()])
        for a, b in zip(*outs):
            worst = max(worst, ((a - b).abs().max() / b.abs().max()).item())
    assert worst < 1e-12, worst
    return worst


def check_layer_norm_loop():
    """LayerNormRNN with every LN the identity agrees with nn.LSTM / nn.GRU in
    outputs and gradients: the loop around F.layer_norm is PyTorch's cell."""
    worst = 0.0
    for cell in ("lstm", "gru"):
        torch.manual_seed(8)
        nin, H, L, B, T = 7, 5, 2, 3, 6
        ref = make_rnn(cell, nin, H, L)
        loop = LayerNormRNN(cell, nin, H, L, norm=False)
        with torch.no_grad():
            for (_, p), (_, q) in zip(ref.named_parameters(), loop.named_parameters()):
                q.copy_(p)
        assert [n for n, _ in ref.named_parameters()] == [n for n, _ in loop.named_parameters()]
        x = torch.randn(T, B, nin)
        state = (torch.randn(L, B, H), torch.randn(L, B, H)) if cell == "lstm" else torch.randn(L, B, H)
        w = torch.randn(T, B, H)
        outs = []
        for m in (ref, loop):
            top, final = m(x, state)
            hT = final[0] if cell == "lstm" else final
            m.zero_grad()
            ((top * w).sum() + hT.sum()).backward()
            outs.append([top.detach(), hT.detach()] + [p.grad for p in m.parameters()])
        for a, b in zip(*outs):
            worst = max(worst, ((a - b).abs().max() / b.abs().max()).item())
    assert worst < 1e-13, worst
    return worst


def fixture_bytes(doc):
    return len(json.dumps(doc, separators=(",", ":"))) + 1


def main():
    doc = {"generator": "tests/reference/make_torch_reference.py",
           "torch_version": torch.__version__,
           "cases": [make_small(*c) for c in SMALL_CASES] + [make_big(*c) for c in BIG_CASES] +
                    [make_small(*c, layer_norm=True) for c in SMALL_LN_CASES] +
                    [make_big(*c, layer_norm=True) for c in BIG_LN_CASES]}
    with open(OUT, "w") as fh:
        json.dump(doc, fh, separators=(",", ":"))
        fh.write("\n")
    size = os.path.getsize(OUT)
    print("wrote %s (%d bytes)" % (OUT, size))
    assert size < 1 << 20, "the fixture must stay under 1 MiB"
    for c in doc["cases"]:
        print("  %-26s loss_head=%.17g loss_total=%.17g" % (c["name"], c["loss_head"], c["loss_total"]))

    if "--check" in sys.argv[1:]:
        with open(OUT) as fh:
            back = json.load(fh)
        for c in back["cases"]:
            check_reproduce(c)
            print("  %-26s reload: losses, forward tensors and grads reproduce bit-exactly" % c["name"])
        for c in back["cases"]:
            big = c["name"].startswith("big-")
            n, wa, wr = check_finite_diff(c, per_tensor=4 if big else None)
            print("  %-26s central differences over %d elements: max abs err %.3g, max rel err %.3g"
                  % (c["name"], n, wa, wr))
            assert wr < 1e-6, c["name"]
        for name in ("lstm-embed", "gru-dense-regress", "lstm-ln-embed", "gru-ln-dense-regress",
                     "mingru-embed", "minlstm-dense-regress"):
            c = next(cc for cc in back["cases"] if cc["name"] == name)
            print("  %-26s torch.autograd.gradcheck: %s" % (name, check_gradcheck(c)))
        print("  LoopRNN(tanh) vs nn.RNN(tanh): max relative difference %.3g" % check_loop_rnn())
        print("  LayerNormRNN without its LNs vs nn.LSTM / nn.GRU: max relative difference %.3g"
              % check_layer_norm_loop())
        print("  MinRNN's loop vs the closed form of its recurrence: max relative difference %.3g"
              % check_min_scan())


if __name__ == "__main__":
    main()
