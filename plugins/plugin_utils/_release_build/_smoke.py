# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
"""The golden smoke test: inputs, the model's answer to them on the controller, and the
tolerance the device's answer is compared with. Written as ``<name>/smoke_test.json``::

    {"format": 1, "generated_by": "edgeai.fleet.release_build", "seed": 0,
     "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [...]}],
     "expected_outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 4], "data": [...],
                           "tolerance": 0.001}],
     "relative_tolerance": 0.001}

``data`` is row-major and flat; floats are written in the shortest form that reads back as the
same value of their type (numpy's repr of a float32), so a device sends the model exactly the
inputs the builder used. The device passes an output when every value is within
``tolerance + relative_tolerance * |expected|`` (plugins/module_utils/_inference_model.py).

Inputs: the user's (``.npy``, ``.npz`` keyed by input name, an image), or seeded random ones
(numpy's default_rng(seed)): floats in [0, 1), uint8 and int8 across their whole range, other
integers in [0, 100), booleans at random. Models run with ai-edge-litert's Interpreter (.tflite)
or onnxruntime's CPU provider (.onnx); Edge TPU-compiled .tflite, TensorRT plans and python
models cannot run here and need ``expected_outputs`` from the user."""

from __future__ import annotations

import json
import math
import os

from ansible_collections.edgeai.fleet.plugins.plugin_utils._release_build._common import (
    GENERATED_BY,
    NUMPY_KSERVE,
    BuildError,
    MissingDependency,
    fits,
    numpy,
    require,
)

FORMAT = 1
# Output datatype -> (absolute tolerance, relative tolerance). Floats: the device computes with
# other kernels than the controller (ARM NEON vs x86 AVX, XNNPACK, CUDA with TF32 on Orin, whose
# products keep 10 mantissa bits, ~1e-3), so FP32 allows 1e-3 absolute plus 1e-3 of the value;
# FP16 keeps ~3 decimal digits. Quantized (8/16-bit integer) outputs may differ by a rounding
# step or two between kernels (and between the CPU and an Edge TPU). Other integers (class
# indices, counts) and booleans must be equal.
TOLERANCES = {
    "FP64": (1e-6, 1e-6), "FP32": (1e-3, 1e-3), "FP16": (1e-2, 1e-2), "BF16": (5e-2, 5e-2),
    "INT8": (2, 0.0), "UINT8": (2, 0.0), "INT16": (2, 0.0), "UINT16": (2, 0.0),
    "INT32": (0, 0.0), "UINT32": (0, 0.0), "INT64": (0, 0.0), "UINT64": (0, 0.0), "BOOL": (0, 0.0),
}
DEFAULT_MAX_MB = 32
RANDOM_INT_RANGE = (0, 100)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


# -- shapes ----------------------------------------------------------------------------------
def concrete_shape(tensor, shapes, where):
    """The shape to feed ``tensor`` with: the user's (input_shapes), else the model's with an
    open first dimension set to 1; any other open dimension must be given."""
    given = (shapes or {}).get(tensor.name)
    if given is not None:
        given = [int(d) for d in given]
        if not fits(tensor.shape, given) or any(g <= 0 for g in given):
            raise BuildError(f"{where}: input_shapes.{tensor.name} {given} does not fit the model's shape "
                             f"{tensor.shape} (-1 = any size)")
        return given
    shape = list(tensor.shape)
    if shape and shape[0] == -1:
        shape[0] = 1
    if any(d == -1 for d in shape):
        raise BuildError(f"{where}: input {tensor.name} has open dimensions {tensor.shape}; give the size to test "
                         f"with: input_shapes: {{{tensor.name!r}: [{', '.join(str(max(d, 1)) for d in shape)}]}} "
                         "(with the sizes the model expects), or give inputs")
    return shape


