"""Docker daemon, the Debian base image, the device image and the project's own images."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

from edgeai_lab.core import (
    BASE_IMAGE,
    CACHE_DIR,
    DEVICE_REPO,
    LAB_DIR,
    REPO,
    STATE_DIR,
    LabError,
    docker,
    hash_tree,
    log,
    run,
    sha256_text,
)

DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
DEBIAN_LIST = Path("/etc/apt/sources.list")


def ensure_dockerd() -> bool:
    """Start dockerd when `docker info` fails. Returns True when the lab started it."""
    if docker("info", "--format", "{{.ServerVersion}}", check=False).returncode == 0:
        return False
    if not shutil.which("dockerd"):
        raise LabError("no Docker daemon answers and `dockerd` is not installed (apt-get install docker.io)")
    logdir = STATE_DIR / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    log("starting dockerd (log: .lab/logs/dockerd.log)")
    with open(logdir / "dockerd.log", "ab") as fh:
        proc = subprocess.Popen(["dockerd"], stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    (STATE_DIR / "run").mkdir(parents=True, exist_ok=True)
    (STATE_DIR / "run" / "dockerd.pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if docker("info", "--format", "{{.ServerVersion}}", check=False).returncode == 0:
            return True
        if proc.poll() is not None:
            break
        time.sleep(1)
    raise LabError("dockerd did not come up; see .lab/logs/dockerd.log")


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (read at run time, never stored in the repo)."""
    if DEBIAN_SOURCES.exists():
        for stanza in DEBIAN_SOURCES.read_text().split("\n\n"):
            fields = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith("#"):
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
            suites = fields.get("suites", "").split()
            if "bookworm" in suites and fields.get("uris"):
                return fields["uris"].split()[0]
    if DEBIAN_LIST.exists():
        for line in DEBIAN_LIST.read_text().splitlines():
            m = re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", line)
            if m:
                return m.group(1)
    raise LabError(f"no Debian bookworm mirror found in {DEBIAN_SOURCES} or {DEBIAN_LIST}")


def image_label(image: str, key: str) -> str | None:
    proc = docker("image", "inspect", image, "--format", f'{{{{index .Config.Labels "{key}"}}}}', check=False)
    if proc.returncode != 0:
        return None
    value = proc.stdout.strip()
    return None if value in ("", "<no value>") else value


def image_exists(image: str) -> bool:
    return docker("image", "inspect", image, "--format", "{{.Id}}", check=False).returncode == 0


def base_recipe_hash() -> str:
    return sha256_text((LAB_DIR / "images" / "base" / "build.sh").read_bytes())[:16]


def ensure_base_image() -> str:
    recipe = base_recipe_hash()
    if image_label(BASE_IMAGE, "edgeai.lab.recipe") == recipe:
        return BASE_IMAGE
    if not shutil.which("debootstrap"):
        raise LabError("debootstrap is not installed (apt-get install debootstrap)")
    mirror = debian_mirror()
    log(f"building {BASE_IMAGE} with debootstrap (recipe {recipe}; about a minute)")
    work = CACHE_DIR / "base-build"
    work.mkdir(parents=True, exist_ok=True)
    run([str(LAB_DIR / "images" / "base" / "build.sh"), mirror, BASE_IMAGE, recipe, str(work)], timeout=1200)
    return BASE_IMAGE


def device_image_tag() -> str:
    h = sha256_text(base_recipe_hash(), hash_tree(LAB_DIR / "images" / "device"))[:12]
    return f"{DEVICE_REPO}:{h}"


def ensure_device_image() -> str:
    tag = device_image_tag()
    if image_exists(tag):
        return tag
    log(f"building device image {tag} (a few minutes, once)")
    run(["docker", "build", "-q", "--label", "edgeai.lab=1", "-t", tag, str(LAB_DIR / "images" / "device")],
        timeout=1800)
    return tag


# ---- the project's own images (images/<name>/Dockerfile, built by their owners' recipes) ----

PROJECT_IMAGES = ("tritonserver", "litert-server", "event-relay")


def project_image_dirs() -> dict[str, Path | None]:
    found: dict[str, Path | None] = {}
    for name in PROJECT_IMAGES:
        d = REPO / "images" / name
        found[name] = d if (d / "Dockerfile").is_file() else None
    for d in sorted((REPO / "images").glob("*/Dockerfile")):
        found.setdefault(d.parent.name, d.parent)
    return found


def ensure_project_image(name: str, directory: Path) -> str:
    """Build images/<name> when its files changed; returns the local tag edgeai/<name>:lab-<hash>."""
    h = hash_tree(directory, exclude=("tests",))[:12]
    tag = f"edgeai/{name}:lab-{h}"
    if image_exists(tag):
        return tag
    log(f"building {tag} from images/{name}")
    build_sh = directory / "build.sh"
    if build_sh.is_file():
        env = {"BASE_IMAGE": BASE_IMAGE, "PIP": f"{REPO / '.venv' / 'bin' / 'python'} -m pip"}
        run(["sh", str(build_sh), tag], env=env, timeout=1800)
    else:
        run(["docker", "build", "-q", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-t", tag, str(directory)],
            timeout=1800)
    # drop this image's older lab tags (not forced: a tag whose image a container uses stays)
    old = docker("images", "--format", "{{.Repository}}:{{.Tag}}", f"edgeai/{name}", check=False).stdout.split()
    for ref in old:
        if ref.startswith(f"edgeai/{name}:lab-") and ref != tag:
            docker("rmi", ref, check=False)
    return tag
