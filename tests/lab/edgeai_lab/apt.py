"""The lab's local apt repository with STAND-IN vendor packages, signed with a lab GPG key.

The packages stand in for what NVIDIA's JetPack/L4T repositories and Google's Coral
repository provide. They carry the real package names and versions (taken from the device
profiles) so dpkg/apt state on a lab device is real, but contain no vendor code: every
package says STAND-IN in its description and ships /usr/share/doc/<pkg>/STAND-IN.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tempfile
import textwrap
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

import yaml

from edgeai_lab.core import CACHE_DIR, PROFILES_DIR, STATE_DIR, log, run, sha256_text

APT_DIR = STATE_DIR / "apt"
REPO_DIR = APT_DIR / "repo"
GNUPG = APT_DIR / "gnupg"
KEYRING_NAME = "edgeai-lab-archive-keyring.gpg"
CORAL_SUITE = "coral-edgetpu-stable"
MAINTAINER = "edgeai.fleet lab <lab@edgeai.lab>"
LIBDIR = "/usr/lib/x86_64-linux-gnu"   # the device containers are amd64

RUNTIME_SH = """#!/bin/sh
# STAND-IN for NVIDIA's nvidia-container-runtime (edgeai lab). The real runtime adds the
# GPU devices and libraries to the OCI spec, then runs runc. There is no GPU in the lab,
# so this hands over to runc unchanged.
exec runc "$@"
"""

NVIDIA_CTK = '''#!/usr/bin/python3
"""STAND-IN for nvidia-ctk (edgeai lab): `nvidia-ctk runtime configure --runtime=docker`
registers the `nvidia` runtime in /etc/docker/daemon.json like the real tool does."""
import argparse, json, os, sys

p = argparse.ArgumentParser(prog="nvidia-ctk")
sub = p.add_subparsers(dest="cmd")
r = sub.add_parser("runtime"); rs = r.add_subparsers(dest="sub")
c = rs.add_parser("configure")
c.add_argument("--runtime", default="docker")
c.add_argument("--config", default="/etc/docker/daemon.json")
c.add_argument("--set-as-default", action="store_true")
c.add_argument("--nvidia-set-as-default", dest="set_as_default", action="store_true")
p.add_argument("--version", action="store_true")
a = p.parse_args()
if a.version:
    print("NVIDIA Container Toolkit CLI version @VERSION@ (edgeai lab stand-in)"); sys.exit(0)
if a.cmd != "runtime" or a.sub != "configure":
    p.print_help(); sys.exit(2)
if a.runtime != "docker":
    print(f"stand-in supports --runtime=docker only, not {a.runtime}", file=sys.stderr); sys.exit(1)
cfg = {}
if os.path.exists(a.config):
    with open(a.config) as fh:
        text = fh.read().strip()
        cfg = json.loads(text) if text else {}
cfg.setdefault("runtimes", {})["nvidia"] = {"args": [], "path": "nvidia-container-runtime"}
if a.set_as_default:
    cfg["default-runtime"] = "nvidia"
os.makedirs(os.path.dirname(a.config), exist_ok=True)
with open(a.config, "w") as fh:
    json.dump(cfg, fh, indent=4); fh.write("\\n")
print(f"Wrote updated config to {a.config}")
print("It is recommended that docker daemon be restarted.")
'''

EULA_TEMPLATES = """Template: libedgetpu/accepted-eula
Type: boolean
Default: false
Description: Do you accept the Edge TPU runtime license (maximum frequency)?
 STAND-IN (edgeai lab): the real libedgetpu1-max asks this question because running the
 Edge TPU at its maximum operating frequency can make the device hot. The package refuses
 to install unless the answer is true.
"""

EULA_CONFIG = """#!/bin/sh
set -e
. /usr/share/debconf/confmodule
db_input critical libedgetpu/accepted-eula || true
db_go || true
"""

EULA_POSTINST = """#!/bin/sh
set -e
. /usr/share/debconf/confmodule
if [ "$1" = configure ]; then
    db_get libedgetpu/accepted-eula
    if [ "$RET" != "true" ]; then
        echo "libedgetpu1-max: the license (libedgetpu/accepted-eula) was not accepted" >&2
        exit 1
    fi
fi
db_stop
"""

GASKET_POSTINST = """#!/bin/sh
set -e
if [ "$1" = configure ]; then
    echo "gasket-dkms (edgeai lab STAND-IN): no kernel module is built; a lab device has /dev/apex_0 from the lab" >&2
