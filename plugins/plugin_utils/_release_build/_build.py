# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
"""build_release(): one model file (or one per platform or inventory group) in, per artifact
key a tar.gz laid out for its server with its config.pbtxt and smoke test, and the release
file that playbooks/deploy_model.yml takes."""

from __future__ import annotations

import os
import re
import shutil
import tempfile

from ansible.module_utils.urls import open_url
from ansible_collections.edgeai.fleet.plugins.plugin_utils._release_build import (
    _config,
    _inspect,
    _pack,
    _publish,
    _smoke,
)
from ansible_collections.edgeai.fleet.plugins.plugin_utils._release_build._common import (
    GENERATED_BY,
    PLATFORMS,
    BuildError,
    fits,
    plain,
    require,
)

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
REQUIRES_KEYS = ("edgetpu_runtime", "tensorrt", "jetpack", "compute_capability", "backends", "platform")
# libedgetpu a model from edgetpu_compiler 16 needs unless it was compiled with --min_runtime_version
DEFAULT_EDGETPU_RUNTIME = "14"


def _per_key(value, key, keys):
    """A value given once for every artifact, or as {artifact key: value}."""
    if isinstance(value, dict) and value and set(value) <= set(keys):
        return value.get(key)
    return value


def split_list(text):
    """``coral,jetson`` or ``[coral, jetson]`` (as ``-e platforms=[coral]`` arrives) -> a list."""
    text = str(text).strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return [p.strip().strip("'\"") for p in text.split(",") if p.strip().strip("'\"")]


def resolve_targets(model, platforms):
    """{artifact key: (platform, model path)} from ``model`` (a path or {key: path}) and
    ``platforms`` (a list of platforms, or {key: platform} for inventory groups)."""
    models = dict(model) if isinstance(model, dict) else None
    if model in (None, "", {}):
        raise BuildError("model is required: the path of a .tflite, .onnx, TensorRT .plan or python model folder, or "
                         "one per platform: {coral: model.tflite, jetson: model.onnx}")
    if platforms in (None, "", [], {}):
        if models is None:
            raise BuildError("platforms is required with a single model: [coral] or [jetson] (or inventory groups "
                             "mapped to platforms: {hardware_agx_orin: jetson})")
        platforms = list(models)
    if isinstance(platforms, str):
        platforms = split_list(platforms)
    if isinstance(platforms, (list, tuple)):
        mapping = {}
        for key in platforms:
            key = str(key)
            if key not in PLATFORMS:
                raise BuildError(f"platforms: {key} is not a platform ({', '.join(PLATFORMS)}); for an inventory "
                                 f"group say which platform its devices are: platforms: {{{key}: jetson}}")
            mapping[key] = key
    elif isinstance(platforms, dict):
        mapping = {str(k): str(v) for k, v in platforms.items()}
        for key, platform in mapping.items():
            if platform not in PLATFORMS:
                raise BuildError(f"platforms.{key}: {platform!r} is not a platform ({', '.join(PLATFORMS)})")
    else:
        raise BuildError("platforms must be a list ([coral, jetson]) or a mapping of inventory groups to platforms")
    for key in mapping:
        if not KEY.match(key):
            raise BuildError(f"platforms: {key!r} is not a platform or inventory group name")
    if models is not None:
        unknown = sorted(set(models) - set(mapping))
        if unknown:
            raise BuildError(f"model names artifact keys {unknown} that platforms does not list ({', '.join(mapping)})")
        missing = [k for k in mapping if k not in models]
        if missing:
            raise BuildError(f"model has no file for {', '.join(missing)}; give model: {{{missing[0]}: <path>, ...}}")
        return {k: (mapping[k], str(models[k])) for k in mapping}
    return {k: (mapping[k], str(model)) for k in mapping}


def _requires(kind, info, platform, key, user, edgetpu_runtime, backend):
    out = {}
    if platform == "coral" and info.edgetpu:
        out["edgetpu_runtime"] = str(edgetpu_runtime or DEFAULT_EDGETPU_RUNTIME)
    if platform == "jetson":
        out["backends"] = [backend]
    if user:
        if not isinstance(user, dict):
            raise BuildError(f"artifact {key}: requires must be a mapping ({', '.join(REQUIRES_KEYS)})")
        for field, value in user.items():
            if field not in REQUIRES_KEYS:
                raise BuildError(f"artifact {key}: requires.{field} is not known; known: {', '.join(REQUIRES_KEYS)}")
            if field == "backends":
                value = [str(b) for b in (value if isinstance(value, list) else [value])]
                out["backends"] = sorted(set(out.get("backends", [])) | set(value), key=lambda b: (b != backend, b))
            else:
                out[field] = str(value)
    if kind == "plan":
        missing = [f for f in ("tensorrt", "compute_capability") if not out.get(f)]
        if missing:
            raise BuildError(f"artifact {key}: a TensorRT plan runs only where it was built; say where with requires: "
                             "{tensorrt: \"8.6\", compute_capability: \"8.7\", jetpack: \"6.0\"} (missing: "
                             f"{', '.join(missing)})")
    return out


