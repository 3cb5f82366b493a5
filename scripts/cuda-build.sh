#!/usr/bin/env bash
# Builds the workspace with candle's CUDA backend on a machine without a GPU
# or a system CUDA toolkit: NVIDIA's compiler and runtime headers come from
# PyPI (the 13.0 series, matching the driver of the H100/H200 machines).
#
#   scripts/cuda-build.sh            # toolkit into .cuda-venv, then build
#   CUDA_COMPUTE_CAP=80 scripts/cuda-build.sh   # another GPU (default 90 = H100/H200)
#
# Produces target-cuda/release/examples/gpu_check, the GPU check to carry to a
# GPU machine (it needs the NVIDIA driver and CUDA 13 libraries there, no Rust).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${CUDA_VENV:-$root/.cuda-venv}
if [ ! -x "$venv/bin/pip" ]; then
  python3 -m venv "$venv"
fi
# Pin every part to 13.0: pip otherwise pulls a newer nvvm/crt than nvcc.
# cccl holds the headers cuda_fp16.h includes (nv/target).
"$venv/bin/pip" install --quiet "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-runtime==13.0.*" \
  "nvidia-nvvm==13.0.*" "nvidia-cuda-crt==13.0.*" "nvidia-cuda-cccl==13.0.*"
cuda=$(echo "$venv"/lib/python3*/site-packages/nvidia/cu13)
# The linker looks for libcudart.so; the wheel ships only the versioned name.
ln -sf libcudart.so.13 "$cuda/lib/libcudart.so"
export CUDA_HOME=$cuda PATH=$cuda/bin:$PATH
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export RUSTFLAGS="${RUSTFLAGS:-} -L $cuda/lib"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target-cuda}
nvcc --version | tail -2
cd "$root"
cargo build --locked --workspace --features cuda
cargo build --locked --release -p seht-bench --features cuda --example gpu_check
echo "built $CARGO_TARGET_DIR/release/examples/gpu_check"
