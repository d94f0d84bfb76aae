# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""STAND-IN for Triton's onnxruntime backend, for the CPU stand-in image only (the lab and the
tests). NVIDIA's Jetson images carry the real one (libtriton_onnxruntime.so); the nvidia-pytriton
wheel this image takes its server from carries only the python backend. Triton 2.51 loads
``backends/<name>/model.py`` as a Python-based backend when ``backends/<name>/`` has no
``libtriton_<name>.so``, so a model configured as Triton's real ONNX models are::

    backend: "onnxruntime"            # (or platform: "onnxruntime_onnx")
    <version>/model.onnx              # or default_model_filename

loads here unchanged and runs on onnxruntime's CPU provider (the onnxruntime wheel unpacked
next to this file, numpy from Debian: the python backend stub embeds Debian's Python 3.11).

What it does: one InferenceSession per model instance on
``<model_repository>/<version>/<default_model_filename or model.onnx>``; checks that the
configuration's inputs and outputs are the model's; feeds the request's tensors as they come
(with max_batch_size > 0 the batch dimension is part of them) and answers every configured
output in its configured type. Honoured parameters (as the real backend reads them):
``intra_op_thread_count``, ``inter_op_thread_count``. Not done: auto-completing a configuration
without inputs and outputs (give them; edgeai.fleet.release_build writes them), GPU execution,
the real backend's optimization and execution-accelerator settings (ignored)."""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "site-packages"))

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

DEFAULT_FILENAME = "model.onnx"
if hasattr(ort, "disable_telemetry_events"):
    ort.disable_telemetry_events()  # nothing leaves the machine


def _parameter(config, key):
    value = ((config.get("parameters") or {}).get(key) or {}).get("string_value")
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def _check(kind, configured, model_names):
    names = [t["name"] for t in configured]
    unknown = sorted(set(names) - set(model_names))
    if unknown:
        raise pb_utils.TritonModelException(
            f"config {kind}s {unknown} are not in the ONNX model (its {kind}s: {sorted(model_names)})")
    return names


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        filename = config.get("default_model_filename") or DEFAULT_FILENAME
        if os.path.basename(filename) != filename or filename in ("", ".", ".."):
            raise pb_utils.TritonModelException(f"default_model_filename {filename!r} must be a plain file name")
        path = os.path.join(args["model_repository"], str(args["model_version"]), filename)
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(f"onnxruntime (stand-in): no model file {path}")
        options = ort.SessionOptions()
        intra = _parameter(config, "intra_op_thread_count")
        inter = _parameter(config, "inter_op_thread_count")
        if intra:
            options.intra_op_num_threads = intra
        if inter:
            options.inter_op_num_threads = inter
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own errors: an invalid or unsupported model
            raise pb_utils.TritonModelException(f"onnxruntime (stand-in) cannot load {path}: {exc}") from None
        inputs = config.get("input") or []
        outputs = config.get("output") or []
        if not inputs or not outputs:
            raise pb_utils.TritonModelException("onnxruntime (stand-in): the configuration must list the model's "
                                                "inputs and outputs (this stand-in does not auto-complete them)")
        model_inputs = [i.name for i in self.session.get_inputs()]
        self.input_names = _check("input", inputs, model_inputs)
        missing = sorted(set(model_inputs) - set(self.input_names))
        if missing:
            raise pb_utils.TritonModelException(f"config does not list the model inputs {missing}")
        self.output_names = _check("output", outputs, [o.name for o in self.session.get_outputs()])
        self.output_types = [pb_utils.triton_string_to_numpy(o["data_type"]) for o in outputs]

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                feed = {}
                for name in self.input_names:
                    tensor = pb_utils.get_input_tensor_by_name(request, name)
                    if tensor is None:
                        raise ValueError(f"input {name} is missing")
                    feed[name] = tensor.as_numpy()
                results = self.session.run(self.output_names, feed)
                tensors = [pb_utils.Tensor(name, np.ascontiguousarray(np.asarray(value).astype(dtype, copy=False)))
                           for name, value, dtype in zip(self.output_names, results, self.output_types, strict=True)]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as exc:  # one failed request answers with its error; the model keeps serving
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc))))
        return responses

    def finalize(self):
        self.session = None
