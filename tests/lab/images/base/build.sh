#!/bin/sh
# Recipe of the lab's Debian base image (edgeai-lab/debian:bookworm).
# The lab rebuilds the image when the hash of this file changes (label edgeai.lab.recipe).
# Usage: build.sh <mirror-url> <image:tag> <recipe-hash> <workdir>
set -eu
mirror=$1; image=$2; recipe=$3; work=$4
rootfs="$work/rootfs"
rm -rf "$rootfs"; mkdir -p "$rootfs"
debootstrap --variant=minbase --include=python3 bookworm "$rootfs" "$mirror"
# apt inside the image uses the same mirror; drop the debootstrap leftovers
rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"* "$rootfs/debootstrap"
tar -C "$rootfs" --numeric-owner -c . | docker import \
    --change 'LABEL edgeai.lab=1' \
    --change "LABEL edgeai.lab.recipe=$recipe" \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    - "$image"
rm -rf "$rootfs"
