#!/bin/sh
# Build the CPU stand-in Triton image.
#
# The wheel is downloaded on the host with the host's pip (and its trust settings), then
# handed to the build through the context: a build container may not trust the TLS chain
# this machine sees. Usage: images/tritonserver/build.sh [tag]
#   PIP=/path/to/pip    pip to download with (default: python3 -m pip)
#   BASE_IMAGE=...      base image (default edgeai-lab/debian:bookworm)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tag=${1:-edgeai/tritonserver:2.51-cpu}
version=${PYTRITON_VERSION:-0.7.0}
wheel="nvidia_pytriton-${version}-py3-none-manylinux_2_35_x86_64.whl"
mkdir -p "$here/wheels"
if [ ! -f "$here/wheels/$wheel" ]; then
    ${PIP:-python3 -m pip} download --no-deps --dest "$here/wheels" "nvidia-pytriton==${version}"
fi
exec docker build \
    --build-arg "BASE_IMAGE=${BASE_IMAGE:-edgeai-lab/debian:bookworm}" \
    --build-arg "PYTRITON_VERSION=${version}" \
    --build-arg "PYTRITON_WHEEL=wheels/${wheel}" \
    -t "$tag" "$here"
