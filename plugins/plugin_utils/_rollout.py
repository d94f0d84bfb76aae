# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
#
# Every decision of a rollout, as plain Python on plain data so that each branch has a unit
# test: the options and their defaults, the release's schema, which artifact, config and smoke
# test a device takes, the site cache's rewriting, the outcome vocabulary, the plan (canary,
# waves), the verdict after a wave and the failure budget, and the report. The action plugin
# edgeai.fleet.rollout wires it to Ansible; playbooks/deploy_model.yml only orchestrates.

from __future__ import annotations

import difflib
import hashlib
import math
import os
import re

DEFAULT_RING_ORDER = ("canary", "early", "broad")
PLATFORMS = ("jetson", "coral", "generic")
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class RolloutPlanError(ValueError):
    """A rollout cannot be planned from the given input."""


class ReleaseError(RolloutPlanError):
    """The release or the rollout's options are not valid; nothing was touched."""


# -- the outcome vocabulary --------------------------------------------------------------
# Each device ends a run with exactly one of these results.
OUTCOMES = {
    "unchanged": "already served the release (or had nothing to roll back)",
    "updated": "now serves the release, which passed its smoke test (and the canary soak)",
    "downgraded": "now serves the release, a lower version than it served before",
    "would_update": "check mode: would switch to the release",
    "would_downgrade": "check mode: would switch to the release, a lower version than it serves",
    "staged": "the release was downloaded and verified; nothing was activated (stage phase)",
    "already_staged": "the release was already staged (stage phase)",
    "would_stage": "check mode: would download and verify the release (stage phase)",
    "stage_failed": "downloading or verifying the release failed; nothing else changed",
    "failed": "the release did not take and the device serves what it served before",
    "rolled_back": "the device was returned to the version it served before",
    "rollback_failed": "returning to the previous version failed: the device needs attention",
    "preflight_failed": "the device or its server was not healthy; the device was left as it was",
    "incompatible": "the device cannot run the release's artifact; it was not tried",
    "deferred": "the device could not be reached; a later run converges it",
    "not_reached": "the rollout aborted before the device's wave; it was left as it was",
}
SUCCESS = {
    ("deploy", "all"): frozenset({"updated", "downgraded", "unchanged", "would_update", "would_downgrade"}),
    ("deploy", "activate"): frozenset({"updated", "downgraded", "unchanged", "would_update", "would_downgrade"}),
    ("deploy", "stage"): frozenset({"staged", "already_staged", "would_stage", "unchanged"}),
    ("rollback", "all"): frozenset({"rolled_back", "unchanged"}),
}
# Only devices that could not be reached converge by running the same release again.
CONVERGE_LATER = frozenset({"deferred"})
# Results that count as a change in Ansible's recap (in check mode: would change).
CHANGED = frozenset({"updated", "downgraded", "staged", "rolled_back", "would_update", "would_downgrade",
                     "would_stage"})


def switch_result(before, target, check_mode):
    """updated or downgraded (would_... in check mode) for a device that moves to ``target``."""
    down = before is not None and target < before
    return ("would_downgrade" if down else "would_update") if check_mode else ("downgraded" if down else "updated")


def successes(action, phase):
    try:
        return SUCCESS[(action, phase)]
    except KeyError:
        raise RolloutPlanError(f"no rollout has action {action!r} with phase {phase!r}") from None


# -- options -------------------------------------------------------------------------------
# The rollout's optional variables and their defaults: the one place they are defined.
OPTIONS = {
    "action": "deploy",
    "phase": "all",
    "max_unavailable_per_site": 1,
    "failure_budget_percent": 10,
    "failure_budget_min_executed": 1,
    "on_abort": "rollback",
    "canary_soak_seconds": 30,
    "canary_ring": "canary",
    "download_rate_limit": 0,
    "allow_no_smoke_test": False,
    "report_dir": None,
}


def device_settings(settings, rollout=None):
    """A device's settings for one step. In a rollout the run decides what the role's variables
    would: the activate phase downloads nothing, and the run's download rate limit applies."""
    out = dict(settings or {})
    if rollout:
        out["require_staged"] = rollout.get("phase") == "activate"
        out["rate_limit"] = rollout.get("download_rate_limit") or 0
    return out


def _int(name, value, minimum=0):
    if isinstance(value, bool):
        raise ReleaseError(f"edgeai_{name} must be a whole number, got {value!r}")
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise ReleaseError(f"edgeai_{name} must be a whole number, got {value!r}") from None
    if number < minimum:
        raise ReleaseError(f"edgeai_{name} must be at least {minimum}, got {value!r}")
    return number


def _bool(name, value):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ReleaseError(f"edgeai_{name} must be true or false, got {value!r}")


