"""The project's benchmarks: `python -m benchmarks.run [NAME ...]`, each one `python -m benchmarks.NAME.bench`.

Importing the package puts on the import path what the tests import from the project: pytest's own list
(`pythonpath` in pyproject.toml), so that there is one.
"""

import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["pythonpath"]:
    if str(ROOT / _path) not in sys.path:
        sys.path.insert(0, str(ROOT / _path))
