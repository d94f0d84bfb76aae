"""Triton ``config.pbtxt`` and its JSON form: the subset this server uses.

The text is parsed by ``litert_server._pbtxt``, a byte-identical copy of the collection's
``plugins/module_utils/_pbtxt.py`` (the project's one config.pbtxt parser). Used fields: name,
platform, backend, max_batch_size, default_model_filename, input/output {name, data_type,
dims}, version_policy {latest {num_versions} | specific {versions} | all {}}. Other fields are
parsed and ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from litert_server import jsonlimits
from litert_server._pbtxt import (
    KSERVE_DATATYPE,
    MAX_CHARS,
    MODEL_FILENAME_RULE,
    PbtxtError,
    model_filename_ok,
    parse_message,
    plain,
)
from litert_server.errors import LoadError

# Triton data_type -> KServe v2 datatype, for the types LiteRT and numpy have (no BF16)
TRITON_TO_KSERVE = {t: k for t, k in KSERVE_DATATYPE.items() if t != "TYPE_BF16"}
SUPPORTED_PLATFORMS = {"tflite", "tensorflow_lite", "litert"}
# A configuration is a few KiB; its JSON form gets these limits
CONFIG_JSON_LIMITS = jsonlimits.JSONLimits(max_depth=32, max_elements=100_000)
_ASCII_INT = re.compile(r"-?[0-9]{1,18}")


def parse_pbtxt(text: str) -> dict[str, list[Any]]:
    """Parse protobuf text format into ``{field: [values...]}`` (messages are dicts)."""
    try:
        return parse_message(text)
    except PbtxtError as exc:
        raise LoadError(exc.msg) from exc


def _int(value: Any, what: str) -> int:
    """An integer field: a JSON/pbtxt integer, or a string of ASCII digits (Triton's JSON form
    writes int64 fields as strings); no bools, floats or other digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _ASCII_INT.fullmatch(value):
        return int(value)
    raise LoadError(f"config: {what} must be an integer")


@dataclass(frozen=True)
class TensorConfig:
    name: str
    datatype: str  # KServe datatype
    dims: tuple[int, ...]


@dataclass(frozen=True)
class ModelConfig:
    name: str
    platform: str = "tflite"
    max_batch_size: int = 0
    default_model_filename: str = "model.tflite"
    inputs: tuple[TensorConfig, ...] = ()
    outputs: tuple[TensorConfig, ...] = ()
    policy: str = "latest"  # latest | specific | all
    num_versions: int = 1
    versions: tuple[int, ...] = ()
    source: dict[str, Any] = field(default_factory=dict, compare=False)

    def select_versions(self, available: list[int]) -> list[int]:
        """Versions to load under the version policy (sorted ascending)."""
        avail = sorted(available)
        if self.policy == "all":
            return avail
        if self.policy == "specific":
            missing = [v for v in self.versions if v not in avail]
            if missing:
                raise LoadError(f"version_policy specific lists versions not in the repository: {missing}")
            return sorted(self.versions)
        return avail[-self.num_versions :] if avail else []

    def as_json(self) -> dict[str, Any]:
        """The configuration in Triton's JSON shape (GET /v2/models/<m>/config)."""
        kserve_to_triton = {v: k for k, v in TRITON_TO_KSERVE.items()}

        def tensors(ts: tuple[TensorConfig, ...]) -> list[dict[str, Any]]:
            return [
                {"name": t.name, "data_type": kserve_to_triton.get(t.datatype, t.datatype), "dims": list(t.dims)}
                for t in ts
            ]

        if self.policy == "specific":
            policy: dict[str, Any] = {"specific": {"versions": list(self.versions)}}
        elif self.policy == "all":
            policy = {"all": {}}
        else:
            policy = {"latest": {"num_versions": self.num_versions}}
        return {
            "name": self.name,
            "platform": "tflite",
            "backend": "tflite",
            "max_batch_size": self.max_batch_size,
            "default_model_filename": self.default_model_filename,
            "input": tensors(self.inputs),
            "output": tensors(self.outputs),
            "version_policy": policy,
        }