def normalise_options(given, default_report_dir):
    """The rollout's options with their defaults applied and checked. ``given`` holds what the
    user set (missing or empty values take the default); returns a plain dict."""
    given = {k: v for k, v in (given or {}).items() if v is not None and v != ""}
    unknown = sorted(set(given) - set(OPTIONS))
    if unknown:
        raise ReleaseError(_unknown_message("rollout option", unknown[0], OPTIONS, prefix="edgeai_"))
    out = dict(OPTIONS, **given)
    if out["action"] not in ("deploy", "rollback"):
        raise ReleaseError(f"edgeai_action must be deploy or rollback, got {out['action']!r}")
    if out["phase"] not in ("all", "stage", "activate"):
        raise ReleaseError(f"edgeai_phase must be all, stage or activate, got {out['phase']!r}")
    if out["action"] == "rollback" and out["phase"] != "all":
        raise ReleaseError("a rollback has no phases: leave edgeai_phase unset")
    if out["on_abort"] not in ("rollback", "keep"):
        raise ReleaseError(f"edgeai_on_abort must be rollback or keep, got {out['on_abort']!r}")
    try:
        parse_limit(out["max_unavailable_per_site"], 100)
    except RolloutPlanError as exc:
        raise ReleaseError(f"edgeai_max_unavailable_per_site: {exc}") from None
    percent = out["failure_budget_percent"]
    try:
        percent = float(percent)
    except (TypeError, ValueError):
        raise ReleaseError(f"edgeai_failure_budget_percent must be a number in [0, 100], got {percent!r}") from None
    if not 0 <= percent <= 100 or isinstance(out["failure_budget_percent"], bool):
        raise ReleaseError(f"edgeai_failure_budget_percent must be a number in [0, 100], got {percent!r}")
    out["failure_budget_percent"] = int(percent) if percent.is_integer() else percent
    out["failure_budget_min_executed"] = _int("failure_budget_min_executed", out["failure_budget_min_executed"], 1)
    out["canary_soak_seconds"] = _int("canary_soak_seconds", out["canary_soak_seconds"])
    out["download_rate_limit"] = _int("download_rate_limit", out["download_rate_limit"])
    out["allow_no_smoke_test"] = _bool("allow_no_smoke_test", out["allow_no_smoke_test"])
    out["canary_ring"] = str(out["canary_ring"])
    out["report_dir"] = str(out["report_dir"] or default_report_dir)
    return out


def _unknown_message(what, key, known, prefix=""):
    near = difflib.get_close_matches(str(key), [str(k) for k in known], n=1, cutoff=0.6)
    hint = f"; did you mean {prefix}{near[0]}?" if near else f"; known: {', '.join(prefix + str(k) for k in known)}"
    return f"unknown {what} {prefix}{key}{hint}"


# -- the release ---------------------------------------------------------------------------
RELEASE_KEYS = ("model_name", "model_version", "artifacts", "artifact", "config", "smoke_test", "description")
SOURCE_KEYS = ("url", "src", "image")
ARTIFACT_KEYS = SOURCE_KEYS + ("sha256", "format", "filename", "subdir", "image_path", "requires")
REQUIRES_KEYS = ("edgetpu_runtime", "tensorrt", "jetpack", "compute_capability", "backends", "platform")
SMOKE_KEYS = ("enabled", "inputs", "expected_outputs", "tolerance", "relative_tolerance", "requests",
              "from_artifact")
# Triton's ModelConfig fields (the LiteRT server reads the same format).
CONFIG_KEYS = ("name", "platform", "backend", "runtime", "version_policy", "max_batch_size", "input", "output",
               "batch_input", "batch_output", "optimization", "dynamic_batching", "sequence_batching",
               "ensemble_scheduling", "instance_group", "default_model_filename", "cc_model_filenames",
               "metric_tags", "parameters", "model_warmup", "model_operations", "model_transaction_policy",
               "model_repository_agents", "response_cache")


def _is_keyed(entry, fields):
    """True when ``entry`` is a map of per-platform/group entries rather than one entry."""
    return isinstance(entry, dict) and bool(entry) and not any(k in fields for k in entry)


def _entries(value, fields, what):
    """{key: entry} for a keyed value, {"default": entry} for a single one, {} for none."""
    if value in (None, {}, ""):
        return {}
    if not isinstance(value, dict):
        raise ReleaseError(f"edgeai_release.{what} must be a mapping, got {type(value).__name__}")
    if _is_keyed(value, fields):
        for key, entry in value.items():
            if not isinstance(entry, dict):
                raise ReleaseError(f"edgeai_release.{what}.{key} must be a mapping, got {type(entry).__name__}")
        return dict(value)
    return {"default": value}


