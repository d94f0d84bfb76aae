# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An MLServer runtime serving a .tflite model with the LiteRT interpreter (one thread, one a worker
process): benchmarks/litert/bench.py's peer of our server, so that only the serving stack differs."""

from __future__ import annotations

from typing import Any

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class LiteRTRuntime(MLModel):
    async def load(self) -> bool:
        from ai_edge_litert.interpreter import Interpreter

        path = await get_model_uri(self._settings, wellknown_filenames=["model.tflite"])
        self._interp: Any = Interpreter(model_path=path, num_threads=1)
        self._interp.allocate_tensors()
        self._inputs = {d["name"]: d["index"] for d in self._interp.get_input_details()}
        self._outputs = [(d["name"], d["index"]) for d in self._interp.get_output_details()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        interp = self._interp
        given = set()
        for request_input in payload.inputs:
            index = self._inputs.get(request_input.name)
            if index is None:
                raise InferenceError(f"unknown input {request_input.name!r}")
            interp.set_tensor(index, NumpyCodec.decode_input(request_input))
            given.add(request_input.name)
        if given != set(self._inputs):
            raise InferenceError(f"missing inputs {sorted(set(self._inputs) - given)}")
        interp.invoke()
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output(name, interp.get_tensor(index)) for name, index in self._outputs],
        )
