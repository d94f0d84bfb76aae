#!/bin/sh
# Build the LiteRT server image (x86_64 lab build).
#
# Wheels are downloaded on the host with the host's pip (and its trust settings) and
# installed in the build with --no-index: a build container may not trust the TLS chain
# this machine sees. Each run builds from its own temporary context, so runs may overlap;
# wheels/ (git-ignored) only caches downloads. Usage: images/litert-server/build.sh [tag]
#   PIP=/path/to/pip    pip to download with (default: python3 -m pip)
#   BASE_IMAGE=...      base image (default edgeai-lab/debian:bookworm)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tag=${1:-edgeai/litert-server:0.1.0}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$here/wheels" "$ctx/wheels" "$ctx/src"
cp "$here/Dockerfile" "$here/.dockerignore" "$ctx/"
# The host is the image's platform (Debian 12, CPython 3.11, x86_64), so the host's pip
# picks the right wheels; for another platform see docs/litert-server.md.
${PIP:-python3 -m pip} download --quiet --dest "$ctx/wheels" --find-links "$here/wheels" \
    --only-binary=:all: -r "$here/requirements.lock"
cp -n "$ctx"/wheels/*.whl "$here/wheels/" 2>/dev/null || true
# the package's own wheel, built from a copy so the source tree gets no build/ or egg-info
cp -r "$here/pyproject.toml" "$here/README.md" "$here/src" "$ctx/src/"
# The config.pbtxt parser is the collection's plugins/module_utils/_pbtxt.py: the image gets
# that file, and the committed copy (which the package's tests use) is refreshed when it
# differs (commit it then; tests/test_pbtxt.py fails until both are the same).
original="$here/../../plugins/module_utils/_pbtxt.py"
copy="$here/src/litert_server/_pbtxt.py"
if [ -f "$original" ]; then
    cp "$original" "$ctx/src/src/litert_server/_pbtxt.py"
    if ! cmp -s "$original" "$copy"; then
        cp "$original" "$copy"
        echo "build.sh: refreshed src/litert_server/_pbtxt.py from plugins/module_utils/_pbtxt.py; commit it" >&2
    fi
else
    echo "build.sh: $original not found (not a collection checkout); using the committed copy" >&2
fi
${PIP:-python3 -m pip} wheel --quiet --no-deps --wheel-dir "$ctx/wheels" "$ctx/src"
rm -rf "$ctx/src"
docker build \
    --build-arg "BASE_IMAGE=${BASE_IMAGE:-edgeai-lab/debian:bookworm}" \
    -t "$tag" "$ctx"
