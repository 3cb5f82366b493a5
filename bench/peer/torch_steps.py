#!/usr/bin/env python3
"""PyTorch peer of `crates/seht-bench/examples/step_memory.rs`: the working
memory and time of one training step on the CPU, one configuration per
process.

    python bench/peer/torch_steps.py MODEL BATCH STEP [--threads 2] [--retain]

MODEL (the names of step_memory): resnet18 (CIFAR ResNet-18, full width,
`ResNetConfig::narrow(3, 10, 64, [2, 2, 2, 2])`), resnet16 (the same with
widths 16, 32, 64, 128 and one block per stage, `Model::ResNet { width: 16,
blocks: 1 }`), mlp (`Model::Mlp { hidden: 512 }`: linear layers fc0, fc1, fc2,
3072 -> 512 -> 512 -> 10 with biases, ReLU between them, no normalisation, on
flattened 3x32x32 inputs), wrn28-10 (WRN-28-10, dropout 0.3, 10 classes), lstm
(2-layer LSTM LM, vocabulary 10,000, embedding = hidden = 512, dropout 0.5,
batch 20 x 35; BATCH is ignored and printed as 20).

STEP:
  plain        forward, gradient of the loss for every trainable parameter
  hvp          forward, g = dL/dw on the graph, one Hessian-vector product
               with a Rademacher probe over all weights (second pass without
               a graph)
  exact-h1     SEHT-H K = 1 exact penalised step: loss + 1e-3 * v'Hv with Hv
               on the graph, then the gradient of the total (third-order pass)
  exact-d      the same with a SEHT-D p = 0.05 probe: each weight tensor drawn
               with probability 0.05 (redrawn until one is, so this is the
               cost of a step whose draw selected layers, as step_memory's),
               probe zero elsewhere, g.v and v'Hv over the drawn tensors,
               scaled by 1/p
  first-order  three forward/backward passes (w, w + eps*s, w - eps*s) and the
               finite-difference combination, as `seht_candle`'s first-order
               penalty (ReLU masks of the first pass replayed in the others)

"Weights" (the penalised parameters) are this project's `Role::Weight`:
convolution kernels, linear/decoder matrices, the embedding and the LSTM
input/recurrent matrices; never BatchNorm scales/shifts or biases. Their
number is SEHT-D's number of layers L.

As in our candle models, BatchNorm is written from elementary ops in training
mode (batch mean and biased variance over N, H, W; eps = 1e-5; running
statistics updated off the graph), ReLU is `x * mask(x > 0)` and dropout
multiplies by a float mask; f32 throughout.

Measurement: build the model and batch, run one plain step (warm-up), read
VmRSS (`base`), reset the peak (`5` into /proc/self/clear_refs), run the step
once and read VmHWM (`peak`); then time the step 3 more times (fewer if they
would not fit in --budget-s) and report the median. Prints one CSV line

    torch,MODEL,BATCH,STEP,working_gib,peak_rss_gib,median_s,working_from_build_gib,weight_tensors

with working = peak - base and working_from_build = peak - (VmRSS right after
building, before the warm-up), in GiB (2^30 bytes), median_s in seconds (to
10 us), and weight_tensors the number of weight tensors (added last: readers
of the first eight fields are unaffected). PyTorch keeps what the warm-up
freed, so `working` understates a plain step (about 0); compare
`working_from_build` with `step_memory`'s `working_gib`, which is measured
from the RSS before the first step. Details go to stderr.
"""

import argparse
import ctypes
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F

GIB = float(1 << 30)
EPS_BN = 1e-5
MOMENTUM_BN = 0.1
LAMBDA = 1e-3
P_LAYER = 0.05
STEPS = ("plain", "hvp", "exact-h1", "exact-d", "first-order")
MODELS = ("mlp", "resnet16", "resnet18", "wrn28-10", "lstm")


def status_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line[len(field):].split()[0]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


# --------------------------------------------------------------------------
# Activation pattern (seht_candle::pattern): ReLU masks recorded by one pass
# and replayed by the perturbed passes of the first-order step.


class Pattern:
    def __init__(self):
        self.mode = None  # None, "record" or "replay"
        self.masks = []
        self.next = 0

    def mask(self, x):
        if self.mode == "replay":
            m = self.masks[self.next]
            self.next += 1
            return m
        m = x.detach() > 0
        if self.mode == "record":
            self.masks.append(m)
        return m


PATTERN = Pattern()