def _tensor_list(items: Any, what: str) -> tuple[TensorConfig, ...]:
    if items is None:
        return ()
    if not isinstance(items, list):
        raise LoadError(f"config: {what} must be a list of tensors")
    out = []
    for item in items:
        if not isinstance(item, dict) or not item.get("name"):
            raise LoadError(f"config: every {what} needs a name")
        dtype = str(item.get("data_type", ""))
        if dtype not in TRITON_TO_KSERVE:
            raise LoadError(f"config: {what} {item['name']!r} has unsupported data_type {dtype!r}")
        dims = item.get("dims", [])
        if not isinstance(dims, list):
            dims = [dims]
        ints = tuple(_int(d, f"{what} {item['name']!r} dims") for d in dims)
        out.append(TensorConfig(str(item["name"]), TRITON_TO_KSERVE[dtype], ints))
    return tuple(out)


def config_from_dict(data: dict[str, Any], model_name: str) -> ModelConfig:
    """Build a ModelConfig from Triton's JSON form (also what the pbtxt parser yields)."""
    if not isinstance(data, dict):
        raise LoadError("config must be an object")
    name = str(data.get("name") or model_name)
    if name != model_name:
        raise LoadError(f"config name {name!r} does not match the model directory {model_name!r}")
    platform = str(data.get("platform") or data.get("backend") or "tflite")
    if platform not in SUPPORTED_PLATFORMS:
        raise LoadError(f"platform/backend {platform!r} is not served here (this server runs tflite models)")
    mbs = _int(data.get("max_batch_size", 0), "max_batch_size")
    if mbs < 0:
        raise LoadError("config: max_batch_size must be >= 0")
    policy, num, versions = "latest", 1, ()
    vp = data.get("version_policy") or {}
    if not isinstance(vp, dict) or len(vp) > 1:
        raise LoadError("config: version_policy must hold one of latest, specific, all")
    if "latest" in vp:
        latest = vp["latest"] or {}
        if not isinstance(latest, dict):
            raise LoadError("config: version_policy latest must be a message")
        num = _int(latest.get("num_versions", 1), "version_policy latest num_versions")
        if num < 1:
            raise LoadError("config: version_policy latest num_versions must be >= 1")
    elif "specific" in vp:
        policy = "specific"
        specific = vp["specific"] or {}
        if not isinstance(specific, dict):
            raise LoadError("config: version_policy specific must be a message")
        raw = specific.get("versions", [])
        raw = raw if isinstance(raw, list) else [raw]
        versions = tuple(sorted({_int(v, "version_policy specific versions") for v in raw}))
        if not versions:
            raise LoadError("config: version_policy specific needs at least one version")
    elif "all" in vp:
        policy = "all"
    filename = data.get("default_model_filename")
    if filename is None or filename == "":
        filename = "model.tflite"
    elif not model_filename_ok(filename):
        raise LoadError("config: " + MODEL_FILENAME_RULE)
    return ModelConfig(
        name=name,
        platform="tflite",
        max_batch_size=mbs,
        default_model_filename=filename,
        inputs=_tensor_list(data.get("input"), "input"),
        outputs=_tensor_list(data.get("output"), "output"),
        policy=policy,
        num_versions=num,
        versions=versions,
        source=data,
    )


def config_from_pbtxt(text: str, model_name: str) -> ModelConfig:
    return config_from_dict(plain(parse_pbtxt(text)), model_name)


def config_from_json(text: str, model_name: str) -> ModelConfig:
    if len(text) > MAX_CHARS:
        raise LoadError(f"config parameter is longer than {MAX_CHARS} characters")
    try:
        data = jsonlimits.loads(text, CONFIG_JSON_LIMITS)
    except jsonlimits.JSONLimitError as exc:
        raise LoadError(f"config parameter is not valid JSON: {exc}") from exc
    return config_from_dict(data, model_name)
