"""The LiteRT runtime, Edge TPU detection and delegate selection."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from litert_server.errors import LoadError

EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
# USB ids of the Coral USB Accelerator: before (Global Unichip) and after firmware load (Google).
EDGETPU_USB_IDS = frozenset({("1a6e", "089a"), ("18d1", "9302")})

try:
    from ai_edge_litert.interpreter import Interpreter, load_delegate

    RUNTIME = f"ai-edge-litert {metadata.version('ai-edge-litert')}"
except ImportError:  # pragma: no cover - devices that only have tflite-runtime
    from tflite_runtime.interpreter import Interpreter, load_delegate  # type: ignore[no-redef]

    RUNTIME = f"tflite-runtime {metadata.version('tflite-runtime')}"


def find_edgetpus(root: str | os.PathLike[str] = "/") -> list[str]:
    """Edge TPUs visible under ``root``: PCIe/SoC ``/dev/apex_*`` nodes and USB Accelerators."""
    base = Path(root)
    found = [f"/dev/{p.name}" for p in sorted((base / "dev").glob("apex_*"))]
    usb = base / "sys" / "bus" / "usb" / "devices"
    try:
        entries = sorted(usb.iterdir())
    except OSError:
        entries = []
    for dev in entries:
        try:
            ids = ((dev / "idVendor").read_text().strip().lower(), (dev / "idProduct").read_text().strip().lower())
        except OSError:
            continue
        if ids in EDGETPU_USB_IDS:
            found.append(f"usb:{dev.name}:{ids[0]}:{ids[1]}")
    return found


def model_custom_ops(data: bytes) -> set[str]:
    """Custom operator codes used by a .tflite flatbuffer."""
    try:
        from ai_edge_litert.schema_py_generated import Model
    except ImportError:  # pragma: no cover - tflite-runtime has no schema module
        return {EDGETPU_CUSTOM_OP} if EDGETPU_CUSTOM_OP.encode() in data else set()
    try:
        model = Model.GetRootAs(data, 0)
        codes = set()
        for i in range(model.OperatorCodesLength()):
            code = model.OperatorCodes(i).CustomCode()
            if code:
                codes.add(code.decode("utf-8", "replace"))
        return codes
    except Exception as exc:
        raise LoadError(f"not a valid .tflite flatbuffer: {exc}") from exc


@dataclass(frozen=True)
class Placement:
    accelerator: str  # "edgetpu" | "cpu"
    delegate: str | None  # library name or None
    devices: tuple[str, ...]
    reason: str


def choose_placement(data: bytes, root: str | os.PathLike[str], library: str) -> Placement:
    """Decide where a model runs. Raises LoadError for a TPU model without a TPU."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise LoadError("not a .tflite model (missing the TFL3 file identifier)")
    needs_tpu = EDGETPU_CUSTOM_OP in model_custom_ops(data)
    tpus = tuple(find_edgetpus(root))
    if needs_tpu:
        if not tpus:
            raise LoadError(
                f"model is compiled for the Edge TPU (it contains {EDGETPU_CUSTOM_OP}) but no Edge TPU is visible "
                f"(looked for /dev/apex_* and USB ids 18d1:9302/1a6e:089a under {os.fspath(root)!r})"
            )
        return Placement("edgetpu", library, tpus, f"Edge TPU model and Edge TPU visible: {', '.join(tpus)}")
    reason = "model has no Edge TPU operators" + (f" (Edge TPU visible: {', '.join(tpus)})" if tpus else "")
    return Placement("cpu", None, tpus, reason)


def make_interpreter(data: bytes, placement: Placement, num_threads: int) -> Any:
    """Create and allocate one interpreter for the placement."""
    delegates = None
    if placement.delegate:
        try:
            delegates = [load_delegate(placement.delegate)]
        except (OSError, ValueError, RuntimeError) as exc:
            raise LoadError(f"cannot load the Edge TPU delegate {placement.delegate}: {exc}") from exc
    try:
        interp = Interpreter(model_content=data, experimental_delegates=delegates, num_threads=num_threads)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise LoadError(f"the runtime refused the model: {exc}") from exc
    return interp
