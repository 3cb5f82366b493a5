#!/usr/bin/env python3
"""Writes data/shipped/fashion-mnist/: a class-balanced subset of Fashion-MNIST
(the first PER_CLASS_TRAIN images of each class of the training set, the first
PER_CLASS_TEST of each class of the test set, in file order) in the original
gzipped IDX format, and SHA256SUMS. Deterministic: gzip headers carry no
name or time, so rerunning it reproduces the committed bytes.

Source: Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist),
the files of https://github.com/zalandoresearch/fashion-mnist (MIT licence).
Usage: python3 scripts/make-shipped-fashion-mnist.py [SOURCE_DIR]
           [--train-per-class N] [--test-per-class N] [--out DIR]
Defaults: 800 and 200 per class (8,000 training and 2,000 test images, the
shipped set since issue 37), written to data/shipped/fashion-mnist. The set
shipped before it (300 and 100 per class) is the first 300/100 of each class
of this one; `--train-per-class 300 --test-per-class 100 --out DIR` rebuilds
it, byte for byte, for results measured on it (docs/analysis/estimators.md).
"""
import argparse
import gzip
import hashlib
import os
import struct

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "shipped", "fashion-mnist")
parser = argparse.ArgumentParser(description="Writes the shipped class-balanced Fashion-MNIST subset.")
parser.add_argument("source", nargs="?", default="/usr/share/datasets/fashion-mnist")
parser.add_argument("--train-per-class", type=int, default=800)
parser.add_argument("--test-per-class", type=int, default=200)
parser.add_argument("--out", default=DEFAULT_OUT)
args = parser.parse_args()
SRC, OUT = args.source, args.out
PER_CLASS_TRAIN, PER_CLASS_TEST = args.train_per_class, args.test_per_class


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    assert data[0] == 0 and data[1] == 0 and data[2] == 8, path
    nd = data[3]
    dims = struct.unpack(">" + "I" * nd, data[4 : 4 + 4 * nd])
    return dims, data[4 + 4 * nd :]


def write_idx(path, dims, payload):
    header = bytes([0, 0, 8, len(dims)]) + struct.pack(">" + "I" * len(dims), *dims)
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=raw, mtime=0) as f:
            f.write(header + payload)


def subset(prefix, per_class):
    (n, h, w), pixels = read_idx(os.path.join(SRC, f"{prefix}-images-idx3-ubyte.gz"))
    (m,), labels = read_idx(os.path.join(SRC, f"{prefix}-labels-idx1-ubyte.gz"))
    assert n == m
    taken, keep = [0] * 10, []
    for i, label in enumerate(labels):
        if taken[label] < per_class:
            taken[label] += 1
            keep.append(i)
    assert taken == [per_class] * 10, taken
    size = h * w
    write_idx(
        os.path.join(OUT, f"{prefix}-images-idx3-ubyte.gz"),
        (len(keep), h, w),
        b"".join(pixels[i * size : (i + 1) * size] for i in keep),
    )
    write_idx(os.path.join(OUT, f"{prefix}-labels-idx1-ubyte.gz"), (len(keep),), bytes(labels[i] for i in keep))


os.makedirs(OUT, exist_ok=True)
subset("train", PER_CLASS_TRAIN)
subset("t10k", PER_CLASS_TEST)
names = sorted(f for f in os.listdir(OUT) if f.endswith(".gz"))
with open(os.path.join(OUT, "SHA256SUMS"), "w") as f:
    for name in names:
        with open(os.path.join(OUT, name), "rb") as g:
            f.write(f"{hashlib.sha256(g.read()).hexdigest()}  {name}\n")