fi
"""


def _doc(name: str, what: str) -> dict[str, tuple[str, int]]:
    return {f"usr/share/doc/{name}/STAND-IN": (
        f"{name}: STAND-IN package of the edgeai.fleet lab for {what}.\n"
        "It carries the vendor's package name and version so that apt/dpkg state on a lab\n"
        "device is real; it contains no vendor software. Never install it on real hardware.\n", 0o644)}


def _jetson_suites() -> dict[str, dict[str, Any]]:
    suites: dict[str, dict[str, Any]] = {}
    for prof_file in sorted(PROFILES_DIR.glob("*/profile.yml")):
        prof = yaml.safe_load(prof_file.read_text())
        if prof.get("platform") != "jetson":
            continue
        suite = suites.setdefault(prof["apt_suite"], {"profile": prof, "packages": {}})
        for pkg in prof.get("packages", []):
            suite["packages"][pkg["name"]] = pkg["version"]
    return suites


def package_specs() -> dict[str, list[dict[str, Any]]]:
    """suite -> list of package specs (name, version, depends, files, scripts ...)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for suite, info in _jetson_suites().items():
        prof = info["profile"]
        cuda_full = prof["cuda_version"]
        cuda_mm = ".".join(cuda_full.split(".")[:2])
        specs = []
        for name, version in info["packages"].items():
            spec: dict[str, Any] = {"name": name, "version": version, "depends": [], "files": {}, "scripts": {},
                                    "section": "utils"}
            if name == "nvidia-l4t-core":
                spec["desc"] = f"NVIDIA Core Package (L4T {prof['l4t_version']})"
                spec["files"].update(_doc(name, f"NVIDIA L4T core {prof['l4t_version']}"))
            elif name == "nvidia-container-toolkit":
                spec["desc"] = "NVIDIA Container toolkit (nvidia-ctk, nvidia-container-runtime -> runc)"
                spec["depends"] = ["python3"]
                spec["files"].update(_doc(name, "the NVIDIA Container Toolkit"))
                spec["files"]["usr/bin/nvidia-container-runtime"] = (RUNTIME_SH, 0o755)
                spec["files"]["usr/bin/nvidia-ctk"] = (NVIDIA_CTK.replace("@VERSION@", version.split("-")[0]), 0o755)
            elif name == "nvidia-container-runtime":
                spec["desc"] = "NVIDIA container runtime (transitional meta package)"
                spec["depends"] = ["nvidia-container-toolkit"]
                spec["files"].update(_doc(name, "nvidia-container-runtime"))
            elif name == "nvidia-container":
                spec["desc"] = "NVIDIA Container Meta Package (JetPack)"
                spec["depends"] = ["nvidia-container-toolkit"]
                spec["files"].update(_doc(name, "the JetPack container meta package"))
            elif name.startswith("cuda-runtime-"):
                spec["desc"] = f"CUDA Runtime {cuda_mm} meta-package"
                spec["files"].update(_doc(name, f"CUDA {cuda_full}"))
                if cuda_mm == "10.2":
                    spec["files"][f"usr/local/cuda-{cuda_mm}/version.txt"] = (f"CUDA Version {cuda_full}\n", 0o644)
                else:
                    spec["files"][f"usr/local/cuda-{cuda_mm}/version.json"] = (json.dumps({
                        "cuda": {"name": "CUDA SDK", "version": cuda_full},
                        "cuda_cudart": {"name": "CUDA Runtime (cudart)", "version": cuda_full}},
                        indent=3) + "\n", 0o644)
                spec["links"] = {"usr/local/cuda": f"cuda-{cuda_mm}"}
            elif name == "tensorrt":
                trt = version.split("-")[0].split(".")
                spec["desc"] = "Meta package for TensorRT"
                spec["files"].update(_doc(name, f"TensorRT {version}"))
                spec["files"]["usr/include/aarch64-linux-gnu/NvInferVersion.h"] = (textwrap.dedent(f"""\
                    /* STAND-IN (edgeai lab): version header of TensorRT {version} */
                    #define NV_TENSORRT_MAJOR {trt[0]}
                    #define NV_TENSORRT_MINOR {trt[1]}
                    #define NV_TENSORRT_PATCH {trt[2]}
                    #define NV_TENSORRT_BUILD {trt[3] if len(trt) > 3 else 0}
                    """), 0o644)
            elif name == "nvidia-jetpack":
                spec["desc"] = f"NVIDIA Jetpack Meta Package (JetPack {prof['jetpack_version']})"
                spec["section"] = "metapackages"
                spec["depends"] = [n for n in info["packages"]
                                   if n not in ("nvidia-jetpack", "nvidia-container-runtime")]
                spec["files"].update(_doc(name, f"JetPack {prof['jetpack_version']}"))
            else:
                spec["desc"] = name
                spec["files"].update(_doc(name, name))
            specs.append(spec)
        out[suite] = specs
    coral = []
    for variant, freq in (("std", "reduced"), ("max", "maximum")):
        name = f"libedgetpu1-{variant}"
        other = "libedgetpu1-max" if variant == "std" else "libedgetpu1-std"
        spec = {"name": name, "version": "16.0", "section": "misc", "depends": ["debconf"] if variant == "max" else [],
                "provides": "libedgetpu1 (= 16.0)", "conflicts": f"libedgetpu1, {other}", "replaces": other,
                "desc": f"Support library for Edge TPU ({freq} operating frequency)",
                "files": _doc(name, f"the Edge TPU runtime ({freq} frequency)"), "scripts": {}}
        spec["files"][f"{LIBDIR[1:]}/libedgetpu.so.1.0"] = (
            f"STAND-IN for libedgetpu.so.1.0 ({variant}); not a shared library. The lab has no Edge TPU.\n", 0o644)
        spec["files"][f"lib/udev/rules.d/60-{name}.rules"] = (
            'SUBSYSTEM=="usb",ATTRS{idVendor}=="1a6e",GROUP="plugdev"\n'
            'SUBSYSTEM=="usb",ATTRS{idVendor}=="18d1",GROUP="plugdev"\n', 0o644)
        spec["links"] = {f"{LIBDIR[1:]}/libedgetpu.so.1": "libedgetpu.so.1.0"}
        if variant == "max":
            spec["scripts"] = {"templates": (EULA_TEMPLATES, 0o644), "config": (EULA_CONFIG, 0o755),
                               "postinst": (EULA_POSTINST, 0o755)}
        coral.append(spec)
    gasket = {"name": "gasket-dkms", "version": "1.0-18", "section": "misc", "depends": [],
              "desc": "DKMS source for the gasket and apex (Edge TPU PCIe) kernel drivers",
              "files": _doc("gasket-dkms", "the gasket/apex DKMS driver"),
              "scripts": {"postinst": (GASKET_POSTINST, 0o755)}}
    gasket["files"]["usr/src/gasket-1.0/dkms.conf"] = (
        'PACKAGE_NAME="gasket"\nPACKAGE_VERSION="1.0"\nBUILT_MODULE_NAME[0]="gasket"\nBUILT_MODULE_NAME[1]="apex"\n'
        'DEST_MODULE_LOCATION[0]="/updates/dkms"\nDEST_MODULE_LOCATION[1]="/updates/dkms"\nAUTOINSTALL="yes"\n'
        "# STAND-IN (edgeai lab): no sources, nothing is built\n", 0o644)
    coral.append(gasket)
    out[CORAL_SUITE] = coral
    return out