def file_sha256(path, cache=None):
    """sha256 of a file on the controller, computed once per (path, size, mtime)."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if cache is not None and key in cache:
        return cache[key]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    if cache is not None:
        cache[key] = value
    return value


def _check_artifact(key, artifact, base_dir, sha_cache):
    where = "edgeai_release.artifacts" + ("" if key == "default" else f".{key}")
    for field in artifact:
        if field not in ARTIFACT_KEYS:
            raise ReleaseError(_unknown_message(f"key in {where}:", field, ARTIFACT_KEYS))
    sources = [k for k in SOURCE_KEYS if artifact.get(k)]
    if len(sources) != 1:
        raise ReleaseError(f"{where} must name exactly one of url, src or image (got {sources or 'none'})")
    out = dict(artifact)
    sha = out.get("sha256")
    if sha is not None:
        sha = str(sha).strip().lower()
        if sha.startswith("sha256:"):
            sha = sha[len("sha256:"):]
        if not SHA256.match(sha):
            raise ReleaseError(f"{where}.sha256 must be 64 hexadecimal digits, got {artifact['sha256']!r}")
        out["sha256"] = sha
    if sources == ["url"]:
        if not sha:
            raise ReleaseError(f"{where} downloads from a url and needs its sha256")
    if sources == ["src"] and "{{" not in str(out["src"]):
        path = str(out["src"])
        if not os.path.isabs(path) and base_dir:
            path = os.path.join(base_dir, path)
        if not os.path.exists(path):
            raise ReleaseError(f"{where}.src: {out['src']} does not exist on the controller")
        out["src"] = os.path.abspath(path)
        if os.path.isfile(path):
            actual = file_sha256(path, sha_cache)
            if sha and actual != sha:
                raise ReleaseError(f"{where}.src: {out['src']} has sha256 {actual}, the release says {sha}: "
                                   "the file changed since the release was written, or the release names the "
                                   "wrong file")
            out["sha256"] = actual
        elif sha:
            raise ReleaseError(f"{where}.src: {out['src']} is a folder, which has no sha256: give a tar.gz "
                               "(playbooks/build_release.yml makes one) or drop sha256")
    requires = out.get("requires")
    if requires is not None:
        if not isinstance(requires, dict):
            raise ReleaseError(f"{where}.requires must be a mapping")
        for field in requires:
            if field not in REQUIRES_KEYS:
                raise ReleaseError(_unknown_message(f"key in {where}.requires:", field, REQUIRES_KEYS))
    return out


def _check_smoke(key, smoke):
    where = "edgeai_release.smoke_test" + ("" if key == "default" else f".{key}")
    for field in smoke:
        if field not in SMOKE_KEYS:
            raise ReleaseError(_unknown_message(f"key in {where}:", field, SMOKE_KEYS))
    for field in ("inputs", "expected_outputs"):
        if field in smoke and not (isinstance(smoke[field], list) and all(isinstance(i, dict) for i in smoke[field])):
            raise ReleaseError(f"{where}.{field} must be a list of tensors (name, datatype, shape, data)")
    if smoke.get("from_artifact") and (smoke.get("inputs") or smoke.get("expected_outputs")):
        raise ReleaseError(f"{where}: from_artifact reads inputs and expected outputs from the artifact's "
                           "smoke_test.json; do not give them inline too")
    return dict(smoke)


def validate_release(release, action="deploy", base_dir=None, sha_cache=None):
    """Check a release (edgeai_release) on the controller and return it normalised:
    ``{model_name, model_version, artifacts: {key: artifact}, config: {key: config},
    smoke_test: {key: smoke}}``, where key is ``default``, a platform or an inventory group.
    Local ``src`` files are checked against their sha256 here, once."""
    if not isinstance(release, dict):
        raise ReleaseError("deploy_model.yml needs -e @release.yml holding edgeai_release (a mapping with "
                           "model_name, model_version, artifacts and smoke_test; see playbooks/examples/release.yml)")
    for key in release:
        if key not in RELEASE_KEYS:
            raise ReleaseError(_unknown_message("key in edgeai_release:", key, RELEASE_KEYS))
    name = release.get("model_name")
    if not isinstance(name, str) or not MODEL_NAME.match(name):
        raise ReleaseError(f"edgeai_release.model_name must be a model name (letters, digits, '_', '.', '-'), "
                           f"got {name!r}")
    version = release.get("model_version")
    if action == "deploy" or version not in (None, ""):
        if isinstance(version, bool) or not str(version).strip().isdigit() or int(str(version).strip()) < 1:
            raise ReleaseError(f"edgeai_release.model_version must be a positive whole number, got {version!r}")
        version = int(str(version).strip())
    else:
        version = None
    if release.get("artifacts") and release.get("artifact"):
        raise ReleaseError("edgeai_release has both artifacts and artifact: keep one")
    artifacts = _entries(release.get("artifacts") or release.get("artifact"), ARTIFACT_KEYS, "artifacts")
    if action == "deploy" and not artifacts:
        raise ReleaseError("edgeai_release.artifacts is missing: give one artifact, or one per platform "
                           "(jetson, coral) or inventory group")
    artifacts = {k: _check_artifact(k, a, base_dir, sha_cache) for k, a in artifacts.items()}
    config = _entries(release.get("config"), CONFIG_KEYS, "config")
    smoke = {k: _check_smoke(k, s) for k, s in _entries(release.get("smoke_test"), SMOKE_KEYS, "smoke_test").items()}
    return {"model_name": name, "model_version": version, "artifacts": artifacts, "config": config,
            "smoke_test": smoke}


def selection_keys(platform, groups):
    """Where a device looks for its entry, first match wins: its hardware_ groups (TensorRT
    engines are built per module), its other groups, its platform, then ``default``."""
    groups = list(groups or [])
    return ([g for g in groups if g.startswith("hardware_")] + [g for g in groups if not g.startswith("hardware_")]
            + [platform or "generic", "default"])


def select(entries, platform, groups):
    """(key, entry) of a device from ``{key: entry}``; (None, {}) when none applies."""
    for key in selection_keys(platform, groups):
        if key in entries:
            return key, entries[key]
    return None, {}


def select_for_device(release, platform, groups):
    """The artifact, config and smoke test one device takes from a normalised release."""
    artifact_key, artifact = select(release["artifacts"], platform, groups)
    dummy, config = select(release["config"], platform, groups)
    dummy, smoke = select(release["smoke_test"], platform, groups)
    return {"artifact_key": artifact_key, "artifact": artifact, "config": config, "smoke_test": smoke}


def has_smoke_test(smoke):
    return bool(smoke) and smoke.get("enabled", True) is not False and bool(
        smoke.get("from_artifact") or smoke.get("inputs") or smoke.get("expected_outputs"))


def coverage_problems(release, devices, allow_no_smoke_test=False):
    """What keeps the release from running on ``devices`` ({host: {platform, groups}}), found
    on the controller before any device is touched: one line per platform or group. A device
    whose inventory does not say its platform is checked in its preflight instead, once the
    device has said what it is."""
    problems = {}
    for host in sorted(devices):
        info = devices[host] or {}
        if not info.get("platform"):
            continue
        chosen = select_for_device(release, info["platform"], info.get("groups") or [])
        where = info.get("platform") or "generic"
        if not chosen["artifact"]:
            problems.setdefault(f"no artifact for platform {where}", []).append(host)
        elif not has_smoke_test(chosen["smoke_test"]) and not allow_no_smoke_test:
            problems.setdefault(f"no smoke test for platform {where}", []).append(host)
    return [f"{what} (devices: {', '.join(hosts[:5])}{' ...' if len(hosts) > 5 else ''})"
            for what, hosts in sorted(problems.items())]


# -- compatibility -------------------------------------------------------------------------
def _version_tuple(text):
    return tuple(int(p) for p in re.findall(r"\d+", str(text or "")))


# CUDA compute capability of each Jetson SoC, for TensorRT plans (built per GPU architecture).
COMPUTE_CAPABILITY = {"tegra210": "5.3", "tegra186": "6.2", "tegra194": "7.2", "tegra234": "8.7"}


def incompatibility(requires, device, server_backends=None):
    """Why a device (device_facts' edge_device) cannot run an artifact that declares
    ``requires``; None when it can. A requirement the device cannot tell about (an unknown
    TensorRT version) counts as not met: the device is reported, not tried."""
    if not requires:
        return None
    platform = device.get("platform")
    jetson = device.get("jetson") or {}
    coral = device.get("coral") or {}
    if requires.get("platform") and requires["platform"] != platform:
        return f"the artifact is for {requires['platform']}, the device is {platform}"
    want = requires.get("edgetpu_runtime")
    if want:
        runtime = coral.get("edgetpu_runtime") or {}
        if platform != "coral" or not runtime:
            return f"the artifact is compiled for the Edge TPU (runtime {want} or newer) and the device has no Edge " \
                   "TPU runtime"
        have = runtime.get("version") or ""
        if _version_tuple(have) < _version_tuple(want):
            return f"the Edge TPU runtime is {have or 'of unknown version'}, the artifact needs {want} or newer"
    for key, label in (("tensorrt", "TensorRT"), ("jetpack", "JetPack")):
        want = requires.get(key)
        if want:
            have = jetson.get(key)
            if platform != "jetson":
                return f"the artifact needs {label} {want} and the device is not a Jetson"
            if not have or have == "unknown" or _version_tuple(have)[:2] != _version_tuple(want)[:2]:
                return f"the artifact is built for {label} {want}, the device has {have or 'none'}"
    want = requires.get("compute_capability")
    if want:
        have = COMPUTE_CAPABILITY.get(device.get("soc") or "")
        if have != str(want):
            return f"the artifact is built for compute capability {want}, the device's GPU has {have or 'unknown'}"
    backends = list(requires.get("backends") or [])
    if backends and server_backends is not None:
        missing = [b for b in backends if b not in server_backends]
        if missing:
            return f"the device's inference server lacks the backend(s) {', '.join(missing)}"
    return None


# -- the site cache ------------------------------------------------------------------------
def cache_sources(artifact, site_cache, upstream_registry="", upstream_artifact_url=""):
    """The site cache's copy of an artifact's source (tried before the centre, which stays
    the fallback), or None when the device's site has no cache or the source is not the
    centre's. ``site_cache`` is edgeai_site_cache (role site_cache): host, username, password,
    registry_port, artifact_port; the device trusts the cache's CA where the role's client
    tasks put it at bootstrap."""
    if not site_cache or not isinstance(site_cache, dict) or not site_cache.get("host"):
        return None
    host = site_cache["host"]
    registry_port = int(site_cache.get("registry_port", 5443))
    creds = {"username": site_cache.get("username", ""), "password": site_cache.get("password", ""),
             "ca_path": f"/etc/docker/certs.d/{host}:{registry_port}/ca.crt"}
    url = artifact.get("url") or ""
    base = upstream_artifact_url.rstrip("/") + "/" if upstream_artifact_url else ""
    if url and base and url.startswith(base):
        path = re.sub(r"^https?://[^/]+", "", base)
        port = int(site_cache.get("artifact_port", 8767))
        return dict(creds, url=f"https://{host}:{port}{path}{url[len(base):]}")
    image = artifact.get("image") or ""
    upstream = upstream_registry.rstrip("/")
    if image and upstream and image.startswith(upstream + "/"):
        return dict(creds, image=f"{host}:{registry_port}{image[len(upstream):]}")
    return None


# -- preflight -----------------------------------------------------------------------------
def served_version(index, name):
    """The highest READY version of ``name`` in a server's model index, or None."""
    versions = [int(e["version"]) for e in index or []
                if e.get("name") == name and e.get("state") == "READY" and str(e.get("version", "")).isdigit()]
    return max(versions) if versions else None


def other_models(index, name):
    """{model: served version} of every other model the server serves."""
    out = {}
    for entry in index or []:
        other = entry.get("name")
        if other and other != name and entry.get("state") == "READY" and str(entry.get("version", "")).isdigit():
            out[other] = max(out.get(other, 0), int(entry["version"]))
    return dict(sorted(out.items()))


def device_status(info, release, action, phase, groups, site_info=None, require_smoke_test=False):
    """What a device needs, from its preflight (inference_server_info with device and staged):
    returns the device's record with ``status`` ready, unchanged, incompatible or
    preflight_failed, ``before``, ``staged`` and the chosen artifact, config and smoke test."""
    site_info = site_info or {}
    device = info.get("device") or {}
    platform = device.get("platform") or site_info.get("platform") or "generic"
    name = release["model_name"]
    index = info.get("models") or []
    record = {"platform": platform, "site": site_info.get("site"), "ring": site_info.get("ring"),
              "order": site_info.get("order"), "model": name, "target": release.get("model_version"),
              "before": served_version(index, name), "other_models": other_models(index, name),
              "staged": sorted(int(v) for v in ((info.get("staged") or {}).get(name) or [])),
              "reason": None}
    if not info.get("live") or not info.get("ready"):
        record.update(status="preflight_failed", reason=(
            f"the inference server is not healthy (live={bool(info.get('live'))}, ready={bool(info.get('ready'))}): "
            "the device is left as it is"))
        return record
    chosen = select_for_device(release, platform, groups)
    record.update(chosen)
    record["smoke"] = ("artifact" if chosen["smoke_test"].get("from_artifact") else "release") \
        if has_smoke_test(chosen["smoke_test"]) else "none"
    if action == "rollback":
        record["status"] = "ready" if record["before"] is not None else "unchanged"
        if record["before"] is None:
            record["reason"] = f"{name} is not served: nothing to roll back"
        return record
    if not chosen["artifact"]:
        record.update(status="preflight_failed",
                      reason=f"the release has no artifact for platform {platform} or the device's groups")
        return record
    if require_smoke_test and record["smoke"] == "none":
        record.update(status="preflight_failed",
                      reason=f"the release has no smoke test for platform {platform} (edgeai_allow_no_smoke_test=true "
                             "accepts that)")
        return record
    why = incompatibility(chosen["artifact"].get("requires"), device, info.get("backends"))
    if why:
        record.update(status="incompatible", reason=why)
        return record
    target = release["model_version"]
    if phase == "stage":
        record["status"] = "unchanged" if record["before"] == target else "ready"
    else:
        record["status"] = "unchanged" if record["before"] == target else "ready"
    return record


# -- the plan --------------------------------------------------------------------------------
def parse_limit(value, total):
    """Turn a limit given as a count (3, "3") or a percentage ("25%") of ``total`` into a count.

    A percentage is rounded up and never gives less than one device, so a small site still
    moves forward.
    """
    if isinstance(value, bool):
        raise RolloutPlanError(f"limit must be a count or a percentage such as '25%', got {value!r}")
    if isinstance(value, int):
        count = value
    else:
        text = str(value).strip()
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*%", text)
        if match:
            percent = float(match.group(1))
            if not 0 < percent <= 100:
                raise RolloutPlanError(f"percentage must be in (0, 100], got {value!r}")
            return max(1, math.ceil(total * percent / 100.0))
        if not text.isdigit():
            raise RolloutPlanError(f"limit must be a count or a percentage such as '25%', got {value!r}")
        count = int(text)
    if count < 1:
        raise RolloutPlanError(f"limit must be at least 1, got {value!r}")
    return count


def _sort_key(device):
    order = device.get("order")
    return (order if isinstance(order, int) else math.inf, str(device["host"]))


def plan_waves(devices, max_unavailable_per_site=1, canary_ring="canary"):
    """Cut ``devices`` into waves.

    ``devices`` is a list of dicts with ``host``, ``site``, optionally ``ring`` and ``order``
    (the inventory's rollout order). The first wave is the canary: every device of the canary
    ring or, where no device has that ring, the first device of each site. Every later wave
    takes at most ``max_unavailable_per_site`` devices (a count or a percentage of the site's
    devices) from each site, so sites move forward together and no site ever has more than
    that many devices updating at once. Returns a list of waves, each a list of host names.
    """
    seen = set()
    for device in devices:
        if "host" not in device or "site" not in device:
            raise RolloutPlanError(f"each device needs 'host' and 'site', got {device!r}")
        if device["host"] in seen:
            raise RolloutPlanError(f"device {device['host']!r} is listed twice")
        seen.add(device["host"])

    by_site = {}
    for device in sorted(devices, key=_sort_key):
        by_site.setdefault(str(device["site"]), []).append(device)

    canary = [d for d in devices if d.get("ring") == canary_ring]
    if not canary:
        canary = [site_devices[0] for site_devices in by_site.values()]
    canary_hosts = {d["host"] for d in canary}

    waves = []
    if canary:
        waves.append([d["host"] for d in sorted(canary, key=_sort_key)])

    limits = {site: parse_limit(max_unavailable_per_site, len(members)) for site, members in by_site.items()}
    queues = {site: [d for d in members if d["host"] not in canary_hosts] for site, members in by_site.items()}
    # Within a wave, a later ring never goes before an earlier one of the same site.
    for queue in queues.values():
        queue.sort(key=lambda d: (_ring_rank(d.get("ring")), _sort_key(d)))

    while any(queues.values()):
        wave = []
        for site in sorted(queues):
            take, queues[site] = queues[site][: limits[site]], queues[site][limits[site]:]
            wave.extend(d["host"] for d in take)
        waves.append(wave)
    return waves


def _ring_rank(ring):
    if ring in DEFAULT_RING_ORDER:
        return (DEFAULT_RING_ORDER.index(ring), "")
    return (len(DEFAULT_RING_ORDER), str(ring or ""))


def make_plan(records, options):
    """The run's plan from every target's preflight record ({host: record}; a host without
    one was unreachable): which devices go in which wave. The stage phase activates nothing, so
    every ready device stages in one wave, with no canary."""
    ready = [h for h, r in records.items() if r and r.get("status") == "ready"]
    devices = [{"host": h, "site": records[h].get("site") or "unsited", "ring": records[h].get("ring") or "broad",
                "order": records[h].get("order")} for h in ready]
    if options["phase"] == "stage":
        waves = [sorted(ready)] if ready else []
    else:
        waves = plan_waves(devices, options["max_unavailable_per_site"], options["canary_ring"]) if devices else []
    wave_of = {h: i for i, wave in enumerate(waves) for h in wave}
    canary = list(waves[0]) if waves and options["phase"] != "stage" else []
    return {"waves": waves, "order": [h for wave in waves for h in wave],
            "serial": [len(w) for w in waves] or [1], "wave_of": wave_of, "canary": canary}


# -- the verdict after a wave --------------------------------------------------------------
def budget_exceeded(failed, executed, percent, min_executed=1):
    """Return True once the global failure budget is spent.

    Like Greengrass's abort criteria: the rollout aborts when at least ``min_executed``
    devices have finished (succeeded or failed) and ``failed`` is at least ``percent`` per
    cent of them. Unreachable devices count as failed.
    """
    if failed < 0 or executed < 0 or failed > executed:
        raise RolloutPlanError(f"inconsistent counts: failed={failed}, executed={executed}")
    if not 0 <= float(percent) <= 100:
        raise RolloutPlanError(f"failure budget percent must be in [0, 100], got {percent!r}")
    if executed == 0 or executed < int(min_executed):
        return False
    return failed * 100.0 >= float(percent) * executed and failed > 0


def done_hosts_to_read(plan, wave, tally, run_id):
    """(the tally so far, the devices whose results to read) after wave ``wave``: the tally
    keeps each result of this run's done waves once it is read, so every verdict reads only
    the devices it has no result for yet (this wave's, and any that had none before), not the
    whole fleet again. A tally of another run (deploy_model.yml imported twice) starts over."""
    outcomes = dict(tally["outcomes"]) if tally and tally.get("run_id") == run_id else {}
    done = [h for w in plan["waves"][: wave + 1] for h in w]
    return outcomes, [h for h in done if h not in outcomes]


def wave_verdict(plan, wave, results, options):
    """After wave ``wave``: {} to go on, or the abort (wave, failed devices, reason).
    ``results`` maps host -> result string for the devices that have one; a device of a done
    wave without a result (it went unreachable) counts as failed. Staging activates nothing:
    its failures are reported, never an abort."""
    if options["phase"] == "stage":
        return {}
    done = [h for w in plan["waves"][: wave + 1] for h in w]
    good = successes(options["action"], options["phase"])
    failed = [h for h in done if results.get(h) not in good]
    if wave == 0 and failed:
        return {"wave": wave, "failed": failed, "reason": f"the canary failed on {', '.join(failed)}"}
    percent, minimum = options["failure_budget_percent"], options["failure_budget_min_executed"]
    if budget_exceeded(len(failed), len(done), percent, minimum):
        return {"wave": wave, "failed": failed,
                "reason": f"{len(failed)} of {len(done)} devices failed, budget {percent}% after at least {minimum}"}
    return {}


def controller_failure(previous, error, during, run_id):
    """The result of a device whose task failed on the controller (a template error, an
    undefined variable...). In a wave the device may have changed, so an abort returns it;
    while rolling back, a device that had switched is reported as not returned."""
    previous = dict(previous or {}) if (previous or {}).get("run_id") == run_id else {"run_id": run_id}
    reason = f"controller error during the {during}: {error or 'unknown'}"
    if during == "rollback":
        if previous.get("result") in ("updated", "downgraded"):
            return dict(previous, result="rollback_failed", reason=reason, maybe_changed=False)
        return dict(previous, reason="; ".join(r for r in (previous.get("reason"), reason) if r), maybe_changed=False)
    return dict(previous, result="failed", maybe_changed=True, reason=reason)


def rollback_candidates(results, options):
    """Devices to return to their previous version after an abort (edgeai_on_abort=rollback):
    those updated, and those whose wave failed on the controller after they may have changed."""
    if options["on_abort"] != "rollback" or options["action"] != "deploy" or options["phase"] == "stage":
        return []
    return sorted(h for h, row in results.items()
                  if row.get("result") in ("updated", "downgraded") or row.get("maybe_changed"))


def soak_seconds(plan, options, host):
    """How long a device stays healthy after its smoke test before its wave counts: the canary
    wave soaks for canary_soak_seconds, later waves do not."""
    return options["canary_soak_seconds"] if host in (plan or {}).get("canary", []) else 0


def abort_rollback(options, abort, host):
    """What a device of the rollback list does after an abort: go back from the release's
    version (a device that serves another one is left alone), saying why. None when the run
    did not abort or the device is not on the list."""
    if not abort or host not in (abort.get("rollback") or []):
        return None
    return {"from_version": options["release"]["model_version"],
            "reason": f"rollout aborted: {abort.get('reason') or 'unknown'}"}


# -- the report ----------------------------------------------------------------------------
def report_rows(targets, records, results, plan, abort):
    """One row per targeted device: what it was, what it is now, and why."""
    rows = []
    for host in targets:
        record = records.get(host)
        result = results.get(host)
        base = {"device": host, "site": (record or {}).get("site"), "platform": (record or {}).get("platform"),
                "model": (record or {}).get("model"), "wave": plan.get("wave_of", {}).get(host),
                "before": (record or {}).get("before"), "target": (record or {}).get("target"),
                "other_models": (record or {}).get("other_models") or {}}
        if result:
            row = dict(base, **{k: v for k, v in result.items() if k not in ("maybe_changed",)})
        elif record is None:
            row = dict(base, result="deferred", reason="unreachable during preflight")
        elif record.get("status") in ("preflight_failed", "incompatible"):
            row = dict(base, result=record["status"], after=record.get("before"), reason=record.get("reason"))
        elif record.get("status") == "unchanged":
            row = dict(base, result="unchanged", after=record.get("before"), reason=record.get("reason"))
        elif host in plan.get("wave_of", {}) and abort:
            row = dict(base, result="not_reached", after=record.get("before"), reason="rollout aborted before its wave")
        else:
            row = dict(base, result="deferred", after=record.get("before"), reason="unreachable during the rollout")
        if record and record.get("smoke") == "none" and row["result"] in (
                "updated", "downgraded", "would_update", "would_downgrade"):
            row.setdefault("warnings", [])
            row["warnings"] = list(row["warnings"]) + ["no smoke test: the release was accepted without one"]
        rows.append(row)
    return rows


def report_summary(rows):
    """Count report rows by result."""
    summary = {}
    for row in rows:
        result = str(row.get("result") or "unknown")
        summary[result] = summary.get(result, 0) + 1
    return dict(sorted(summary.items()))


def run_failure(report, options):
    """The message that fails the run, or None when every device ended well."""
    good = successes(options["action"], options["phase"])
    rows = report["devices"]
    behind = {}
    for row in rows:
        if row["result"] not in good:
            behind.setdefault(row["result"], []).append(row["device"])
    if not behind and not report.get("aborted"):
        return None
    parts = []
    if report.get("aborted"):
        abort = report["abort"]
        parts.append(f"Rollout aborted in wave {abort['wave']}: {abort['reason']} (on_abort={options['on_abort']}).")
    goal = "staged with" if options["phase"] == "stage" else "at"
    target = f"{report['model']} {report['version']}" if report.get("version") else report["model"]
    for result, hosts in sorted(behind.items()):
        if result in CONVERGE_LATER:
            tail = "; a later run converges them"
        elif result == "not_reached":
            tail = "; not tried because the rollout aborted"
        elif result == "incompatible":
            tail = "; they cannot run this artifact (see the reasons in the report)"
        else:
            tail = "; the release failed on them: see the reasons in the report before running it again"
        parts.append(f"{len(hosts)} device(s) {result} ({', '.join(hosts[:8])}{' ...' if len(hosts) > 8 else ''})"
                     f"{tail}.")
    if behind:
        parts.insert(1 if report.get("aborted") else 0, f"Devices not {goal} {target}:")
    parts.append(f"Report: {report['file']}")
    return " ".join(parts)


REPORT_COLUMNS = ("device", "site", "platform", "model", "wave", "before", "after", "result", "stage_s",
                  "activate_s", "other_models", "note")


def _note(row):
    notes = []
    if row.get("reason") and row.get("result") not in ("updated", "unchanged"):
        notes.append(str(row["reason"]))
    notes.extend(str(w) for w in row.get("warnings") or [])
    text = "; ".join(notes)
    return text if len(text) <= 80 else text[:77] + "..."


def report_table(rows):
    """Render per-device report rows (dicts) as a fixed-width text table, one line a device.

    Missing fields show as ``-``. Rows are sorted by site, then device, so a reader scans a
    site at a time.
    """
    def cell(row, column):
        if column == "note":
            value = _note(row)
        elif column == "other_models":
            value = ",".join(f"{k}:{v}" for k, v in sorted((row.get("other_models") or {}).items()))
        else:
            value = row.get(column)
        if value is None or value == "":
            return "-"
        if isinstance(value, float):
            return f"{value:.1f}"
        return str(value)

    ordered = sorted(rows, key=lambda r: (str(r.get("site") or ""), str(r.get("device", ""))))
    cells = [[cell(row, c) for c in REPORT_COLUMNS] for row in ordered]
    widths = [max([len(c)] + [len(line[i]) for line in cells]) for i, c in enumerate(REPORT_COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(REPORT_COLUMNS, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in cells)
    return lines
