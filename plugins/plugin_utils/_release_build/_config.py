# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
"""config.pbtxt for each server, generated from the model's own signature.

| model | server | config |
| --- | --- | --- |
| .tflite (plain or Edge TPU-compiled) | LiteRT server (Coral) | ``backend: "tflite"`` |
| .onnx | Triton (Jetson) | ``backend: "onnxruntime"`` |
| TensorRT plan | Triton (Jetson) | ``platform: "tensorrt_plan"`` |
| python model folder | Triton (Jetson) | ``backend: "python"`` (or the folder's own backend) |

Inputs and outputs carry the model's names, Triton's data types and its dims (-1 where the
model leaves a dimension open). ``max_batch_size`` is 0 unless asked for; asking for it needs
every input and output to have an open first dimension, which then is the batch dimension
and is left out of dims (Triton's rule). A scalar tensor is dims [1] with an empty reshape.
No instance_group is written: each server chooses (Triton: the GPU when there is one)."""

from __future__ import annotations

import os

from ansible_collections.edgeai.fleet.plugins.module_utils._errors import ConfigError
from ansible_collections.edgeai.fleet.plugins.module_utils._model_config import (
    load_config_text,
    parse_config,
    render_config,
)
from ansible_collections.edgeai.fleet.plugins.plugin_utils._release_build._common import (
    BuildError,
    fits,
    kserve_type,
    triton_type,
)
from ansible_collections.edgeai.fleet.plugins.plugin_utils._release_build._inspect import (
    tensors_from_config,
    tensors_from_signature,
)

# kind -> (platform it serves on, the server's field and value)
SERVING = {
    "tflite": ("coral", "backend", "tflite"),
    "onnx": ("jetson", "backend", "onnxruntime"),
    "plan": ("jetson", "platform", "tensorrt_plan"),
    "python": ("jetson", "backend", "python"),
}
# Triton backend each kind needs on the device (the release's requires.backends).
BACKENDS = {"onnx": "onnxruntime", "plan": "tensorrt", "python": "python"}


def check_platform(kind, platform, key, path):
    wanted = SERVING[kind][0]
    if platform != wanted:
        what = {"tflite": "a .tflite model serves on Coral (the LiteRT server)",
                "onnx": "an ONNX model serves on Jetson (Triton's onnxruntime backend)",
                "plan": "a TensorRT plan serves on Jetson (Triton's tensorrt_plan platform)",
                "python": "a Triton python model serves on Jetson (Triton's python backend)"}[kind]
        hint = (" Give one model per platform: model: {coral: model.tflite, jetson: model.onnx}" if platform in
                ("coral", "jetson") else "")
        raise BuildError(f"artifact {key} is for platform {platform}, but {path}: {what}.{hint}")


def read_user_config(config, where):
    """The user's configuration: a dict (Triton's JSON form) or the path of a config.pbtxt."""
    if config is None:
        return None
    if isinstance(config, str):
        if not os.path.isfile(config):
            raise BuildError(f"{where}: config {config} does not exist on the controller")
        with open(config, encoding="utf-8") as handle:
            text = handle.read()
        try:
            return parse_config(text)
        except ConfigError as exc:
            raise BuildError(f"{where}: config {config}: {exc.msg}") from None
    if not isinstance(config, dict):
        raise BuildError(f"{where}: config must be a mapping (Triton's ModelConfig) or the path of a config.pbtxt")
    return dict(config)


def _check_user_tensors(user, model_tensors, field, mbs, where):
    """A configuration's inputs or outputs must be the model's: same names, types, dims."""
    by_name = {t.name: t for t in model_tensors}
    listed = user.get(field) or []
    names = [str(item.get("name")) for item in listed if isinstance(item, dict)]
    if sorted(names) != sorted(by_name):
        raise BuildError(f"{where}: config {field} {sorted(names)} are not the model's {field}s {sorted(by_name)}")
    for item in listed:
        tensor = by_name[str(item["name"])]
        if kserve_type(item.get("data_type")) != tensor.datatype:
            raise BuildError(f"{where}: config {field} {tensor.name!r} has data_type {item.get('data_type')}, the "
                             f"model has {triton_type(tensor.datatype)}")
        dims = item.get("dims")
        dims = [int(d) for d in (dims if isinstance(dims, list) else [dims])]
        full = ([-1] if mbs > 0 else []) + dims
        if not fits(tensor.shape, full) and not (tensor.shape == [] and dims == [1]):
            raise BuildError(f"{where}: config {field} {tensor.name!r} dims {dims} do not match the model's shape "
                             f"{tensor.shape} (max_batch_size {mbs})")