def relu(x):
    # seht_candle::ops::relu: x times the mask of x > 0 (mask stored as u8
    # there, bool here), in x's dtype.
    return x * PATTERN.mask(x).to(x.dtype)


def dropout(x, p, seed, site):
    # Inverted dropout with a float mask drawn from (seed, site), so that the
    # three passes of a first-order step see the same masks.
    if p <= 0.0:
        return x
    g = torch.Generator().manual_seed(seed * 1_000_003 + site)
    keep = 1.0 - p
    mask = (torch.rand(x.shape, generator=g) < keep).to(x.dtype) * (1.0 / keep)
    return x * mask


# --------------------------------------------------------------------------
# Layers with explicit parameters (name -> tensor), roles as in the project.


class Net:
    def __init__(self):
        self.params = {}  # name -> leaf tensor (requires_grad)
        self.roles = {}  # name -> "weight" | "bias" | "norm_weight" | "norm_bias"
        self.buffers = {}  # BatchNorm running statistics

    def add(self, name, t, role):
        t.requires_grad_(True)
        self.params[name] = t
        self.roles[name] = role
        return t

    def conv(self, name, c_in, c_out, k):
        w = torch.empty(c_out, c_in, k, k)
        torch.nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        self.add(f"{name}.weight", w, "weight")

    def linear(self, name, d_in, d_out):
        w = torch.empty(d_out, d_in)
        torch.nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        self.add(f"{name}.weight", w, "weight")
        bound = 1.0 / math.sqrt(d_in)
        self.add(f"{name}.bias", torch.empty(d_out).uniform_(-bound, bound), "bias")

    def bn(self, name, c):
        self.add(f"{name}.weight", torch.ones(c), "norm_weight")
        self.add(f"{name}.bias", torch.zeros(c), "norm_bias")
        self.buffers[f"{name}.running_mean"] = torch.zeros(c)
        self.buffers[f"{name}.running_var"] = torch.ones(c)

    def conv_f(self, name, x, stride, padding):
        return F.conv2d(x, self.params[f"{name}.weight"], None, stride, padding)

    def linear_f(self, name, x):
        return x.matmul(self.params[f"{name}.weight"].t()) + self.params[f"{name}.bias"]

    def bn_f(self, name, x):
        # Training-mode BatchNorm from elementary ops (candle_nn::BatchNorm::
        # forward_train): batch mean and biased variance per channel.
        c = x.shape[1]
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        xc = x - mean
        var = (xc * xc).mean(dim=(0, 2, 3), keepdim=True)
        with torch.no_grad():
            n = x.numel() // c
            rm, rv = self.buffers[f"{name}.running_mean"], self.buffers[f"{name}.running_var"]
            rm.mul_(1 - MOMENTUM_BN).add_(mean.flatten(), alpha=MOMENTUM_BN)
            rv.mul_(1 - MOMENTUM_BN).add_(var.flatten(), alpha=MOMENTUM_BN * n / max(n - 1, 1))
        y = xc / torch.sqrt(var + EPS_BN)
        w = self.params[f"{name}.weight"].reshape(1, c, 1, 1)
        b = self.params[f"{name}.bias"].reshape(1, c, 1, 1)
        return y * w + b

    def weights(self):
        # ParamSet order: name-sorted.
        return [self.params[n] for n in sorted(self.params) if self.roles[n] == "weight"]

    def trainable(self):
        return [self.params[n] for n in sorted(self.params)]


def gap(x):
    # seht_candle::ops::global_avg_pool
    return x.flatten(2).mean(-1)


class ResNet18(Net):
    """kuangliu/pytorch-cifar ResNet-18 as in crates/seht-models/src/resnet.rs."""

    def __init__(self, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), classes=10):
        super().__init__()
        self.conv("conv1", 3, widths[0], 3)
        self.bn("bn1", widths[0])
        self.blocks = []
        c_in = widths[0]
        for s, (w, n) in enumerate(zip(widths, blocks)):
            for i in range(n):
                stride = (1 if s == 0 else 2) if i == 0 else 1
                p = f"layer{s + 1}.{i}"
                self.conv(f"{p}.conv1", c_in, w, 3)
                self.bn(f"{p}.bn1", w)
                self.conv(f"{p}.conv2", w, w, 3)
                self.bn(f"{p}.bn2", w)
                short = stride != 1 or c_in != w
                if short:
                    self.conv(f"{p}.shortcut.0", c_in, w, 1)
                    self.bn(f"{p}.shortcut.1", w)
                self.blocks.append((p, stride, short))
                c_in = w
        self.linear("linear", c_in, classes)

    def logits(self, x, seed):
        h = relu(self.bn_f("bn1", self.conv_f("conv1", x, 1, 1)))
        for p, stride, short in self.blocks:
            o = relu(self.bn_f(f"{p}.bn1", self.conv_f(f"{p}.conv1", h, stride, 1)))
            o = self.bn_f(f"{p}.bn2", self.conv_f(f"{p}.conv2", o, 1, 1))
            skip = self.bn_f(f"{p}.shortcut.1", self.conv_f(f"{p}.shortcut.0", h, stride, 0)) if short else h
            h = relu(o + skip)
        return self.linear_f("linear", gap(h))


