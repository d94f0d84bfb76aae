"""Example python-backend model for rollback tests: it never loads.

Its inputs and outputs match the `scale` model, so it can be shipped as a new version of
`scale` to check that a failed load rolls back to the version that served before.
"""

import triton_python_backend_utils as pb_utils  # noqa: F401  (the backend provides it)


class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("this model is broken on purpose (edgeai.fleet rollback tests)")

    def execute(self, requests):  # pragma: no cover - never reached
        raise RuntimeError("unreachable")
