# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
"""Read a model's signature: what it takes and what it gives, with the model's own names.

- ``.tflite``: the flatbuffer schema that ai-edge-litert ships (``schema_py_generated``), read
  lazily (the table readers, not the object API, so a large model's buffers are never copied
  into Python lists): subgraph 0's inputs and outputs, the tensors' names, types,
  ``shape_signature`` (-1 = open) and quantization; an Edge TPU-compiled model is one whose
  operator codes hold the custom op ``edgetpu-custom-op``. The LiteRT server publishes the
  same names (``get_input_details``), so these are the names its config must list.
- ``.onnx``: the ``onnx`` package (graph inputs that are not initializers, graph outputs;
  ``dim_value`` or -1 for a symbolic or unknown dimension); external data files are found and
  shipped next to the model.
- TensorRT ``.plan`` / ``.engine``: opaque here (an engine only deserializes on the GPU and
  TensorRT it was built for): the signature comes from the user (``signature`` or ``config``).
- A Triton python model folder (``model.py`` and ``config.pbtxt``, or ``<n>/model.py``): the
  signature comes from its ``config.pbtxt`` (or ``signature``/``config``)."""

from __future__ import annotations

import os
import re
import stat

from ansible_collections.edgeai.fleet.plugins.module_utils._model_config import parse_config
from ansible_collections.edgeai.fleet.plugins.plugin_utils._release_build._common import (
    BuildError,
    ModelInfo,
    Tensor,
    kserve_type,
    require,
)

EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
TFLITE_EXTENSIONS = (".tflite",)
ONNX_EXTENSIONS = (".onnx",)
PLAN_EXTENSIONS = (".plan", ".engine", ".trt")
# TFLite TensorType value -> KServe datatype (names from schema_py_generated.TensorType).
_TFLITE_TYPES = {
    "FLOAT32": "FP32", "FLOAT16": "FP16", "FLOAT64": "FP64", "INT8": "INT8", "UINT8": "UINT8",
    "INT16": "INT16", "UINT16": "UINT16", "INT32": "INT32", "UINT32": "UINT32", "INT64": "INT64",
    "UINT64": "UINT64", "BOOL": "BOOL", "STRING": "BYTES", "BFLOAT16": "BF16",
}
# onnx.TensorProto.DataType name -> KServe datatype.
_ONNX_TYPES = {
    "FLOAT": "FP32", "FLOAT16": "FP16", "DOUBLE": "FP64", "BFLOAT16": "BF16", "INT8": "INT8", "UINT8": "UINT8",
    "INT16": "INT16", "UINT16": "UINT16", "INT32": "INT32", "UINT32": "UINT32", "INT64": "INT64",
    "UINT64": "UINT64", "BOOL": "BOOL", "STRING": "BYTES",
}
_SKIP_IN_FOLDER = ("__pycache__", ".git", ".ipynb_checkpoints")
MAX_FOLDER_FILES = 10000


def detect_kind(path):
    """tflite | onnx | plan | python for a model path; BuildError for anything else."""
    if not os.path.exists(path):
        raise BuildError(f"model {path} does not exist on the controller")
    if os.path.isdir(path):
        return "python"
    lower = path.lower()
    if lower.endswith(TFLITE_EXTENSIONS):
        return "tflite"
    if lower.endswith(ONNX_EXTENSIONS):
        return "onnx"
    if lower.endswith(PLAN_EXTENSIONS):
        return "plan"
    raise BuildError(f"model {path}: cannot tell what it is from its name; give a .tflite (Coral), .onnx, a "
                     "TensorRT .plan (Jetson) or a Triton python model folder (model.py + config.pbtxt)")


# -- TFLite --------------------------------------------------------------------------------
def _tflite_schema():
    return require("ai_edge_litert.schema_py_generated", "reading a .tflite model")


def _vector(table, name):
    length = getattr(table, name + "Length")()
    getter = getattr(table, name)
    return [int(getter(i)) for i in range(length)]


def _tflite_root(schema, data, label):
    if len(data) < 8 or not schema.Model.ModelBufferHasIdentifier(data, 0):
        raise BuildError(f"{label} is not a TFLite flatbuffer (no TFL3 identifier)")
    try:
        return schema.Model.GetRootAs(data, 0)
    except Exception as exc:  # flatbuffers raises plain errors on a damaged buffer
        raise BuildError(f"{label} cannot be read as a TFLite flatbuffer: {exc}") from None


