# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
"""What every part of the release builder shares: the error type, the guarded imports of the
controller-side extras (requirements/builder.txt), and the tensor description with its type
tables (KServe v2 datatypes, Triton's TYPE_*, numpy)."""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field

from ansible_collections.edgeai.fleet.plugins.module_utils._errors import EdgeAIError

GENERATED_BY = "edgeai.fleet.release_build"
PLATFORMS = ("coral", "jetson")
# What `pip install` needs for each import the builder guards.
PACKAGES = {
    "numpy": "numpy",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "ai_edge_litert": "ai-edge-litert",
    "PIL": "pillow",
}


class BuildError(EdgeAIError):
    """The release cannot be built as asked; the message says why and what to change."""


class MissingDependency(BuildError):
    """A Python package the builder needs is not importable on the controller."""


def require(module, purpose):
    """Import ``module`` or raise :class:`MissingDependency` naming the package to install,
    the way Ansible's missing_required_lib does for modules."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".", 1)[0]
        package = PACKAGES.get(top, top)
        raise MissingDependency(
            f"{purpose} needs the Python package {package} on the controller, and {sys.executable} cannot import "
            f"{module} ({exc}). Install it into the Python that runs Ansible: {sys.executable} -m pip install "
            f"{package} (or all of the builder's packages: -r requirements/builder.txt of the edgeai.fleet "
            "collection)", missing=package) from None


def plain(value):
    """``value`` with only plain Python types (Ansible's tagged strings and containers become
    str, dict and list), so that YAML and JSON writers take it."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain(v) for v in value]
    return value


def numpy():
    return require("numpy", "the release builder")


# KServe v2 datatype -> numpy dtype name (BYTES is an object array; BF16 has no numpy type).
KSERVE_NUMPY = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64",
}
NUMPY_KSERVE = {v: k for k, v in KSERVE_NUMPY.items()}
DATATYPES = tuple(KSERVE_NUMPY) + ("BYTES", "BF16")


def fits(model_shape, shape):
    """Whether ``shape`` fits ``model_shape`` (same rank, -1 in either matches any size)."""
    model_shape, shape = list(model_shape), list(shape)
    return len(model_shape) == len(shape) and all(
        m == s or m == -1 or s == -1 for m, s in zip(model_shape, shape, strict=True))


def triton_type(datatype):
    """KServe datatype -> Triton data_type (TYPE_STRING for BYTES)."""
    return "TYPE_STRING" if datatype == "BYTES" else "TYPE_" + datatype


def kserve_type(data_type):
    """Triton data_type (TYPE_FP32) or a KServe datatype (FP32) -> the KServe datatype."""
    text = str(data_type or "").strip().upper()
    if text.startswith("TYPE_"):
        text = text[len("TYPE_"):]
        text = "BYTES" if text == "STRING" else text
    if text not in DATATYPES:
        raise BuildError(f"unknown tensor datatype {data_type!r}; expected one of {', '.join(DATATYPES)} "
                         "(KServe names) or TYPE_* (Triton names)")
    return text


@dataclass
class Tensor:
    """One input or output of a model as a server publishes it: the model's own name, the
    KServe datatype and the full shape (-1 for a dimension the model leaves open)."""

    name: str
    datatype: str
    shape: list
    quantization: dict | None = None  # TFLite: {"scale": [...], "zero_point": [...]}
    extra: dict = field(default_factory=dict)

    @property
    def numpy_dtype(self):
        return KSERVE_NUMPY.get(self.datatype)

    def describe(self):
        out = {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}
        if self.quantization:
            out["quantization"] = self.quantization
        return out


@dataclass
class ModelInfo:
    """What the builder knows of one model file or folder."""

    kind: str  # tflite | onnx | plan | python
    path: str
    inputs: list
    outputs: list
    edgetpu: bool = False  # a .tflite compiled for the Edge TPU (contains edgetpu-custom-op)
    runnable: bool = True  # the builder can run it on the controller to compute the smoke test
    why_not_runnable: str = ""
    config: dict | None = None  # a configuration that came with the model (python folder, plan)
    files: list = field(default_factory=list)  # (source path, name inside the version folder)
    notes: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def describe(self):
        return {"kind": self.kind, "edgetpu": self.edgetpu, "inputs": [t.describe() for t in self.inputs],
                "outputs": [t.describe() for t in self.outputs]}
