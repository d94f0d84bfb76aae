"""Triton ``config.pbtxt``: a small protobuf text-format parser and the subset we use.

Supported fields: name, platform, backend, max_batch_size, default_model_filename,
input/output {name, data_type, dims}, version_policy {latest {num_versions} | specific
{versions} | all {}}. Other fields are parsed and ignored.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from litert_server.errors import LoadError

# Triton data_type -> KServe v2 datatype
TRITON_TO_KSERVE = {
    "TYPE_BOOL": "BOOL",
    "TYPE_UINT8": "UINT8",
    "TYPE_UINT16": "UINT16",
    "TYPE_UINT32": "UINT32",
    "TYPE_UINT64": "UINT64",
    "TYPE_INT8": "INT8",
    "TYPE_INT16": "INT16",
    "TYPE_INT32": "INT32",
    "TYPE_INT64": "INT64",
    "TYPE_FP16": "FP16",
    "TYPE_FP32": "FP32",
    "TYPE_FP64": "FP64",
    "TYPE_STRING": "BYTES",
}
SUPPORTED_PLATFORMS = {"tflite", "tensorflow_lite", "litert"}

_TOKEN = re.compile(
    r"""\s+|\#[^\n]*|(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|(?P<punct>[{}\[\]:,;<>])|(?P<word>[^\s{}\[\]:,;<>"'#]+)"""
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise LoadError(f"config.pbtxt: cannot parse near {text[pos : pos + 20]!r}")
        pos = m.end()
        if m.lastgroup:
            out.append((m.lastgroup, m.group(m.lastgroup)))
    return out


def _scalar(kind: str, tok: str) -> Any:
    if kind == "str":
        return bytes(tok[1:-1], "utf-8").decode("unicode_escape")
    for conv in (int, float):
        try:
            return conv(tok)
        except ValueError:
            pass
    return tok


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def next(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise LoadError("config.pbtxt: unexpected end of text")
        self.i += 1
        return tok

    def message(self, end: str | None) -> dict[str, list[Any]]:
        msg: dict[str, list[Any]] = {}
        while True:
            tok = self.peek()
            if tok is None:
                if end is not None:
                    raise LoadError(f"config.pbtxt: missing {end!r}")
                return msg
            if tok[0] == "punct" and tok[1] == end:
                self.i += 1
                return msg
            if tok[0] == "punct" and tok[1] in ",;":
                self.i += 1
                continue
            kind, name = self.next()
            if kind != "word":
                raise LoadError(f"config.pbtxt: expected a field name, got {name!r}")
            tok = self.peek()
            if tok and tok[1] == ":":
                self.i += 1
            msg.setdefault(name, []).extend(self.value())

    def value(self) -> list[Any]:
        kind, tok = self.next()
        if kind == "punct" and tok in "{<":
            return [self.message("}" if tok == "{" else ">")]
        if kind == "punct" and tok == "[":
            items: list[Any] = []
            while True:
                nk, nt = self.peek() or ("", "")
                if nk == "punct" and nt == "]":
                    self.i += 1
                    return items
                if nk == "punct" and nt == ",":
                    self.i += 1
                    continue
                items.extend(self.value())
        if kind == "punct":
            raise LoadError(f"config.pbtxt: unexpected {tok!r}")
        return [_scalar(kind, tok)]


def parse_pbtxt(text: str) -> dict[str, list[Any]]:
    """Parse protobuf text format into ``{field: [values…]}`` (messages are dicts)."""
    return _Parser(text).message(None)


def _to_plain(msg: dict[str, list[Any]], repeated: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, values in msg.items():
        conv = [_to_plain(v, repeated) if isinstance(v, dict) else v for v in values]
        out[key] = conv if key in repeated else conv[-1]
    return out


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
    out = []
    for item in items or []:
        if not isinstance(item, dict) or not item.get("name"):
            raise LoadError(f"config: every {what} needs a name")
        dtype = str(item.get("data_type", ""))
        if dtype not in TRITON_TO_KSERVE:
            raise LoadError(f"config: {what} {item['name']!r} has unsupported data_type {dtype!r}")
        dims = item.get("dims", [])
        if not isinstance(dims, list) or not all(isinstance(d, int) for d in dims):
            raise LoadError(f"config: {what} {item['name']!r} dims must be a list of integers")
        out.append(TensorConfig(str(item["name"]), TRITON_TO_KSERVE[dtype], tuple(dims)))
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
    try:
        mbs = int(data.get("max_batch_size", 0))
    except (TypeError, ValueError) as exc:
        raise LoadError("config: max_batch_size must be an integer") from exc
    if mbs < 0:
        raise LoadError("config: max_batch_size must be >= 0")
    policy, num, versions = "latest", 1, ()
    vp = data.get("version_policy") or {}
    if not isinstance(vp, dict) or len(vp) > 1:
        raise LoadError("config: version_policy must hold one of latest, specific, all")
    if "latest" in vp:
        try:
            num = int((vp["latest"] or {}).get("num_versions", 1))
        except (TypeError, ValueError, AttributeError) as exc:
            raise LoadError("config: version_policy latest num_versions must be an integer") from exc
        if num < 1:
            raise LoadError("config: version_policy latest num_versions must be >= 1")
    elif "specific" in vp:
        policy = "specific"
        raw = (vp["specific"] or {}).get("versions", [])
        raw = raw if isinstance(raw, list) else [raw]
        try:
            versions = tuple(sorted({int(v) for v in raw}))
        except (TypeError, ValueError) as exc:
            raise LoadError("config: version_policy specific versions must be integers") from exc
        if not versions:
            raise LoadError("config: version_policy specific needs at least one version")
    elif "all" in vp:
        policy = "all"
    return ModelConfig(
        name=name,
        platform="tflite",
        max_batch_size=mbs,
        default_model_filename=str(data.get("default_model_filename") or "model.tflite"),
        inputs=_tensor_list(data.get("input"), "input"),
        outputs=_tensor_list(data.get("output"), "output"),
        policy=policy,
        num_versions=num,
        versions=versions,
        source=data,
    )


def config_from_pbtxt(text: str, model_name: str) -> ModelConfig:
    plain = _to_plain(parse_pbtxt(text), repeated={"input", "output", "dims", "versions"})
    return config_from_dict(plain, model_name)


def config_from_json(text: str, model_name: str) -> ModelConfig:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise LoadError(f"config parameter is not valid JSON: {exc}") from exc
    return config_from_dict(data, model_name)
