"""An MLServer runtime serving a .tflite model with the LiteRT interpreter (one thread, one a worker
process): benchmarks/litert/bench.py's peer of our server, so that only the serving stack differs."""

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
        interp, given = self._interp, {request_input.name: request_input for request_input in payload.inputs}
        if set(given) != set(self._inputs):
            raise InferenceError(f"inputs {sorted(given)} given, the model takes {sorted(self._inputs)}")
        for name, index in self._inputs.items():
            interp.set_tensor(index, NumpyCodec.decode_input(given[name]))
        interp.invoke()
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=[
            NumpyCodec.encode_output(name, interp.get_tensor(index)) for name, index in self._outputs])