class Mlp(Net):
    """seht_bench's `Model::Mlp`: candle_nn linear layers `fcN` (weight role
    "weight", bias role "bias"), ReLU between them, on flattened images."""

    def __init__(self, dims=(3 * 32 * 32, 512, 512, 10)):
        super().__init__()
        self.n = len(dims) - 1
        for i in range(self.n):
            self.linear(f"fc{i}", dims[i], dims[i + 1])

    def logits(self, x, seed):
        h = x.flatten(1)
        for i in range(self.n):
            h = self.linear_f(f"fc{i}", h)
            if i + 1 < self.n:
                h = relu(h)
        return h


class WideResNet(Net):
    """WRN-d-k as in crates/seht-models/src/wrn.rs (pre-activation blocks)."""

    def __init__(self, depth=28, widen=10, drop=0.3, classes=10):
        super().__init__()
        n = (depth - 4) // 6
        w = [16, 16 * widen, 32 * widen, 64 * widen]
        self.drop = drop
        self.conv("conv1", 3, w[0], 3)
        self.blocks = []
        c_in = w[0]
        for g in range(3):
            for i in range(n):
                stride = (1 if g == 0 else 2) if i == 0 else 1
                p = f"block{g + 1}.layer.{i}"
                self.bn(f"{p}.bn1", c_in)
                self.conv(f"{p}.conv1", c_in, w[g + 1], 3)
                self.bn(f"{p}.bn2", w[g + 1])
                self.conv(f"{p}.conv2", w[g + 1], w[g + 1], 3)
                short = c_in != w[g + 1] or stride != 1
                if short:
                    self.conv(f"{p}.convShortcut", c_in, w[g + 1], 1)
                self.blocks.append((p, stride, short, len(self.blocks)))
                c_in = w[g + 1]
        self.bn("bn1", c_in)
        self.linear("fc", c_in, classes)

    def logits(self, x, seed):
        h = self.conv_f("conv1", x, 1, 1)
        for p, stride, short, site in self.blocks:
            act = relu(self.bn_f(f"{p}.bn1", h))
            o = self.conv_f(f"{p}.conv1", act, stride, 1)
            o = relu(self.bn_f(f"{p}.bn2", o))
            o = self.conv_f(f"{p}.conv2", dropout(o, self.drop, seed, site), 1, 1)
            skip = self.conv_f(f"{p}.convShortcut", act, stride, 0) if short else h
            h = o + skip
        h = relu(self.bn_f("bn1", h))
        return self.linear_f("fc", gap(h))


