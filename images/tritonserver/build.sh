#!/bin/sh
# Build the CPU stand-in Triton image.
#
# The wheel is downloaded on the host with the host's pip (and its trust settings), then
# handed to the build through the context: a build container may not trust the TLS chain
# this machine sees. Usage: images/tritonserver/build.sh [tag]
#   PIP=/path/to/pip    pip to download with (default: python3 -m pip)
#   BASE_IMAGE=...      base image (default edgeai-lab/debian:bookworm)
#   ONNXRUNTIME_VERSION=...  the onnxruntime wheel of the onnxruntime backend stand-in (1.31.1)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tag=${1:-edgeai/tritonserver:2.51-cpu}
version=${PYTRITON_VERSION:-0.7.0}
wheel="nvidia_pytriton-${version}-py3-none-manylinux_2_35_x86_64.whl"
mkdir -p "$here/wheels"
if [ ! -f "$here/wheels/$wheel" ]; then
    ${PIP:-python3 -m pip} download --no-deps --dest "$here/wheels" "nvidia-pytriton==${version}"
fi
# the image's Python (Debian's 3.11, x86_64): the wheel for it, whatever Python runs pip here
ort_version=${ONNXRUNTIME_VERSION:-1.31.1}
ort_wheel=$(ls "$here/wheels/onnxruntime-${ort_version}-cp311-cp311-manylinux"*_x86_64.whl 2>/dev/null | head -n 1)
if [ -z "$ort_wheel" ]; then
    ${PIP:-python3 -m pip} download --no-deps --only-binary=:all: --python-version 3.11 \
        --platform manylinux_2_28_x86_64 --dest "$here/wheels" "onnxruntime==${ort_version}"
    ort_wheel=$(ls "$here/wheels/onnxruntime-${ort_version}-cp311-cp311-manylinux"*_x86_64.whl | head -n 1)
fi
exec docker build \
    --build-arg "BASE_IMAGE=${BASE_IMAGE:-edgeai-lab/debian:bookworm}" \
    --build-arg "PYTRITON_VERSION=${version}" \
    --build-arg "PYTRITON_WHEEL=wheels/${wheel}" \
    --build-arg "ONNXRUNTIME_VERSION=${ort_version}" \
    --build-arg "ONNXRUNTIME_WHEEL=wheels/$(basename "$ort_wheel")" \
    -t "$tag" "$here"
