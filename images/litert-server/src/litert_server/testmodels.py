"""Small .tflite test models, generated without TensorFlow.

The models are written with the flatbuffer object API that ai-edge-litert ships
(``schema_py_generated``): ModelT, SubGraphT, OperatorT, TensorT, BufferT.

Public API (used by other parts of the project, keep it stable):

- ``make_float_model(path, scale=2.0, bias=1.0, shape=(1, 4))``: y = x * scale + bias (FP32).
- ``make_uint8_model(path, bias=1.0, shape=(1, 4), scale=0.5, zero_point=10)``:
  y = x + bias on uint8 tensors with quantization parameters (quantized ADD).
- ``make_edgetpu_model(path, shape=(1, 4))``: a stand-in for an Edge TPU compiled model
  (one CUSTOM operator named ``edgetpu-custom-op``); it cannot run without the delegate.
- ``make_triton_model(repo, name, version=1, kind="float", ...)``: writes
  ``<repo>/<name>/config.pbtxt`` and ``<repo>/<name>/<version>/model.tflite``.

CLI: ``python -m litert_server.testmodels OUTDIR`` writes a small model repository.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
_FILE_ID = b"TFL3"


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("generating test models needs ai-edge-litert (schema_py_generated)") from exc
    return schema


def _write(path: str | os.PathLike[str], model: Any) -> Path:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=_FILE_ID)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(bytes(builder.Output()))
    tmp.replace(out)
    return out


def _tensor(s: Any, name: str, shape: Sequence[int], ttype: int, buffer: int, quant: Any = None) -> Any:
    t = s.TensorT()
    t.name = name
    t.shape = list(shape)
    t.type = ttype
    t.buffer = buffer
    t.quantization = quant
    return t


def _buffer(s: Any, data: bytes | None = None) -> Any:
    b = s.BufferT()
    if data is not None:
        b.data = list(data)
    return b


def _opcode(s: Any, builtin: int, custom: str | None = None) -> Any:
    oc = s.OperatorCodeT()
    oc.builtinCode = builtin
    oc.deprecatedBuiltinCode = min(builtin, 127)
    oc.version = 1
    oc.customCode = custom
    return oc


def _op(s: Any, opcode: int, inputs: list[int], outputs: list[int], options_type: int = 0, options: Any = None) -> Any:
    op = s.OperatorT()
    op.opcodeIndex = opcode
    op.inputs = inputs
    op.outputs = outputs
    op.builtinOptionsType = options_type
    op.builtinOptions = options
    return op


def _model(
    s: Any,
    tensors: list[Any],
    ops: list[Any],
    opcodes: list[Any],
    buffers: list[Any],
    inputs: list[int],
    outputs: list[int],
    description: str,
) -> Any:
    sg = s.SubGraphT()
    sg.tensors = tensors
    sg.inputs = inputs
    sg.outputs = outputs
    sg.operators = ops
    sg.name = "main"
    m = s.ModelT()
    m.version = 3
    m.operatorCodes = opcodes
    m.subgraphs = [sg]
    m.buffers = buffers
    m.description = description
    return m


def make_float_model(
    path: str | os.PathLike[str], scale: float = 2.0, bias: float = 1.0, shape: Sequence[int] = (1, 4)
) -> Path:
    """Write an FP32 model computing ``y = x * scale + bias`` (input ``x``, output ``y``)."""
    s = _schema()
    f32 = s.TensorType.FLOAT32
    buffers = [_buffer(s), _buffer(s, struct.pack("<f", scale)), _buffer(s, struct.pack("<f", bias))]
    tensors = [
        _tensor(s, "x", shape, f32, 0),
        _tensor(s, "scale", [1], f32, 1),
        _tensor(s, "bias", [1], f32, 2),
        _tensor(s, "x_scaled", shape, f32, 0),
        _tensor(s, "y", shape, f32, 0),
    ]
    opcodes = [_opcode(s, s.BuiltinOperator.MUL), _opcode(s, s.BuiltinOperator.ADD)]
    ops = [
        _op(s, 0, [0, 1], [3], s.BuiltinOptions.MulOptions, s.MulOptionsT()),
        _op(s, 1, [3, 2], [4], s.BuiltinOptions.AddOptions, s.AddOptionsT()),
    ]
    return _write(
        path, _model(s, tensors, ops, opcodes, buffers, [0], [4], f"edgeai test model: y = x * {scale} + {bias}")
    )


def _quant(s: Any, scale: float, zero_point: int) -> Any:
    q = s.QuantizationParametersT()
    q.scale = [float(scale)]
    q.zeroPoint = [int(zero_point)]
    return q


def make_uint8_model(
    path: str | os.PathLike[str],
    bias: float = 1.0,
    shape: Sequence[int] = (1, 4),
    scale: float = 0.5,
    zero_point: int = 10,
) -> Path:
    """Write a uint8-quantized model computing ``y = x + bias`` in real values.

    Input and output share ``scale``/``zero_point``: real = scale * (q - zero_point).
    The constant ``bias`` is stored as one uint8 value with the same parameters, so
    ``bias`` should be a multiple of ``scale``. For the defaults, q_out = q_in + 2.
    """
    s = _schema()
    u8 = s.TensorType.UINT8
    q_bias = round(bias / scale) + zero_point
    if not 0 <= q_bias <= 255:
        raise ValueError("bias does not fit the uint8 quantization range")
    buffers = [_buffer(s), _buffer(s, bytes([q_bias]))]
    tensors = [
        _tensor(s, "x", shape, u8, 0, _quant(s, scale, zero_point)),
        _tensor(s, "bias", [1], u8, 1, _quant(s, scale, zero_point)),
        _tensor(s, "y", shape, u8, 0, _quant(s, scale, zero_point)),
    ]
    opcodes = [_opcode(s, s.BuiltinOperator.ADD)]
    ops = [_op(s, 0, [0, 1], [2], s.BuiltinOptions.AddOptions, s.AddOptionsT())]
    return _write(
        path, _model(s, tensors, ops, opcodes, buffers, [0], [2], f"edgeai test model (uint8): y = x + {bias}")
    )


def make_edgetpu_model(path: str | os.PathLike[str], shape: Sequence[int] = (1, 4)) -> Path:
    """Write a stand-in for an Edge TPU compiled model: one ``edgetpu-custom-op`` operator.

    Real compiled models carry the TPU program in the custom options; this one carries
    a placeholder, so it only serves to test the delegate selection (it never runs).
    """
    s = _schema()
    u8 = s.TensorType.UINT8
    buffers = [_buffer(s)]
    tensors = [
        _tensor(s, "x", shape, u8, 0, _quant(s, 1.0 / 255, 0)),
        _tensor(s, "y", shape, u8, 0, _quant(s, 1.0 / 255, 0)),
    ]
    opcodes = [_opcode(s, s.BuiltinOperator.CUSTOM, EDGETPU_CUSTOM_OP)]
    op = _op(s, 0, [0], [1])
    op.customOptions = list(b"edgeai-lab stand-in, not a compiled Edge TPU program")
    return _write(path, _model(s, tensors, [op], opcodes, buffers, [0], [1], "edgeai test model: Edge TPU stand-in"))


_KINDS = {"float": make_float_model, "uint8": make_uint8_model, "edgetpu": make_edgetpu_model}
_DTYPES = {"float": "TYPE_FP32", "uint8": "TYPE_UINT8", "edgetpu": "TYPE_UINT8"}


def config_pbtxt(
    name: str, kind: str = "float", shape: Sequence[int] = (1, 4), num_versions: int = 1, max_batch_size: int = 0
) -> str:
    """Return a Triton config.pbtxt for a model made by this module."""
    dtype = _DTYPES[kind]
    dims = ", ".join(str(d) for d in (shape[1:] if max_batch_size > 0 else shape))
    return (
        f'name: "{name}"\n'
        'backend: "tflite"\n'
        f"max_batch_size: {max_batch_size}\n"
        f'input [ {{ name: "x" data_type: {dtype} dims: [ {dims} ] }} ]\n'
        f'output [ {{ name: "y" data_type: {dtype} dims: [ {dims} ] }} ]\n'
        f"version_policy: {{ latest {{ num_versions: {num_versions} }} }}\n"
    )


def make_triton_model(
    repo: str | os.PathLike[str],
    name: str,
    version: int = 1,
    kind: str = "float",
    shape: Sequence[int] = (1, 4),
    num_versions: int = 1,
    config: bool = True,
    max_batch_size: int = 0,
    **params: Any,
) -> Path:
    """Write one version of a model in Triton's layout; returns the model directory.

    ``kind`` is ``float``, ``uint8`` or ``edgetpu``; ``params`` go to the generator
    (``scale``/``bias`` for ``float``, ``bias``/``scale``/``zero_point`` for ``uint8``).
    ``config.pbtxt`` is (re)written unless ``config`` is false; with ``max_batch_size`` > 0
    the first dimension of ``shape`` is the batch dimension (dims in the config omit it).
    """
    if kind not in _KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {sorted(_KINDS)}")
    model_dir = Path(repo) / name
    _KINDS[kind](model_dir / str(version) / "model.tflite", shape=shape, **params)
    if config:
        cfg = model_dir / "config.pbtxt"
        tmp = cfg.with_name("config.pbtxt.tmp")
        tmp.write_text(config_pbtxt(name, kind, shape, num_versions, max_batch_size))
        tmp.replace(cfg)
    return model_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m litert_server.testmodels", description="Write a small Triton-layout repository of test models."
    )
    parser.add_argument("outdir", help="model repository directory to write into")
    args = parser.parse_args(argv)
    repo = Path(args.outdir)
    make_triton_model(repo, "float_model", 1, "float", scale=2.0, bias=1.0, num_versions=1)
    make_triton_model(repo, "float_model", 2, "float", scale=3.0, bias=-1.0, num_versions=1)
    make_triton_model(repo, "uint8_model", 1, "uint8", bias=1.0)
    make_triton_model(repo, "edgetpu_model", 1, "edgetpu")
    for p in sorted(repo.rglob("*")):
        if p.is_file():
            sys.stdout.write(f"{p}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