class LstmLm(Net):
    """crates/seht-models/src/rnn_lm.rs with RnnKind::Lstm, untied."""

    def __init__(self, vocab=10_000, emb=512, hidden=512, layers=2, drop=0.5, init=0.1):
        super().__init__()
        self.vocab, self.hidden, self.layers, self.drop = vocab, hidden, layers, drop
        u = lambda *s: torch.empty(*s).uniform_(-init, init)
        self.add("encoder.weight", u(vocab, emb), "weight")
        for l in range(layers):
            d_in = emb if l == 0 else hidden
            self.add(f"rnn.{l}.weight_ih_l0", u(4 * hidden, d_in), "weight")
            self.add(f"rnn.{l}.weight_hh_l0", u(4 * hidden, hidden), "weight")
            self.add(f"rnn.{l}.bias_ih_l0", torch.zeros(4 * hidden), "bias")
            self.add(f"rnn.{l}.bias_hh_l0", torch.zeros(4 * hidden), "bias")
        self.add("decoder.weight", u(vocab, hidden), "weight")
        self.add("decoder.bias", torch.zeros(vocab), "bias")

    def logits(self, tokens, seed):
        b, s = tokens.shape
        P = self.params
        h = P["encoder.weight"].index_select(0, tokens.flatten()).reshape(b, s, -1)
        h = dropout(h, self.drop, seed, 0)
        for l in range(self.layers):
            w_ih, w_hh = P[f"rnn.{l}.weight_ih_l0"], P[f"rnn.{l}.weight_hh_l0"]
            b_ih, b_hh = P[f"rnn.{l}.bias_ih_l0"], P[f"rnn.{l}.bias_hh_l0"]
            hh = torch.zeros(b, self.hidden)
            cc = torch.zeros(b, self.hidden)
            outs = []
            for t in range(s):
                # candle_nn::LSTM::step
                gates = (h[:, t, :].contiguous().matmul(w_ih.t()) + b_ih) + (hh.matmul(w_hh.t()) + b_hh)
                i, f, g, o = gates.chunk(4, 1)
                cc = torch.sigmoid(f) * cc + torch.sigmoid(i) * torch.tanh(g)
                hh = torch.sigmoid(o) * torch.tanh(cc)
                outs.append(hh)
            h = dropout(torch.stack(outs, 1), self.drop, seed, 1 + l)
        logits = h.reshape(b * s, self.hidden).matmul(P["decoder.weight"].t()) + P["decoder.bias"]
        return logits.reshape(b, s, self.vocab)


# --------------------------------------------------------------------------


class Workload:
    def __init__(self, model, batch):
        torch.manual_seed(0)
        if model == "resnet18":
            self.net = ResNet18()
        elif model == "resnet16":
            self.net = ResNet18(widths=(16, 32, 64, 128), blocks=(1, 1, 1, 1))
        elif model == "mlp":
            self.net = Mlp()
        elif model == "wrn28-10":
            self.net = WideResNet()
        elif model == "lstm":
            self.net = LstmLm()
        else:
            raise SystemExit(f"unknown model `{model}`: {', '.join(MODELS)}")
        labels = lambda n, c: torch.tensor([(i * 7 + 3) % c for i in range(n)], dtype=torch.long)
        if model == "lstm":
            toks = labels(20 * 36, 10_000).reshape(20, 36)
            self.xs, self.ys = toks[:, :35].contiguous(), toks[:, 1:].contiguous()
        elif model == "mlp":
            self.xs = torch.randn(batch, 3 * 32 * 32, generator=torch.Generator().manual_seed(1))
            self.ys = labels(batch, 10)
        else:
            self.xs = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1))
            self.ys = labels(batch, 10)
        self.weights = self.net.weights()
        self.trainable = self.net.trainable()
        self.probe_gen = torch.Generator().manual_seed(3)
        self.layer_gen = torch.Generator().manual_seed(4)

    def loss(self, seed=0):
        logits = self.net.logits(self.xs, seed)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), self.ys.flatten())

    def rademacher(self, like):
        return torch.randint(0, 2, like.shape, generator=self.probe_gen).to(like.dtype) * 2 - 1

    # --- steps -------------------------------------------------------------

    def plain(self):
        return torch.autograd.grad(self.loss(0), self.trainable)

    def hvp(self):
        loss = self.loss(0)
        g = torch.autograd.grad(loss, self.weights, create_graph=True)
        v = [self.rademacher(w) for w in self.weights]
        gv = sum((gi * vi).sum() for gi, vi in zip(g, v))
        return torch.autograd.grad(gv, self.weights)

    def penalised(self, subset):
        loss = self.loss(0)
        g = torch.autograd.grad(loss, self.weights, create_graph=True)
        if subset:
            while True:
                draw = torch.rand(len(self.weights), generator=self.layer_gen) < P_LAYER
                if draw.any():
                    break
            idx = [i for i in range(len(self.weights)) if draw[i]]
            scale = 1.0 / P_LAYER
        else:
            idx = list(range(len(self.weights)))
            scale = 1.0
        ws = [self.weights[i] for i in idx]
        v = [self.rademacher(w) for w in ws]
        gv = sum((g[i] * vi).sum() for i, vi in zip(idx, v))
        hv = torch.autograd.grad(gv, ws, create_graph=True, allow_unused=True)
        q = sum((h * vi).sum() for h, vi in zip(hv, v) if h is not None)
        total = loss + (LAMBDA * scale) * q
        return torch.autograd.grad(total, self.trainable, allow_unused=True)

    def first_order(self, relative_step=2e-2):
        idx = {id(t): k for k, t in enumerate(self.trainable)}
        wk = [idx[id(w)] for w in self.weights]
        PATTERN.mode, PATTERN.masks = "record", []
        try:
            g0 = torch.autograd.grad(self.loss(0), self.trainable)
        finally:
            PATTERN.mode = None
        w0 = [w.detach().clone() for w in self.weights]
        saved = {k: b.clone() for k, b in self.net.buffers.items()}
        w_norm = math.sqrt(sum(float((w * w).sum()) for w in w0))
        sig = [self.rademacher(w) for w in self.weights]
        s_norm = math.sqrt(sum(s.numel() for s in sig))
        eps = relative_step * max(w_norm, 1e-12) / s_norm
        es = [s.mul_(eps) for s in sig]

        def pass_(sign):
            with torch.no_grad():
                for w, a, d in zip(self.weights, w0, es):
                    w.copy_(a + sign * d)
            PATTERN.mode, PATTERN.next = "replay", 0
            try:
                return torch.autograd.grad(self.loss(0), self.trainable)
            finally:
                PATTERN.mode = None

        try:
            gp = pass_(1.0)
            gm = pass_(-1.0)
        finally:
            with torch.no_grad():
                for w, a in zip(self.weights, w0):
                    w.copy_(a)
                for k, b in self.net.buffers.items():
                    b.copy_(saved[k])
            PATTERN.masks = []
        q = sum(float(((gp[k] - gm[k]) * d).sum()) for k, d in zip(wk, es)) / (2 * eps * eps)
        c = LAMBDA
        a = 1.0 / (eps * eps)
        grads = [g * (1 - 2 * c * a) + (p + m) * (c * a) for g, p, m in zip(g0, gp, gm)]
        return q, grads

    def step(self, kind):
        if kind == "plain":
            return self.plain()
        if kind == "hvp":
            return self.hvp()
        if kind == "exact-h1":
            return self.penalised(subset=False)
        if kind == "exact-d":
            return self.penalised(subset=True)
        if kind == "first-order":
            return self.first_order()
        raise SystemExit(f"unknown step `{kind}`: {', '.join(STEPS)}")