def _coerce(np, array, tensor, where, what="input"):
    target = tensor.numpy_dtype
    if target is None:
        raise BuildError(f"{where}: {what} {tensor.name} is {tensor.datatype}, which the builder cannot make or "
                         "compare; give expected_outputs with allow_unchecked_outputs, or leave it out")
    array = np.asarray(array)
    if array.dtype != np.dtype(target):
        if not np.can_cast(array.dtype, target, "same_kind"):
            raise BuildError(f"{where}: {what} {tensor.name} is {array.dtype} in the file, the model takes "
                             f"{tensor.datatype} ({target})")
        array = array.astype(target)
    if not fits(tensor.shape, array.shape):
        raise BuildError(f"{where}: {what} {tensor.name} has shape {list(array.shape)}, the model's is "
                         f"{tensor.shape} (-1 = any size)")
    return np.ascontiguousarray(array)


# -- inputs ----------------------------------------------------------------------------------
def random_inputs(tensors, seed, shapes, where):
    np = numpy()
    rng = np.random.default_rng(int(seed))
    out = {}
    for tensor in tensors:
        shape = concrete_shape(tensor, shapes, where)
        dtype = tensor.numpy_dtype
        if dtype is None:
            raise BuildError(f"{where}: input {tensor.name} is {tensor.datatype}; random inputs cannot be made for "
                             "it: give inputs (a .npz keyed by input name)")
        if dtype.startswith("float"):
            array = rng.random(shape).astype(dtype)
        elif dtype in ("uint8", "int8"):
            info = np.iinfo(dtype)
            array = rng.integers(int(info.min), int(info.max) + 1, size=shape, dtype=dtype)
        elif dtype == "bool":
            array = rng.integers(0, 2, size=shape).astype(bool)
        else:
            array = rng.integers(RANDOM_INT_RANGE[0], RANDOM_INT_RANGE[1], size=shape).astype(dtype)
        out[tensor.name] = array
    return out