def inspect_tflite(path):
    schema = _tflite_schema()
    with open(path, "rb") as handle:
        data = handle.read()
    model = _tflite_root(schema, data, f"model {path}")
    names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_") and isinstance(v, int)}
    try:
        if model.SubgraphsLength() < 1:
            raise BuildError(f"model {path} has no subgraph")
        custom = set()
        for i in range(model.OperatorCodesLength()):
            code = model.OperatorCodes(i).CustomCode()
            if code:
                custom.add(code.decode("utf-8", "replace"))
        graph = model.Subgraphs(0)

        def tensors(indexes, what):
            out = []
            for index in indexes:
                t = graph.Tensors(index)
                name = (t.Name() or b"").decode("utf-8", "replace")
                type_name = names.get(t.Type(), str(t.Type()))
                datatype = _TFLITE_TYPES.get(type_name)
                if datatype is None:
                    raise BuildError(f"model {path}: {what} {name!r} has type {type_name}, which the servers "
                                     "cannot exchange")
                shape = _vector(t, "Shape")
                signature = _vector(t, "ShapeSignature") if t.ShapeSignatureLength() else []
                q = t.Quantization()
                quant = None
                if q is not None and q.ScaleLength():
                    quant = {"scale": [float(q.Scale(i)) for i in range(q.ScaleLength())],
                             "zero_point": [int(q.ZeroPoint(i)) for i in range(q.ZeroPointLength())]}
                out.append(Tensor(name, datatype, signature if len(signature) == len(shape) else shape, quant))
            return out

        inputs = tensors(_vector(graph, "Inputs"), "input")
        outputs = tensors(_vector(graph, "Outputs"), "output")
        signatures = []
        for i in range(model.SignatureDefsLength()):
            sig = model.SignatureDefs(i)
            signatures.append((sig.SignatureKey() or b"").decode("utf-8", "replace"))
    except BuildError:
        raise
    except Exception as exc:  # a damaged buffer
        raise BuildError(f"model {path} cannot be read as a TFLite flatbuffer: {exc}") from None
    edgetpu = EDGETPU_CUSTOM_OP in custom
    info = ModelInfo("tflite", path, inputs, outputs, edgetpu=edgetpu, files=[(path, "model.tflite")])
    if edgetpu:
        info.runnable = False
        info.why_not_runnable = (f"it is compiled for the Edge TPU (it contains the custom op {EDGETPU_CUSTOM_OP}), "
                                 "which runs only with an Edge TPU and its runtime, not on the controller")
    elif custom:
        info.notes.append(f"custom operators {sorted(custom)}: the device's LiteRT must provide them")
    if signatures:
        info.notes.append(f"signature defs {signatures}: the servers serve subgraph 0 by its tensor names")
    return info


# -- ONNX ----------------------------------------------------------------------------------
def _external_files(model, path):
    """(source, name) of the external data files an ONNX model refers to."""
    base = os.path.dirname(os.path.abspath(path))
    found = []
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                tensors.append(attr.t)
    for tensor in tensors:
        if tensor.data_location != 1:  # TensorProto.EXTERNAL
            continue
        location = dict((e.key, e.value) for e in tensor.external_data).get("location", "")
        if not location or os.path.isabs(location) or ".." in re.split(r"[\\/]", location) or "\\" in location:
            raise BuildError(f"model {path}: initializer {tensor.name!r} keeps its data in {location!r}, which is not "
                             "a file next to the model; save the model with its external data beside it "
                             "(onnx.save(..., save_as_external_data=True, location='model.onnx.data'))")
        source = os.path.join(base, location)
        if not os.path.isfile(source):
            raise BuildError(f"model {path}: its external data file {location} is missing next to it")
        if (source, location) not in found:
            found.append((source, location))
    return found


def inspect_onnx(path):
    onnx = require("onnx", "reading an .onnx model")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others
        raise BuildError(f"model {path} cannot be read as an ONNX model: {exc}") from None
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    type_names = {v: k for k, v in onnx.TensorProto.DataType.items()}

    def tensors(values, what):
        out = []
        for value in values:
            if value.name in initializers:
                continue  # older exporters list the weights as inputs too
            kind = value.type.WhichOneof("value")
            if kind != "tensor_type":
                raise BuildError(f"model {path}: {what} {value.name!r} is a {kind}, not a tensor; the servers exchange "
                                 "tensors only")
            tt = value.type.tensor_type
            type_name = type_names.get(tt.elem_type, str(tt.elem_type))
            datatype = _ONNX_TYPES.get(type_name)
            if datatype is None:
                raise BuildError(f"model {path}: {what} {value.name!r} has type {type_name}, which the servers "
                                 "cannot exchange")
            if not tt.HasField("shape"):
                raise BuildError(f"model {path}: {what} {value.name!r} has no shape; give the model one (for example "
                                 "with onnx.shape_inference) or give `signature`")
            shape = [int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tt.shape.dim]
            out.append(Tensor(value.name, datatype, shape))
        return out

    inputs = tensors(graph.input, "input")
    outputs = tensors(graph.output, "output")
    files = [(path, "model.onnx")] + _external_files(model, path)
    info = ModelInfo("onnx", path, inputs, outputs, files=files)
    info.extra = {"opsets": {o.domain or "ai.onnx": int(o.version) for o in model.opset_import},
                  "ir_version": int(model.ir_version), "producer": model.producer_name}
    return info


