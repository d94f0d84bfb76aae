"""KServe v2 inference request/response encoding: JSON tensors and the binary tensor extension."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from litert_server import jsonlimits
from litert_server.errors import BadRequest, TooLarge
from litert_server.repository import KSERVE_TO_NUMPY, NUMPY_TO_KSERVE

HEADER_LENGTH = "Inference-Header-Content-Length"
MAX_RANK = 32  # numpy allows 64 dimensions, LiteRT models use a handful


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: list[str] | None  # None = all
    binary: dict[str, bool]  # per requested output
    binary_default: bool


def _obj(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be an object")
    return value


def decode_json(data: bytes | bytearray | str, limits: jsonlimits.JSONLimits | None = None) -> Any:
    """A JSON request body within the limits: 413 for too many elements, 400 for anything else."""
    try:
        return jsonlimits.loads(data, limits)
    except jsonlimits.JSONTooLarge as exc:
        raise TooLarge(f"request body is too large: {exc}") from exc
    except jsonlimits.JSONLimitError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc


def decode_request(
    body: bytes | bytearray, header_length: int | None, limits: jsonlimits.JSONLimits | None = None
) -> InferRequest:
    if header_length is None:
        head: bytes | bytearray = body
        rest: memoryview | bytes = b""
    else:
        if not 0 <= header_length <= len(body):
            raise BadRequest(f"{HEADER_LENGTH} {header_length} is outside the body of {len(body)} bytes")
        view = memoryview(body)
        head, rest = bytes(view[:header_length]), view[header_length:]  # the tensor data is not copied
    req = decode_json(head, limits)
    if not isinstance(req, dict):
        raise BadRequest("request body must be a JSON object")
    params = _obj(req.get("parameters"), "parameters")
    raw_inputs = req.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("request needs a non-empty 'inputs' list")
    offset = 0
    inputs: dict[str, np.ndarray] = {}
    for item in raw_inputs:
        if not isinstance(item, dict):
            raise BadRequest("every input must be an object")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest("every input needs a name")
        if name in inputs:
            raise BadRequest(f"input {name!r} given twice")
        datatype = item.get("datatype")
        dtype = KSERVE_TO_NUMPY.get(datatype) if isinstance(datatype, str) else None
        if dtype is None:
            raise BadRequest(f"input {name!r}: unsupported datatype {datatype!r}")
        shape = item.get("shape")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise BadRequest(f"input {name!r}: shape must be a list of non-negative integers")
        if len(shape) > MAX_RANK:
            raise BadRequest(f"input {name!r}: shape has {len(shape)} dimensions, at most {MAX_RANK} are served")
        count = math.prod(shape)
        iparams = _obj(item.get("parameters"), f"input {name!r} parameters")
        size = iparams.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BadRequest(f"input {name!r}: binary_data_size must be a non-negative integer")
            if offset + size > len(rest):
                raise BadRequest(f"input {name!r}: binary_data_size {size} exceeds the binary data sent")
            if size != count * dtype.itemsize:
                raise BadRequest(
                    f"input {name!r}: {size} bytes of binary data, expected {count * dtype.itemsize} "
                    f"for shape {shape} {datatype}"
                )
            arr = np.frombuffer(rest, dtype=dtype, count=count, offset=offset).reshape(shape)
            offset += size
        else:
            if "data" not in item:
                raise BadRequest(f"input {name!r} has neither data nor binary_data_size")
            try:
                arr = np.asarray(item["data"], dtype=dtype)
            except (ValueError, TypeError, OverflowError, RecursionError) as exc:
                raise BadRequest(f"input {name!r}: data does not convert to {datatype}: {exc}") from exc
            if arr.size != count:
                raise BadRequest(f"input {name!r}: {arr.size} values given, shape {shape} needs {count}")
            arr = arr.reshape(shape)
        inputs[name] = arr
    if offset != len(rest):
        raise BadRequest(f"{len(rest) - offset} bytes of binary data not claimed by any input")
    binary_default = bool(params.get("binary_data_output", False))
    outputs = None
    binary: dict[str, bool] = {}
    raw_outputs = req.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise BadRequest("'outputs' must be a list")
        outputs = []
        for item in raw_outputs:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise BadRequest("every requested output needs a name")
            oparams = _obj(item.get("parameters"), "output parameters")
            outputs.append(item["name"])
            binary[item["name"]] = bool(oparams.get("binary_data", binary_default))
        if not outputs:
            outputs = None
    rid = req.get("id")
    return InferRequest(str(rid) if rid is not None else None, inputs, outputs, binary, binary_default)


def encode_response(
    model: str, version: int, req: InferRequest, outputs: dict[str, np.ndarray], order: list[str]
) -> tuple[bytes, int | None]:
    """Returns (body, header_length); header_length is None for a pure JSON response."""
    out_meta = []
    blobs: list[bytes] = []
    for name in order:
        arr = outputs[name]
        meta: dict[str, Any] = {"name": name, "datatype": NUMPY_TO_KSERVE[arr.dtype], "shape": list(arr.shape)}
        if req.binary.get(name, req.binary_default):
            blob = np.ascontiguousarray(arr).tobytes()
            meta["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            meta["data"] = arr.ravel().tolist()
        out_meta.append(meta)
    resp: dict[str, Any] = {"model_name": model, "model_version": str(version), "outputs": out_meta}
    if req.id is not None:
        resp["id"] = req.id
    head = json.dumps(resp, separators=(",", ":")).encode()
    if not blobs:
        return head, None
    return b"".join([head, *blobs]), len(head)  # one copy of the tensor data