def _image(path, tensor, shapes, where):
    np = numpy()
    try:
        image_module = require("PIL.Image", "reading an image as a smoke-test input")
    except MissingDependency as exc:
        raise BuildError(exc.msg + "; or give the input as a .npy file (numpy.save) instead of an image") from None
    shape = list((shapes or {}).get(tensor.name) or tensor.shape)
    rank = len(shape)
    if rank not in (3, 4):
        raise BuildError(f"{where}: input {tensor.name} has shape {tensor.shape}, not an image (HWC, CHW, NHWC or "
                         "NCHW); give a .npy instead")
    body = shape[1:] if rank == 4 else shape
    if body[-1] in (1, 3, 4):
        layout, (height, width, channels) = "HWC", body
    elif body[0] in (1, 3, 4):
        layout, (channels, height, width) = "CHW", body
    else:
        raise BuildError(f"{where}: input {tensor.name} has shape {tensor.shape}: no dimension of 1, 3 or 4 channels "
                         "tells the image layout; give a .npy instead")
    with image_module.open(path) as img:
        img = img.convert({1: "L", 3: "RGB", 4: "RGBA"}[channels])
        if height == -1 or width == -1:
            width = img.width if width == -1 else width
            height = img.height if height == -1 else height
        img = img.resize((int(width), int(height)), image_module.BILINEAR)
        pixels = np.asarray(img, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if layout == "CHW":
        pixels = pixels.transpose(2, 0, 1)
    dtype = tensor.numpy_dtype
    if dtype is None or dtype == "bool":
        raise BuildError(f"{where}: input {tensor.name} is {tensor.datatype}; an image cannot feed it")
    if dtype.startswith("float"):
        array = pixels.astype(dtype) / np.array(255.0, dtype=dtype)
    elif dtype == "int8":
        array = (pixels.astype(np.int16) - 128).astype(np.int8)
    else:
        array = pixels.astype(dtype)
    if rank == 4:
        array = array[None, ...]
    return array


def _load_file(path, tensors, shapes, where):
    """{input name: array} from one file."""
    np = numpy()
    if not os.path.isfile(path):
        raise BuildError(f"{where}: inputs file {path} does not exist on the controller")
    lower = path.lower()
    if lower.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    if lower.endswith(".npy"):
        if len(tensors) != 1:
            raise BuildError(f"{where}: {path} holds one array and the model has {len(tensors)} inputs "
                             f"({', '.join(t.name for t in tensors)}); give a .npz keyed by input name, or "
                             "inputs: {name: file, ...}")
        return {tensors[0].name: np.load(path, allow_pickle=False)}
    if lower.endswith(IMAGE_SUFFIXES):
        if len(tensors) != 1:
            raise BuildError(f"{where}: an image feeds a model with one input; this one has {len(tensors)}; give "
                             "inputs: {name: file, ...}")
        return {tensors[0].name: _image(path, tensors[0], shapes, where)}
    raise BuildError(f"{where}: inputs file {path}: give a .npy, a .npz (keyed by input name) or an image "
                     f"({', '.join(IMAGE_SUFFIXES)})")


def load_inputs(spec, tensors, shapes, where, what="input"):
    """{name: array} for every tensor of ``tensors`` from the user's file(s), checked and cast
    to the model's types (safe casts only)."""
    np = numpy()
    by_name = {t.name: t for t in tensors}
    if isinstance(spec, dict):
        arrays = {}
        for name, path in spec.items():
            if name not in by_name:
                raise BuildError(f"{where}: {name} is not an {what} of the model ({', '.join(by_name)})")
            tensor = by_name[name]
            lower = str(path).lower()
            if lower.endswith(IMAGE_SUFFIXES):
                arrays[name] = _image(str(path), tensor, shapes, where)
            elif lower.endswith(".npy") and os.path.isfile(str(path)):
                arrays[name] = np.load(str(path), allow_pickle=False)
            else:
                raise BuildError(f"{where}: {what} {name}: {path} must be an existing .npy file or image")
    else:
        arrays = _load_file(str(spec), tensors, shapes, where)
    unknown = sorted(set(arrays) - set(by_name))
    if unknown:
        raise BuildError(f"{where}: the file holds {unknown}, which are not {what}s of the model "
                         f"({', '.join(by_name)})")
    missing = [t.name for t in tensors if t.name not in arrays]
    if missing:
        raise BuildError(f"{where}: no data for the model's {what}(s) {', '.join(missing)}")
    return {t.name: _coerce(np, arrays[t.name], t, where, what) for t in tensors}


# -- running the model -----------------------------------------------------------------------
def _run_tflite(info, arrays):
    try:
        interpreter_module = require("ai_edge_litert.interpreter", "running a .tflite model for its smoke test")
    except MissingDependency:
        try:  # the older LiteRT package, where that is all the controller has
            interpreter_module = require("tflite_runtime.interpreter", "running a .tflite model")
        except MissingDependency:
            interpreter_module = None
        if interpreter_module is None:
            raise
    interpreter = interpreter_module.Interpreter(model_path=info.path, num_threads=1)
    details = interpreter.get_input_details()
    for d in details:
        if tuple(d["shape"]) != arrays[d["name"]].shape:
            interpreter.resize_tensor_input(d["index"], list(arrays[d["name"]].shape))
    interpreter.allocate_tensors()
    for d in interpreter.get_input_details():
        interpreter.set_tensor(d["index"], arrays[d["name"]])
    interpreter.invoke()
    by_name = {d["name"]: d for d in interpreter.get_output_details()}
    return {t.name: interpreter.get_tensor(by_name[t.name]["index"]).copy() for t in info.outputs}


def _run_onnx(info, arrays):
    ort = require("onnxruntime", "running an .onnx model for its smoke test")
    if hasattr(ort, "disable_telemetry_events"):
        ort.disable_telemetry_events()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(info.path, options, providers=["CPUExecutionProvider"])
    names = [t.name for t in info.outputs]
    results = session.run(names, {t.name: arrays[t.name] for t in info.inputs})
    return dict(zip(names, results, strict=True))


def run_model(info, arrays, where):
    """The model's outputs for ``arrays`` on the controller ({output name: array})."""
    try:
        outputs = {"tflite": _run_tflite, "onnx": _run_onnx}[info.kind](info, arrays)
    except MissingDependency:
        raise
    except Exception as exc:  # the runtimes raise their own types
        raise BuildError(f"{where}: running the model on the smoke-test inputs failed: {exc}") from None
    np = numpy()
    for tensor in info.outputs:
        value = np.asarray(outputs[tensor.name])
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise BuildError(f"{where}: output {tensor.name} is not finite (NaN or infinity) for the smoke-test "
                             "inputs, so it cannot be compared; give other inputs")
    return outputs


# -- the document ----------------------------------------------------------------------------
def encode(name, array):
    """One tensor in KServe v2 JSON form, data flat and row-major."""
    np = numpy()
    array = np.ascontiguousarray(array)
    datatype = NUMPY_KSERVE.get(array.dtype.name)
    if datatype is None:
        raise BuildError(f"tensor {name}: numpy type {array.dtype} has no KServe datatype")
    flat = array.reshape(-1)
    if array.dtype.kind == "f":
        # str() of a numpy float32/float16 is the shortest text that reads back as that value
        data = flat.tolist() if array.dtype.name == "float64" else [float(str(v)) for v in flat]
    elif array.dtype.kind == "b":
        data = [bool(v) for v in flat.tolist()]
    else:
        data = [int(v) for v in flat.tolist()]
    return {"name": name, "datatype": datatype, "shape": [int(d) for d in array.shape], "data": data}


def _non_negative(value, what):
    """``value`` as a finite float >= 0; BuildError naming ``what`` otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BuildError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise BuildError(f"{what} must be a number >= 0")
    return number


def tolerances(outputs, tolerance=None, relative_tolerance=None, where="the model"):
    """({output name: absolute tolerance}, relative tolerance) from the table, or the user's
    ``tolerance`` (a number, or {output name: number}) and ``relative_tolerance``."""
    absolute = {}
    relative = 0.0
    names = {t.name for t in outputs}
    if isinstance(tolerance, dict):
        unknown = sorted(set(tolerance) - names)
        if unknown:
            raise BuildError(f"{where}: tolerance names {unknown}, which are not outputs of the model "
                             f"({', '.join(sorted(names))})")
    for tensor in outputs:
        abs_tol, rel_tol = TOLERANCES.get(tensor.datatype, (0, 0.0))
        if isinstance(tolerance, dict) and tensor.name in tolerance:
            abs_tol = tolerance[tensor.name]
        elif tolerance is not None and not isinstance(tolerance, dict):
            abs_tol = tolerance
        abs_tol = _non_negative(abs_tol, f"{where}: tolerance for {tensor.name}")
        absolute[tensor.name] = int(abs_tol) if abs_tol.is_integer() else abs_tol
        relative = max(relative, rel_tol)
    if relative_tolerance is not None:
        relative = _non_negative(relative_tolerance, f"{where}: relative_tolerance")
    return absolute, relative


def document(inputs, outputs, seed, absolute, relative):
    """The smoke_test.json document; ``outputs`` None for inputs only (any answer passes)."""
    doc = {"format": FORMAT, "generated_by": GENERATED_BY, "seed": seed,
           "inputs": [encode(name, array) for name, array in inputs.items()]}
    if outputs is not None:
        expected = []
        for name, array in outputs.items():
            entry = encode(name, array)
            entry["tolerance"] = absolute[name]
            expected.append(entry)
        doc["expected_outputs"] = expected
    doc["relative_tolerance"] = relative
    return doc


def dump(doc, max_mb=DEFAULT_MAX_MB, where="the model"):
    """The document as compact JSON bytes, refused above ``max_mb``."""
    text = json.dumps(doc, separators=(",", ":"), allow_nan=False)
    data = text.encode("utf-8")
    if max_mb and len(data) > float(max_mb) * 1024 * 1024:
        raise BuildError(f"{where}: the smoke test would be {len(data) / 1048576:.1f} MiB of JSON, over "
                         f"max_smoke_test_mb ({max_mb}); test with smaller inputs (input_shapes) or raise "
                         "max_smoke_test_mb (the device sends the inputs in one request)")
    return data