def _smoke_test(info, key, where, inputs, input_shapes, seed, expected_outputs, allow_unchecked, tolerance,
                relative_tolerance, max_mb, mbs):
    np = require("numpy", "the release builder")
    if inputs:
        arrays = _smoke.load_inputs(inputs, info.inputs, input_shapes, where)
        seed_used = None
    else:
        arrays = _smoke.random_inputs(info.inputs, seed, input_shapes, where)
        seed_used = int(seed)
    if mbs > 0:
        for name, array in arrays.items():
            if array.ndim == 0 or array.shape[0] > mbs:
                raise BuildError(f"{where}: input {name} has a batch of {array.shape[0] if array.ndim else 0}, "
                                 f"outside 1..max_batch_size ({mbs})")
    source = "computed"
    if expected_outputs:
        if not inputs:
            raise BuildError(f"{where}: expected_outputs are the model's answer to given inputs; give those inputs "
                             "too (inputs: a .npz keyed by input name)")
        outputs = _smoke.load_inputs(expected_outputs, info.outputs, None, where, what="output")
        source = "given"
    elif info.runnable:
        outputs = _smoke.run_model(info, arrays, where)
    elif allow_unchecked:
        outputs, source = None, "unchecked"
    else:
        raise BuildError(f"{where}: the builder cannot compute the expected outputs: {info.why_not_runnable}. Give "
                         "expected_outputs (a .npz keyed by output name: the model's answer to the inputs you give "
                         "as inputs, computed where it runs), or set allow_unchecked_outputs: true to ship the "
                         "inputs only (the device then checks that the model answers, not what it answers)")
    if outputs is not None:
        for tensor in info.outputs:
            shape = list(np.asarray(outputs[tensor.name]).shape)
            if not fits(tensor.shape, shape):
                raise BuildError(f"{where}: output {tensor.name} has shape {shape}, the model declares "
                                 f"{tensor.shape}")
    absolute, relative = _smoke.tolerances(info.outputs, tolerance, relative_tolerance, where)
    doc = _smoke.document(arrays, outputs, seed_used, absolute, relative)
    return _smoke.dump(doc, max_mb, where), {"outputs": source, "seed": seed_used,
                                             "inputs": [e["name"] for e in doc["inputs"]],
                                             "tolerance": absolute, "relative_tolerance": relative}


def _release_text(release, sources):
    import yaml

    lines = ["---", f"# Written by {GENERATED_BY} (playbooks/build_release.yml). Deploy it with:",
             "#   ansible-playbook -i <inventory> playbooks/deploy_model.yml -e @<this file>",
             "# Built from:"]
    lines += [f"#   {key}: {path}" for key, path in sources.items()]
    body = yaml.safe_dump(plain(release), sort_keys=False, default_flow_style=False, width=1000)
    return "\n".join(lines) + "\n" + body