# -- opaque models: TensorRT plans and Triton python models ---------------------------------
def tensors_from_config(config, where):
    """(inputs, outputs, max_batch_size) from a parsed Triton configuration: full shapes (the
    batch dimension added as -1 when max_batch_size > 0)."""
    mbs = int(config.get("max_batch_size") or 0)

    def read(field):
        out = []
        for item in config.get(field) or []:
            if not isinstance(item, dict) or not item.get("name"):
                raise BuildError(f"{where}: every {field} needs a name")
            dims = item.get("dims")
            dims = dims if isinstance(dims, list) else [dims] if dims is not None else None
            if dims is None:
                raise BuildError(f"{where}: {field} {item['name']!r} has no dims")
            shape = ([-1] if mbs > 0 else []) + [int(d) for d in dims]
            out.append(Tensor(str(item["name"]), kserve_type(item.get("data_type")), shape))
        return out

    inputs, outputs = read("input"), read("output")
    if not inputs or not outputs:
        raise BuildError(f"{where}: the configuration must list the model's input and output tensors")
    return inputs, outputs, mbs


def tensors_from_signature(signature, where):
    """(inputs, outputs) from ``signature: {inputs: [{name, datatype, shape}], outputs: [...]}``
    (KServe form: full shapes with -1 for open dimensions; Triton's data_type/dims also read)."""
    if not isinstance(signature, dict):
        raise BuildError(f"{where}: signature must be a mapping with inputs and outputs")

    def read(field):
        items = signature.get(field)
        if not isinstance(items, list) or not items:
            raise BuildError(f"{where}: signature.{field} must be a list of tensors (name, datatype, shape)")
        out = []
        for item in items:
            if not isinstance(item, dict) or not item.get("name"):
                raise BuildError(f"{where}: every tensor of signature.{field} needs a name")
            shape = item.get("shape", item.get("dims"))
            if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and
                                                      (d > 0 or d == -1) for d in shape):
                raise BuildError(f"{where}: signature.{field} {item['name']!r}: shape must be a list of positive "
                                 "integers or -1")
            out.append(Tensor(str(item["name"]), kserve_type(item.get("datatype", item.get("data_type"))),
                              list(shape)))
        return out

    return read("inputs"), read("outputs")


def inspect_plan(path):
    info = ModelInfo("plan", path, [], [], runnable=False, files=[(path, "model.plan")])
    info.why_not_runnable = ("a TensorRT engine runs only on the GPU and TensorRT version it was built for, not on "
                             "the controller")
    return info


def _folder_files(root):
    files = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_IN_FOLDER)
        for d in dirnames:
            if os.path.islink(os.path.join(dirpath, d)):
                raise BuildError(f"model folder {root}: {os.path.join(dirpath, d)} is a link; copy the files in")
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if not stat.S_ISREG(st.st_mode):
                raise BuildError(f"model folder {root}: {full} is not a regular file (links are not shipped); copy "
                                 "the file in")
            if name.endswith((".pyc", ".pyo")):
                continue
            files.append((full, os.path.relpath(full, root).replace(os.sep, "/")))
            if len(files) > MAX_FOLDER_FILES:
                raise BuildError(f"model folder {root} has more than {MAX_FOLDER_FILES} files")
    return files


def inspect_python(path):
    """A Triton python model: ``model.py`` (+ files) and ``config.pbtxt`` at the top, or a
    Triton model folder with one numbered version folder holding ``model.py``."""
    top = os.path.abspath(path)
    config_path = os.path.join(top, "config.pbtxt")
    source = top
    if not os.path.isfile(os.path.join(top, "model.py")):
        versions = [d for d in sorted(os.listdir(top)) if d.isdigit() and os.path.isdir(os.path.join(top, d))]
        if len(versions) == 1 and os.path.isfile(os.path.join(top, versions[0], "model.py")):
            source = os.path.join(top, versions[0])
        else:
            raise BuildError(f"model folder {path} has no model.py (a Triton python model: model.py and config.pbtxt, "
                             "or config.pbtxt and one version folder <n>/model.py)")
    config = None
    if os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as handle:
            config = parse_config(handle.read())
    files = [(src, rel) for src, rel in _folder_files(source)
             if source != top or rel not in ("config.pbtxt", "smoke_test.json")]
    info = ModelInfo("python", path, [], [], runnable=False, config=config, files=files)
    info.why_not_runnable = ("a Triton python model runs inside Triton's python backend "
                             "(triton_python_backend_utils), not on the controller")
    return info


def inspect(path):
    kind = detect_kind(path)
    return {"tflite": inspect_tflite, "onnx": inspect_onnx, "plan": inspect_plan, "python": inspect_python}[kind](path)
