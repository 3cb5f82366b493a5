#!/usr/bin/env python3
"""PyTorch peer of `crates/seht-bench/examples/conv_speed.rs`: milliseconds of
a convolution's forward pass, input gradient and kernel gradient (median of
5, f32, batch 32, the shapes of a full-width CIFAR ResNet-18) and GFLOP/s of
the three together (2 flops per multiply-add).

    python bench/peer/torch_conv.py [--threads 2]

The gradient times are those of `forward + backward` of `sum(conv(x, w) * c)`
with only the input (or only the kernel) requiring a gradient, minus the
forward time, as in conv_speed.rs; they include the elementwise product's
backward, in both.
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

# (c_in, c_out, size, k, stride, padding), as conv_speed.rs
LAYERS = [
    (3, 64, 32, 3, 1, 1),
    (64, 64, 32, 3, 1, 1),
    (64, 128, 32, 3, 2, 1),
    (128, 128, 16, 3, 1, 1),
    (64, 128, 32, 1, 2, 0),
    (256, 256, 8, 3, 1, 1),
    (512, 512, 4, 3, 1, 1),
]


def median_ms(f):
    f()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        f()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print("layer,impl,forward_ms,input_grad_ms,kernel_grad_ms,gflops")
    for ci, co, size, k, s, p in LAYERS:
        x = torch.randn(32, ci, size, size)
        w = torch.randn(co, ci, k, k) * 0.1
        y = F.conv2d(x, w, stride=s, padding=p)
        c = torch.randn_like(y)
        fwd = median_ms(lambda: F.conv2d(x, w, stride=s, padding=p))
        xr, wr = x.clone().requires_grad_(True), w.clone().requires_grad_(True)

        def input_grad():
            torch.autograd.grad((F.conv2d(xr, w, stride=s, padding=p) * c).sum(), xr)

        def kernel_grad():
            torch.autograd.grad((F.conv2d(x, wr, stride=s, padding=p) * c).sum(), wr)

        din, dk = median_ms(input_grad) - fwd, median_ms(kernel_grad) - fwd
        macs = 32 * co * y.shape[2] * y.shape[3] * ci * k * k
        gflops = 3 * 2 * macs / ((fwd + din + dk) * 1e-3) / 1e9
        print(f"{ci}x{co}x{size}/k{k}s{s},torch,{fwd:.1f},{din:.1f},{dk:.1f},{gflops:.1f}")


if __name__ == "__main__":
    main()