def _build_deb(spec: dict[str, Any], outdir: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "pkg"
        (root / "DEBIAN").mkdir(parents=True)
        for rel, (content, mode) in spec.get("files", {}).items():
            f = root / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(content)
            f.chmod(mode)
        for rel, target in spec.get("links", {}).items():
            f = root / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, f)
        for script, (content, mode) in spec.get("scripts", {}).items():
            f = root / "DEBIAN" / script
            f.write_text(content)
            f.chmod(mode)
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) // 1024 + 1
        fields = [f"Package: {spec['name']}", f"Version: {spec['version']}", "Architecture: all",
                  f"Maintainer: {MAINTAINER}", f"Installed-Size: {size}", f"Section: {spec.get('section', 'utils')}",
                  "Priority: optional"]
        if spec.get("depends"):
            fields.append("Depends: " + ", ".join(spec["depends"]))
        for key in ("provides", "conflicts", "replaces"):
            if spec.get(key):
                fields.append(f"{key.capitalize()}: {spec[key]}")
        fields.append(f"Description: STAND-IN (edgeai lab) {spec['desc']}")
        fields.append(" Lab stand-in for the vendor package of the same name and version; contains no vendor")
        fields.append(" software. See docs/lab.md of edgeai.fleet.")
        (root / "DEBIAN" / "control").write_text("\n".join(fields) + "\n")
        out = outdir / f"{spec['name']}_{spec['version'].replace(':', '%3a')}_all.deb"
        run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(out)])
    return out