def _entry(tensor, mbs):
    dims = tensor.shape[1:] if mbs > 0 else list(tensor.shape)
    entry = {"name": tensor.name, "data_type": triton_type(tensor.datatype), "dims": dims or [1]}
    if not dims:
        entry["reshape"] = {"shape": []}
    return entry


def _check_batching(tensors, mbs, where):
    if mbs <= 0:
        return
    fixed = [f"{t.name} {t.shape}" for t in tensors if not t.shape or t.shape[0] != -1]
    if fixed:
        raise BuildError(f"{where}: max_batch_size {mbs} needs every input and output to have an open first "
                         f"dimension (the batch), and these have none: {', '.join(fixed)}; leave max_batch_size at 0")


def build_config(name, info, max_batch_size=0, config=None, signature=None, where="the model"):
    """Return (config text, config dict, inputs, outputs, max_batch_size) for ``info``; for
    opaque models (plan, python) the inputs and outputs come from the configuration or the
    signature the user gives (or the folder's config.pbtxt)."""
    kind = info.kind
    user = read_user_config(config, where)
    field, value = SERVING[kind][1], SERVING[kind][2]
    mbs = int(max_batch_size or 0)
    if mbs < 0:
        raise BuildError(f"{where}: max_batch_size must be 0 or more")
    if kind in ("plan", "python"):
        base = user if user is not None else info.config
        if base is not None and (base.get("input") or base.get("output")):
            inputs, outputs, cfg_mbs = tensors_from_config(base, where)
            mbs = mbs or cfg_mbs
            if mbs and not cfg_mbs:  # dims of a config without batching hold the full shape
                inputs, outputs, dummy = tensors_from_config(dict(base, max_batch_size=mbs), where)
        elif signature is not None:
            inputs, outputs = tensors_from_signature(signature, where)
        else:
            what = "a TensorRT engine cannot be read here" if kind == "plan" else "its config.pbtxt lists no tensors"
            raise BuildError(f"{where}: {what}; give its inputs and outputs: signature: {{inputs: [{{name, datatype, "
                             "shape}], outputs: [...]}}, or config: <path of its config.pbtxt>")
        info.inputs, info.outputs = inputs, outputs
        base = dict(base or {})
        if kind == "python" and base.get("backend"):
            value = base["backend"]
        if kind == "python" and base.get("platform") and not base.get("backend"):
            field, value = "platform", base["platform"]
    else:
        base = dict(user or {})
        if user is not None and user.get("max_batch_size") is not None and not max_batch_size:
            mbs = int(user["max_batch_size"])
        for key in ("input", "output"):
            if base.get(key):
                _check_user_tensors(base, info.inputs if key == "input" else info.outputs, key, mbs, where)
    _check_batching(info.inputs + info.outputs, mbs, where)
    for key in ("backend", "platform"):
        if base.get(key) and base[key] != value and not (kind == "python"):
            raise BuildError(f"{where}: config {key} {base[key]!r} is not what a {kind} model needs ({field}: {value})")
    out = {"name": name, field: value, "max_batch_size": mbs,
           "input": [_entry(t, mbs) for t in info.inputs], "output": [_entry(t, mbs) for t in info.outputs]}
    for key, item in base.items():
        if key in ("name", "backend", "platform", "max_batch_size", "input", "output"):
            continue
        out[key] = item
    text = render_config(out)
    try:
        parsed = load_config_text(text, name)
    except ConfigError as exc:
        raise BuildError(f"{where}: the configuration is not valid: {exc.msg}") from None
    return text, parsed, info.inputs, info.outputs, mbs
