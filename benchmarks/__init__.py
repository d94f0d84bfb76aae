"""The project's benchmarks: `python -m benchmarks.run [NAME ...]`, each one `python -m benchmarks.NAME.bench`.

Importing the package puts what they import from the project on the import path, in this one place.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (".collections", "tests/lab", "tests/lab/webhook_receiver", "images/litert-server/src"):
    if str(ROOT / _path) not in sys.path:
        sys.path.insert(0, str(ROOT / _path))