def build_release(model, name, version, out, platforms=None, inputs=None, input_shapes=None, seed=0,
                  expected_outputs=None, allow_unchecked_outputs=False, tolerance=None, relative_tolerance=None,
                  max_batch_size=0, config=None, signature=None, requires=None, edgetpu_runtime=None, urls=None,
                  publish=None, max_smoke_test_mb=_smoke.DEFAULT_MAX_MB, release_file=None, check_mode=False,
                  opener=open_url):
    """Build the artifacts and the release file of ``name`` version ``version`` into ``out``.

    Every option but model, name, version, out and platforms may be given once or per artifact
    key ({coral: ..., jetson: ...}). Returns a dict: changed, release_file, release (the
    edgeai_release mapping), artifacts ({key: path, sha256, platform, kind, config, smoke_test,
    requires, published}). Raises BuildError with what to change."""
    if not isinstance(name, str) or not MODEL_NAME.match(name):
        raise BuildError(f"name must be a model name (letters, digits, '_', '.', '-'), got {name!r}")
    if isinstance(version, bool) or not str(version).strip().isdigit() or int(str(version).strip()) < 1:
        raise BuildError(f"version must be a positive whole number, got {version!r}")
    version = int(str(version).strip())
    if not out:
        raise BuildError("out is required: the folder the artifacts and the release file are written to")
    out = os.path.abspath(str(out))
    targets = resolve_targets(model, platforms)
    keys = list(targets)
    if publish is not None and urls:
        raise BuildError("give urls (files you upload yourself) or publish, not both")
    publish = _publish.check_settings(publish) if publish is not None else None
    if urls is not None and (not isinstance(urls, dict) or sorted(set(urls) - set(keys))):
        raise BuildError(f"urls must map artifact keys ({', '.join(keys)}) to the https URLs devices download from")
    result = {"changed": False, "artifacts": {}, "out": out}
    artifacts, smoke_tests, sources = {}, {}, {}
    work = tempfile.mkdtemp(prefix="edgeai-release-")
    try:
        for key, (platform, path) in targets.items():
            where = f"artifact {key} ({path})"
            info = _inspect.inspect(path)
            _config.check_platform(info.kind, platform, key, path)
            text, parsed, ins, outs, mbs = _config.build_config(
                name, info, _per_key(max_batch_size, key, keys), _per_key(config, key, keys),
                _per_key(signature, key, keys), where)
            smoke_bytes, smoke_info = _smoke_test(
                info, key, where, _per_key(inputs, key, keys), _per_key(input_shapes, key, keys),
                _per_key(seed, key, keys), _per_key(expected_outputs, key, keys),
                bool(_per_key(allow_unchecked_outputs, key, keys)), _per_key(tolerance, key, keys),
                _per_key(relative_tolerance, key, keys), _per_key(max_smoke_test_mb, key, keys), mbs)
            backend = parsed.get("backend") or _config.BACKENDS.get(info.kind)
            needs = _requires(info.kind, info, platform, key, _per_key(requires, key, keys),
                              _per_key(edgetpu_runtime, key, keys), backend)
            root = os.path.join(work, key)
            model_dir = _pack.stage(root, name, version, text, smoke_bytes, info.files)
            filename = f"{name}-{key}-{version}.tar.gz"
            dest = os.path.join(out, filename)
            if check_mode:  # built in the work folder only, compared with what out holds
                local = os.path.join(work, filename)
                sha256 = _pack.write_tarball(model_dir, local)
                changed = not _pack.same_file(local, dest)
            else:
                os.makedirs(out, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".tar.gz", dir=out)
                os.close(fd)
                sha256 = _pack.write_tarball(model_dir, tmp)
                changed = _pack.install(tmp, dest)
                local = dest
            size = os.path.getsize(local)
            entry = {"src": dest, "sha256": sha256}
            published = None
            if urls and urls.get(key):
                entry = {"url": str(urls[key]), "sha256": sha256}
            elif publish and publish["type"] == "https":
                url, sent = _publish.publish_https(local, filename, sha256, publish, check_mode, opener)
                entry = {"url": url, "sha256": sha256}
                published = {"type": "https", "url": url, "changed": sent}
            elif publish and publish["type"] == "oci":
                layer = os.path.join(work, f"{key}-layer.tar.gz")
                _pack.write_tarball(model_dir, layer, prefix="models/")
                image, sent = _publish.publish_oci(layer, name, version, key, platform, publish, check_mode, opener)
                entry = {"image": image}
                published = {"type": "oci", "image": image, "changed": sent}
            if needs:
                entry["requires"] = needs
            artifacts[key] = entry
            smoke_tests[key] = {"from_artifact": True}
            sources[key] = os.path.abspath(path)
            result["changed"] = result["changed"] or changed or bool(published and published["changed"])
            result["artifacts"][key] = {
                "path": dest, "sha256": sha256, "size": size, "platform": platform, "kind": info.kind,
                "edgetpu": info.edgetpu, "config": text, "model": info.describe(), "max_batch_size": mbs,
                "smoke_test": dict(smoke_info, bytes=len(smoke_bytes)), "requires": needs, "changed": changed,
                "published": published, "notes": info.notes}
        release = {"edgeai_release": {"model_name": name, "model_version": version, "artifacts": artifacts,
                                      "smoke_test": smoke_tests}}
        release_path = os.path.abspath(release_file or os.path.join(out, f"release-{name}-{version}.yml"))
        wrote = _pack.write_text_file(release_path, _release_text(release, sources), check_mode)
        result["changed"] = result["changed"] or wrote
        result.update(release_file=release_path, release=release["edgeai_release"])
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)
