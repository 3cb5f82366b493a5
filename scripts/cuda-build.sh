#!/usr/bin/env bash
# Builds the workspace with candle's CUDA backend on a machine without a GPU
# or a system CUDA toolkit: NVIDIA's compiler and runtime headers come from
# PyPI (the 13.0 series, matching the driver of the H100/H200 machines).
#
#   scripts/cuda-build.sh            # toolkit into .cuda-venv, then build
#   CUDA_COMPUTE_CAP=80 scripts/cuda-build.sh   # another GPU (default 90 = H100/H200)
#
# Produces target-cuda/debug/examples/gpu_check, the GPU check to carry to a
# GPU machine (it needs the NVIDIA driver and CUDA 13 libraries there, no Rust).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${CUDA_VENV:-$root/.cuda-venv}
if [ ! -x "$venv/bin/pip" ]; then
  python3 -m venv "$venv"
fi
# Pin every part to 13.0: pip otherwise pulls a newer nvvm/crt than nvcc.
# cccl holds the headers cuda_fp16.h includes (nv/target).
# candle links cuBLAS, cuBLASLt, cuRAND and NVRTC dynamically: their wheels
# provide the libraries to link against (the GPU machine provides its own).
"$venv/bin/pip" install --quiet "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-runtime==13.0.*" \
  "nvidia-nvvm==13.0.*" "nvidia-cuda-crt==13.0.*" "nvidia-cuda-cccl==13.0.*" \
  "nvidia-cublas==13.0.*" "nvidia-curand==10.4.0.*" "nvidia-cuda-nvrtc==13.0.*"
cuda=$(echo "$venv"/lib/python3*/site-packages/nvidia/cu13)
# The linker looks for libX.so; the wheels ship only the versioned names.
for l in cudart.so.13 cublas.so.13 cublasLt.so.13 curand.so.10 nvrtc.so.13; do
  ln -sf "lib$l" "$cuda/lib/lib${l%.so.*}.so"
done
# libcuda (the driver API) comes with the NVIDIA driver, not with any wheel.
# Link against a stub exporting the driver's function names under the
# driver's soname, libcuda.so.1, as the CUDA toolkit's own stubs do; at run
# time the real driver is loaded.
# (Typedef names carry a version suffix, e.g. PFN_cuProfilerInitialize_v4000:
# each name is also taken without it.)
grep -ohE 'cu[A-Z][A-Za-z0-9_]*' "$cuda/include/cuda.h" "$cuda/include/cudaProfilerTypedefs.h" |
  sed -E 'p; s/_v[0-9]+$//' | sort -u |
  sed 's/.*/void &(void) {}/' > "$cuda/libcuda_stub.c"
cc -shared -fPIC -o "$cuda/lib/libcuda.so" -Wl,-soname,libcuda.so.1 "$cuda/libcuda_stub.c"
export CUDA_HOME=$cuda PATH=$cuda/bin:$PATH
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export RUSTFLAGS="${RUSTFLAGS:-} -L $cuda/lib"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target-cuda}
nvcc --version | tail -2
cd "$root"
cargo build --locked --workspace --features cuda
# The GPU check, in the same profile and with the same workspace-wide feature
# set as the build above, so nothing (candle's CUDA kernels above all) is
# compiled twice; the dev profile builds dependencies at opt-level 3.
cargo build --locked --workspace --features cuda --examples
echo "built $CARGO_TARGET_DIR/debug/examples/gpu_check"