def _sign(path_release: Path) -> None:
    gpg = ["gpg", "--homedir", str(GNUPG), "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", ""]
    run([*gpg, "--clearsign", "-o", str(path_release.parent / "InRelease"), str(path_release)])
    run([*gpg, "--armor", "--detach-sign", "-o", str(path_release.parent / "Release.gpg"), str(path_release)])


def ensure_key() -> Path:
    GNUPG.mkdir(parents=True, exist_ok=True)
    GNUPG.chmod(0o700)
    keyring = APT_DIR / KEYRING_NAME
    gpg = ["gpg", "--homedir", str(GNUPG), "--batch"]
    if run([*gpg, "--list-secret-keys", "apt@edgeai.lab"], check=False).returncode != 0:
        run([*gpg, "--passphrase", "", "--quick-gen-key", "edgeai lab apt repository (test only) <apt@edgeai.lab>",
             "ed25519", "sign", "never"])
    if not keyring.exists():
        data = run([*gpg, "--export", "apt@edgeai.lab"], capture=True, input=b"").stdout
        keyring.write_bytes(data)
    return keyring


def ensure_repo() -> dict[str, Any]:
    """Build (cached) stand-in debs and (re)write the signed repository. Returns repo info."""
    specs = package_specs()
    keyring = ensure_key()
    fingerprint = sha256_text(json.dumps(specs, sort_keys=True, default=str))[:16]
    stamp = REPO_DIR / ".built"
    if stamp.exists() and stamp.read_text() == fingerprint + sha256_text(keyring.read_bytes()):
        return {"suites": sorted(specs), "keyring": str(keyring), "repo": str(REPO_DIR)}
    log("building the stand-in apt repository")
    debcache = CACHE_DIR / "debs" / fingerprint
    debcache.mkdir(parents=True, exist_ok=True)
    if REPO_DIR.exists():
        shutil.rmtree(REPO_DIR)
    for suite, suite_specs in specs.items():
        pool = REPO_DIR / "pool" / suite
        pool.mkdir(parents=True, exist_ok=True)
        for spec in suite_specs:
            cached = debcache / suite / f"{spec['name']}_{spec['version'].replace(':', '%3a')}_all.deb"
            if not cached.exists():
                cached.parent.mkdir(parents=True, exist_ok=True)
                _build_deb(spec, cached.parent)
            shutil.copy2(cached, pool / cached.name)
        packages = run(["dpkg-scanpackages", "--multiversion", f"pool/{suite}", "/dev/null"], cwd=REPO_DIR).stdout
        entries = []
        for arch in ("amd64", "arm64"):
            bdir = REPO_DIR / "dists" / suite / "main" / f"binary-{arch}"
            bdir.mkdir(parents=True, exist_ok=True)
            (bdir / "Packages").write_text(packages)
            (bdir / "Packages.gz").write_bytes(gzip.compress(packages.encode(), mtime=0))
            for fname in ("Packages", "Packages.gz"):
                data = (bdir / fname).read_bytes()
                entries.append((f"main/binary-{arch}/{fname}", hashlib.sha256(data).hexdigest(),
                                hashlib.md5(data).hexdigest(), len(data)))
        release = REPO_DIR / "dists" / suite / "Release"
        lines = ["Origin: edgeai-lab", "Label: edgeai lab stand-in packages (test only)", f"Suite: {suite}",
                 f"Codename: {suite}", f"Date: {formatdate(time.time(), usegmt=True)}",
                 "Architectures: amd64 arm64", "Components: main",
                 "Description: STAND-IN packages for the vendor repositories (edgeai.fleet lab)",
                 "MD5Sum:"] + [f" {m} {n:>8} {p}" for p, _, m, n in entries] + \
            ["SHA256:"] + [f" {s} {n:>8} {p}" for p, s, _, n in entries]
        release.write_text("\n".join(lines) + "\n")
        _sign(release)
    shutil.copy2(keyring, REPO_DIR / KEYRING_NAME)
    asc = run(["gpg", "--homedir", str(GNUPG), "--batch", "--armor", "--export", "apt@edgeai.lab"]).stdout
    (REPO_DIR / "edgeai-lab-archive-key.asc").write_text(asc)
    stamp.write_text(fingerprint + sha256_text(keyring.read_bytes()))
    return {"suites": sorted(specs), "keyring": str(keyring), "repo": str(REPO_DIR)}