def retain_freed_memory():
    # seht_candle::retain_freed_memory: glibc keeps freed blocks (mmap
    # threshold 32 MiB, no trimming, 64 MiB top pad).
    libc = ctypes.CDLL("libc.so.6")
    return all(libc.mallopt(p, v) == 1 for p, v in ((-3, 32 << 20), (-1, -1), (-2, 64 << 20)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", choices=MODELS)
    ap.add_argument("batch", type=int)
    ap.add_argument("step", choices=STEPS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3, help="timed steps after the measured one")
    ap.add_argument("--budget-s", type=float, default=float("inf"),
                    help="skip timed steps that would end past this many seconds from the start")
    ap.add_argument("--retain", action="store_true",
                    help="glibc malloc settings of seht_candle::retain_freed_memory")
    a = ap.parse_args()
    t_start = time.perf_counter()
    torch.set_num_threads(a.threads)
    if a.retain:
        retain_freed_memory()
    batch = 20 if a.model == "lstm" else a.batch
    w = Workload(a.model, batch)
    rss_built = status_bytes("VmRSS:")
    w.plain()  # warm-up
    base = status_bytes("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    t0 = time.perf_counter()
    out = w.step(a.step)
    t_measured = time.perf_counter() - t0
    peak = status_bytes("VmHWM:")
    del out
    times = []
    for _ in range(a.reps):
        if time.perf_counter() - t_start + t_measured * 1.2 > a.budget_s:
            break
        t0 = time.perf_counter()
        out = w.step(a.step)
        times.append(time.perf_counter() - t0)
        del out
    median = statistics.median(times) if times else t_measured
    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{len(w.weights)} weight tensors ({sum(p.numel() for p in w.weights):,} weights, "
        f"{sum(p.numel() for p in w.trainable):,} trainable); RSS built {rss_built / GIB:.3f} GiB, "
        f"after warm-up {base / GIB:.3f} GiB; measured step {t_measured:.3f} s; "
        f"timed {len(times)} steps{'' if times else ' (median_s is the measured step)'}",
        file=sys.stderr,
    )
    print(
        f"torch,{a.model},{batch},{a.step},{(peak - base) / GIB:.3f},{peak / GIB:.3f},{median:.5f},"
        f"{(peak - rss_built) / GIB:.3f},{len(w.weights)}",
        flush=True,
    )


if __name__ == "__main__":
    main()
