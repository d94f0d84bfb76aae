"""Example python-backend model for tests: OUTPUT0 = INPUT0 * k.

k is the model version number (version 1 returns x, version 2 returns 2x, ...), unless
a file `k` next to this file holds a number: that number is k then.
"""

import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        here = os.path.dirname(os.path.abspath(__file__))
        k_file = os.path.join(here, "k")
        if os.path.exists(k_file):
            with open(k_file, encoding="utf-8") as handle:
                self.k = np.float32(float(handle.read().strip()))
        else:
            self.k = np.float32(int(args["model_version"]))

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            y = (x * self.k).astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", y)]))
        return responses
