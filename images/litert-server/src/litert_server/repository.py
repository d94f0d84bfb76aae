"""The model repository: Triton's layout on disk, explicit load/unload, versions in memory.

Thread-safety: a loaded version owns a small pool of interpreters; a request takes one
interpreter out of the pool for the whole set_tensor/invoke/get_tensor sequence, so no
interpreter is ever used by two threads at once. Loading builds the new versions first
and then replaces the model's version map in one assignment; requests that already hold
the old version finish on it, and the old interpreters are released when the last of
them is done (Python reference counting).
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from litert_server._pbtxt import MAX_CHARS, MODEL_FILENAME_RULE, model_filename_ok
from litert_server.errors import BadRequest, LoadError, NotFound, NotReady, ServerError
from litert_server.modelconfig import ModelConfig, TensorConfig, config_from_json, config_from_pbtxt
from litert_server.runtime import Placement, choose_placement, make_interpreter

log = logging.getLogger("litert_server.repository")

KSERVE_TO_NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
NUMPY_TO_KSERVE = {v: k for k, v in KSERVE_TO_NUMPY.items()}
_MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
# a version: a positive decimal number in ASCII digits ("2", not "02", "+2", "٢" or "²")
_VERSION = re.compile(r"[1-9][0-9]{0,17}")


def check_model_name(name: str) -> str:
    if not _MODEL_NAME.fullmatch(name) or ".." in name:
        raise BadRequest(f"invalid model name {name!r}")
    return name


def check_version(version: str) -> int:
    if not _VERSION.fullmatch(version):
        raise BadRequest(f"invalid version {version!r}: a version is a positive decimal number (ASCII digits)")
    return int(version)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    index: int
    datatype: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]  # as published in metadata; -1 = any size

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def _compatible(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return len(a) == len(b) and all(x == y or x < 0 or y < 0 for x, y in zip(a, b, strict=True))


class _Slot:
    __slots__ = ("interp", "shapes")

    def __init__(self, interp: Any, shapes: dict[int, tuple[int, ...]]) -> None:
        self.interp = interp
        self.shapes = shapes


@dataclass
class InferResult:
    outputs: dict[str, np.ndarray]
    batch: int
    queue_ns: int
    input_ns: int
    infer_ns: int
    output_ns: int


class LoadedVersion:
    """One version of a model, ready to serve."""

    def __init__(
        self,
        model: str,
        version: int,
        path: Path,
        config: ModelConfig | None,
        root: str,
        library: str,
        pool_size: int,
        num_threads: int,
    ) -> None:
        self.model = model
        self.version = version
        self.path = path
        self.config = config
        st = path.stat()
        self.signature = (st.st_size, st.st_mtime_ns, config)
        data = path.read_bytes()
        self.placement: Placement = choose_placement(data, root, library)
        if self.placement.accelerator == "edgetpu":
            pool_size = 1  # one TPU: more interpreters only contend for it
        first = make_interpreter(data, self.placement, num_threads)
        self.max_batch_size = config.max_batch_size if config else 0
        self.inputs = self._specs(first.get_input_details(), config.inputs if config else (), "input", True)
        self.outputs = self._specs(first.get_output_details(), config.outputs if config else (), "output", False)
        self.output_names = [o.name for o in self.outputs]
        self._by_input = {i.name: i for i in self.inputs}
        self._by_output = {o.name: o for o in self.outputs}
        self._pool: queue.SimpleQueue[_Slot] = queue.SimpleQueue()
        slots = [first] + [make_interpreter(data, self.placement, num_threads) for _ in range(pool_size - 1)]
        for interp in slots:
            slot = _Slot(interp, {d["index"]: tuple(int(x) for x in d["shape"]) for d in interp.get_input_details()})
            self._warm_up(slot)
            self._pool.put(slot)
        self.pool_size = len(slots)
        self.loaded_at = time.time()

    def _specs(
        self, details: list[dict[str, Any]], configured: tuple[TensorConfig, ...], what: str, must_cover: bool
    ) -> list[TensorSpec]:
        by_name = {d["name"]: d for d in details}
        if configured:
            unknown = [c.name for c in configured if c.name not in by_name]
            if unknown:
                raise LoadError(f"config {what} {unknown} not in the model (model {what}s: {sorted(by_name)})")
            missing = sorted(set(by_name) - {c.name for c in configured})
            if must_cover and missing:
                raise LoadError(f"config does not list the model {what}s {missing}")
        specs = []
        for cfg in configured or [None] * len(details):
            d = by_name[cfg.name] if cfg else details[len(specs)]
            dtype = np.dtype(d["dtype"])
            datatype = NUMPY_TO_KSERVE.get(dtype)
            if datatype is None:
                raise LoadError(f"model {what} {d['name']!r} has unsupported type {dtype}")
            sig = d.get("shape_signature")
            model_shape = tuple(int(x) for x in (sig if sig is not None and len(sig) else d["shape"]))
            if self.max_batch_size > 0:
                if not model_shape:
                    raise LoadError(f"max_batch_size > 0 but model {what} {d['name']!r} is a scalar")
                shape = (-1, *model_shape[1:])
            else:
                shape = model_shape
            if cfg:
                if cfg.datatype != datatype:
                    raise LoadError(
                        f"config {what} {cfg.name!r} data_type is {cfg.datatype} but the model has {datatype}"
                    )
                want = (-1, *cfg.dims) if self.max_batch_size > 0 else cfg.dims
                if not _compatible(want, shape):
                    raise LoadError(
                        f"config {what} {cfg.name!r} dims {list(cfg.dims)} do not match the model shape "
                        f"{list(model_shape)} (max_batch_size {self.max_batch_size})"
                    )
                shape = tuple(w if w >= 0 else s for w, s in zip(want, shape, strict=True))
            specs.append(TensorSpec(d["name"], int(d["index"]), datatype, dtype, shape))
        return specs

    def _warm_up(self, slot: _Slot) -> None:
        try:
            for spec in self.inputs:
                shape = slot.shapes[spec.index]
                slot.interp.set_tensor(spec.index, np.zeros(shape, dtype=spec.dtype))
            slot.interp.invoke()
        except (ValueError, RuntimeError) as exc:
            raise LoadError(f"test inference with zeros failed: {exc}") from exc

    def metadata(self) -> dict[str, Any]:
        return {
            "inputs": [i.metadata() for i in self.inputs],
            "outputs": [o.metadata() for o in self.outputs],
            "accelerator": self.placement.accelerator,
            "delegate": self.placement.delegate,
        }

    def check_inputs(self, arrays: dict[str, np.ndarray]) -> int:
        """Validate names, dtypes and shapes; returns the batch size."""
        missing = [n for n in self._by_input if n not in arrays]
        if missing:
            raise BadRequest(f"missing inputs {missing} (model inputs: {sorted(self._by_input)})")
        batches = set()
        for name, arr in arrays.items():
            spec = self._by_input.get(name)
            if spec is None:
                raise BadRequest(f"unexpected input {name!r} (model inputs: {sorted(self._by_input)})")
            if arr.dtype != spec.dtype:
                raise BadRequest(
                    f"input {name!r}: datatype {NUMPY_TO_KSERVE.get(arr.dtype, arr.dtype)} "
                    f"does not match the model's {spec.datatype}"
                )
            if not _compatible(tuple(arr.shape), spec.shape):
                raise BadRequest(
                    f"input {name!r}: shape {list(arr.shape)} does not match the model's {list(spec.shape)}"
                )
            if self.max_batch_size > 0:
                b = int(arr.shape[0])
                if not 1 <= b <= self.max_batch_size:
                    raise BadRequest(f"input {name!r}: batch size {b} is outside 1..{self.max_batch_size}")
                batches.add(b)
        if len(batches) > 1:
            raise BadRequest(f"inputs disagree on the batch size: {sorted(batches)}")
        return batches.pop() if batches else 1

    def check_outputs(self, names: list[str]) -> None:
        unknown = [n for n in names if n not in self._by_output]
        if unknown:
            raise BadRequest(f"unknown outputs {unknown} (model outputs: {self.output_names})")

    def infer(self, arrays: dict[str, np.ndarray], outputs: list[str]) -> InferResult:
        t0 = time.perf_counter_ns()
        slot = self._pool.get()
        t1 = time.perf_counter_ns()
        try:
            interp = slot.interp
            if any(arrays[s.name].shape != slot.shapes.get(s.index) for s in self.inputs):
                slot.shapes = {}  # unknown until the resize is through (a failure leaves it so)
                for spec in self.inputs:
                    interp.resize_tensor_input(spec.index, list(arrays[spec.name].shape))
                interp.allocate_tensors()
                slot.shapes = {s.index: tuple(arrays[s.name].shape) for s in self.inputs}
            for spec in self.inputs:
                interp.set_tensor(spec.index, arrays[spec.name])
            t2 = time.perf_counter_ns()
            interp.invoke()
            t3 = time.perf_counter_ns()
            result = {name: interp.get_tensor(self._by_output[name].index) for name in outputs}
            t4 = time.perf_counter_ns()
        except (ValueError, RuntimeError) as exc:
            raise ServerError(f"inference failed: {exc}", 500) from exc
        finally:
            self._pool.put(slot)
        batch = next(iter(arrays.values())).shape[0] if self.max_batch_size > 0 and arrays else 1
        return InferResult(result, batch, t1 - t0, t2 - t1, t3 - t2, t4 - t3)


class ModelEntry:
    def __init__(self, name: str) -> None:
        self.name = name
        self.versions: dict[int, LoadedVersion] = {}
        self.latest: LoadedVersion | None = None
        self.config: ModelConfig | None = None
        self.reason = ""
        self.load_lock = threading.Lock()


class Repository:
    def __init__(
        self,
        root: str | os.PathLike[str],
        device_root: str = "/",
        edgetpu_library: str = "libedgetpu.so.1",
        pool_size: int = 2,
        num_threads: int = 1,
    ) -> None:
        self.root = Path(root)
        self.device_root = device_root
        self.edgetpu_library = edgetpu_library
        self.pool_size = max(1, pool_size)
        self.num_threads = max(1, num_threads)
        self._lock = threading.Lock()
        self._entries: dict[str, ModelEntry] = {}

    # --- disk ---------------------------------------------------------------
    def on_disk(self, name: str) -> bool:
        return (self.root / name).is_dir()

    def disk_models(self) -> list[str]:
        try:
            names = (p.name for p in self.root.iterdir() if p.is_dir())
            return sorted(n for n in names if _MODEL_NAME.fullmatch(n) and ".." not in n)
        except OSError:
            return []

    def _read_config(self, name: str, override: str | None) -> ModelConfig | None:
        if override is not None:
            return config_from_json(override, name)
        cfg = self.root / name / "config.pbtxt"
        if not cfg.is_file():
            return None
        try:
            if cfg.stat().st_size > 4 * MAX_CHARS:
                raise LoadError(f"{cfg} is larger than {4 * MAX_CHARS} bytes")
            text = cfg.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise LoadError(f"cannot read {cfg}: {exc}") from exc
        return config_from_pbtxt(text, name)

    def _disk_versions(self, name: str, filename: str) -> list[int]:
        if not model_filename_ok(filename):  # config_from_dict refuses these; never build such a path
            raise LoadError("config: " + MODEL_FILENAME_RULE)
        out = []
        for p in (self.root / name).iterdir():
            if _VERSION.fullmatch(p.name) and (p / filename).is_file():
                out.append(int(p.name))
        return sorted(out)

    # --- load / unload ------------------------------------------------------
    def _entry(self, name: str) -> ModelEntry:
        with self._lock:
            return self._entries.setdefault(name, ModelEntry(name))

    def load(self, name: str, config_override: str | None = None) -> list[int]:
        """(Re)load a model from disk. On failure nothing changes and LoadError is raised."""
        check_model_name(name)
        if not self.on_disk(name):
            raise NotFound(f"model '{name}' is not in the model repository")
        entry = self._entry(name)
        with entry.load_lock:
            started = time.monotonic()
            try:
                config = self._read_config(name, config_override)
                filename = config.default_model_filename if config else "model.tflite"
                wanted = (config.select_versions if config else ModelConfig(name).select_versions)(
                    self._disk_versions(name, filename)
                )
                if not wanted:
                    raise LoadError(f"no versions with {filename} found under {self.root / name}")
                new: dict[int, LoadedVersion] = {}
                for v in wanted:
                    path = self.root / name / str(v) / filename
                    old = entry.versions.get(v)
                    st = path.stat()
                    if old is not None and old.signature == (st.st_size, st.st_mtime_ns, config):
                        new[v] = old
                        continue
                    try:
                        new[v] = LoadedVersion(
                            name,
                            v,
                            path,
                            config,
                            self.device_root,
                            self.edgetpu_library,
                            self.pool_size,
                            self.num_threads,
                        )
                    except LoadError as exc:
                        raise LoadError(f"failed to load '{name}' version {v}: {exc}") from exc
            except (LoadError, OSError) as exc:
                msg = str(exc) if isinstance(exc, LoadError) else f"failed to load '{name}': {exc}"
                entry.reason = msg
                log.error("model load failed", extra={"model": name, "reason": msg, "serving": sorted(entry.versions)})
                raise LoadError(msg) from exc
            removed = sorted(set(entry.versions) - set(new))
            # the switch: readers see either the old or the new map, never a mix
            entry.latest = new[max(new)]
            entry.versions = new
            entry.config = config
            entry.reason = ""
            for v in sorted(new):
                lv = new[v]
                log.info(
                    "model version ready",
                    extra={
                        "model": name,
                        "version": v,
                        "accelerator": lv.placement.accelerator,
                        "delegate": lv.placement.delegate,
                        "placement_reason": lv.placement.reason,
                        "interpreters": lv.pool_size,
                    },
                )
            if removed:
                log.info("model versions unloaded", extra={"model": name, "versions": removed})
            log.info(
                "model loaded",
                extra={"model": name, "versions": sorted(new), "load_s": round(time.monotonic() - started, 4)},
            )
            return sorted(new)

    def unload(self, name: str) -> None:
        check_model_name(name)
        with self._lock:
            entry = self._entries.get(name)
        if entry is None or not entry.versions:
            if entry is None and not self.on_disk(name):
                raise NotFound(f"unknown model '{name}'")
            return
        with entry.load_lock:
            versions = sorted(entry.versions)
            entry.latest = None
            entry.versions = {}
            entry.reason = "unloaded"
        log.info("model unloaded", extra={"model": name, "versions": versions})

    # --- lookup -------------------------------------------------------------
    def get(self, name: str, version: str | None = None) -> LoadedVersion:
        entry = self._entries.get(name)
        if version is None or version == "":
            lv = entry.latest if entry is not None else None
            if lv is not None:
                return lv
        else:
            number = check_version(version)
            versions = entry.versions if entry is not None else {}
            lv = versions.get(number)
            if lv is not None:
                return lv
        if entry is None and not self.on_disk(name):
            raise NotFound(f"unknown model '{name}'")
        if version and entry is not None and entry.versions and not (self.root / name / version).is_dir():
            raise NotFound(f"unknown version {version} of model '{name}' (loaded: {sorted(entry.versions)})")
        reason = (entry.reason if entry is not None else "") or "not loaded"
        what = f"version {version} of model '{name}'" if version else f"model '{name}'"
        raise NotReady(f"{what} is not ready: {reason}")

    def is_known(self, name: str) -> bool:
        return name in self._entries or self.on_disk(name)

    def entry(self, name: str) -> ModelEntry | None:
        return self._entries.get(name)

    def loaded(self) -> list[dict[str, Any]]:
        with self._lock:
            entries = list(self._entries.values())
        out = []
        for e in entries:
            for v, lv in sorted(e.versions.items()):
                out.append(
                    {
                        "name": e.name,
                        "version": str(v),
                        "accelerator": lv.placement.accelerator,
                        "delegate": lv.placement.delegate,
                    }
                )
        return out

    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        with self._lock:
            entries = dict(self._entries)
        out: list[dict[str, Any]] = []
        for name in sorted(set(entries) | set(self.disk_models())):
            e = entries.get(name)
            if e is not None and e.versions:
                for v in sorted(e.versions):
                    out.append({"name": name, "version": str(v), "state": "READY", "reason": ""})
            elif not ready_only:
                if e is not None and e.reason:
                    out.append({"name": name, "version": "", "state": "UNAVAILABLE", "reason": e.reason})
                else:
                    out.append({"name": name})
        return out
