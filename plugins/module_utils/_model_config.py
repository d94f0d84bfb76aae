# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
"""Triton model configuration (config.pbtxt, protobuf text format): generate it from a
dict, parse it back, and validate it before it goes into a model repository."""

from __future__ import annotations

import json
import re

from ansible_collections.edgeai.fleet.plugins.module_utils._errors import ConfigError

# The parser and the type tables live in _pbtxt.py (no ansible imports), which the LiteRT server
# image carries as a byte-identical copy; re-exported here for the modules.
from ansible_collections.edgeai.fleet.plugins.module_utils._pbtxt import (  # noqa: F401 - re-exports  # pylint: disable=unused-import
    DATA_TYPES,
    KSERVE_DATATYPE,
    MODEL_FILENAME_RULE,
    REPEATED,
    PbtxtError,
    model_filename_ok,
)
from ansible_collections.edgeai.fleet.plugins.module_utils._pbtxt import parse_config as _parse_config

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Fields of Triton's model_config.proto whose type is an enum (DataType, ModelInput.Format, the
# Kind of instance groups, secondary devices, batch inputs and outputs and sequence controls,
# ModelOptimizationPolicy.ModelPriority, ModelQueuePolicy.TimeoutAction): their values are written
# bare (TYPE_FP32, KIND_CPU). Every other string is quoted, as the protobuf text format requires.
ENUM_FIELDS = frozenset(("data_type", "format", "kind", "priority", "timeout_action"))

# Fields of Triton's model_config.proto that are maps, wherever they appear (ModelConfig's
# cc_model_filenames, metric_tags and parameters; an accelerator's or a repository agent's
# parameters; an ensemble step's input_map and output_map; a warm-up sample's inputs; the dynamic
# batcher's priority_queue_policy, whose keys are integers). ``input`` is a map only inside a CUDA
# graph_spec or its graph_lower_bound (ModelConfig's ``input`` is the repeated ModelInput).
MAP_FIELDS = frozenset(("cc_model_filenames", "metric_tags", "parameters", "input_map", "output_map", "inputs",
                        "priority_queue_policy"))
_MAP_FIELDS_IN = {"graph_spec": frozenset(("input",)), "graph_lower_bound": frozenset(("input",))}
_INTEGER_KEYS = frozenset(("priority_queue_policy",))


# -- generation ------------------------------------------------------------------------
def _scalar_text(key, value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if not isinstance(value, str):
        raise ConfigError(f"config field {key!r}: unsupported value {value!r}")
    if key in ENUM_FIELDS:
        if not _IDENT.fullmatch(value):
            raise ConfigError(f"config field {key!r}: {value!r} is not an enum constant (such as TYPE_FP32, KIND_CPU)")
        return value
    return json.dumps(value)


def _is_map_entry(value):
    """An entry of a map in the text form, as the parser gives it: {"key": k, "value": v}."""
    return (isinstance(value, dict) and "key" in value and set(value) <= {"key", "value"}
            and not isinstance(value["key"], (dict, list)))


def _map_entries(key, value):
    """(key, value) pairs of a map given in the JSON form ({"8.7": "model.plan"}) or in the text
    form the parser gives ({"key": "8.7", "value": "model.plan"}, or a list of those)."""
    if isinstance(value, (list, tuple)):
        if not all(_is_map_entry(item) for item in value):
            raise ConfigError(f"config field {key!r} is a map: give it as {{key: value, ...}}")
        return [(item["key"], item.get("value")) for item in value]
    if not isinstance(value, dict):
        raise ConfigError(f"config field {key!r} is a map: give it as {{key: value, ...}}")
    if _is_map_entry(value):
        return [(value["key"], value.get("value"))]
    return list(value.items())


def _map_key_text(field, map_key):
    if field in _INTEGER_KEYS:
        try:
            if isinstance(map_key, bool) or int(str(map_key), 10) < 0:
                raise ValueError
            return str(int(str(map_key), 10))
        except ValueError:
            raise ConfigError(f"config field {field!r}: key {map_key!r} is not an integer >= 0") from None
    if isinstance(map_key, bool) or not isinstance(map_key, (str, int, float)):
        raise ConfigError(f"config field {field!r}: key {map_key!r} is not a string")
    return json.dumps(str(map_key))


def _emit_map(key, value, indent, lines):
    pad = "  " * indent
    for map_key, map_value in _map_entries(key, value):
        lines.append(f"{pad}{key} {{")
        lines.append(f"{pad}  key: {_map_key_text(key, map_key)}")
        _emit("value", map_value, indent + 1, lines, parent=key)
        lines.append(f"{pad}}}")


def _emit(key, value, indent, lines, parent=None):
    pad = "  " * indent
    if not _IDENT.fullmatch(str(key)):
        raise ConfigError(f"config field name {key!r} is not valid")
    if value is None:
        return
    if key in MAP_FIELDS or key in _MAP_FIELDS_IN.get(parent, ()):
        _emit_map(key, value, indent, lines)
    elif isinstance(value, dict):
        lines.append(f"{pad}{key} {{")
        for k in value:
            _emit(k, value[k], indent + 1, lines, parent=key)
        lines.append(f"{pad}}}")
    elif isinstance(value, (list, tuple)):
        if value and all(isinstance(v, dict) for v in value):
            lines.append(f"{pad}{key} [")
            for i, item in enumerate(value):
                lines.append(f"{pad}  {{")
                for k in item:
                    _emit(k, item[k], indent + 2, lines, parent=key)
                lines.append("{}  }}{}".format(pad, "," if i < len(value) - 1 else ""))
            lines.append(f"{pad}]")
        elif any(isinstance(v, (dict, list, tuple)) for v in value):
            raise ConfigError(f"config field {key!r} mixes messages and values")
        else:
            lines.append("{}{}: [ {} ]".format(pad, key, ", ".join(_scalar_text(key, v) for v in value)))
    else:
        lines.append(f"{pad}{key}: {_scalar_text(key, value)}")


def render_config(config, name=None):
    """Render a dict (the JSON form of Triton's ModelConfig) as config.pbtxt text.

    Strings are quoted, except the values of enum fields (``ENUM_FIELDS``: TYPE_FP32, KIND_CPU),
    which are written bare. Maps (``MAP_FIELDS``) may be given in the JSON form
    (``{"8.7": "model.plan"}``) or in the text form the parser gives (``{"key": "8.7", "value":
    "model.plan"}`` or a list of those; a map given as a dict whose only keys are ``key`` and
    ``value`` is read as that form); they are written as the text format writes maps, one
    ``field { key: ... value: ... }`` per entry."""
    if not isinstance(config, dict):
        raise ConfigError("the model configuration must be a dict")
    config = dict(config)
    if name is not None:
        config.setdefault("name", name)
    lines = []
    for key in config:
        _emit(key, config[key], 0, lines)
    return "\n".join(lines) + "\n"


# -- parsing ---------------------------------------------------------------------------
def parse_config(text):
    """Parse config.pbtxt text into a dict (repeated fields as lists); ConfigError when it
    cannot be parsed."""
    try:
        return _parse_config(text)
    except PbtxtError as exc:
        raise ConfigError(exc.msg) from exc


# -- validation ------------------------------------------------------------------------
def _check_tensors(config, field, problems):
    tensors = config.get(field, [])
    if not isinstance(tensors, list):
        tensors = [tensors]
    seen = set()
    for i, tensor in enumerate(tensors):
        where = f"{field}[{i}]"
        if not isinstance(tensor, dict):
            problems.append(f"{where} is not a message")
            continue
        name = tensor.get("name")
        if not isinstance(name, str) or not name:
            problems.append(f"{where} has no name")
        elif name in seen:
            problems.append(f"{where} name {name!r} is used twice")
        else:
            seen.add(name)
        data_type = tensor.get("data_type")
        if data_type not in DATA_TYPES:
            problems.append(f"{where} data_type {data_type!r} is not one of TYPE_*")
        dims = tensor.get("dims")
        if dims is None:
            problems.append(f"{where} has no dims")
        else:
            dims = dims if isinstance(dims, list) else [dims]
            if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and (d > 0 or d == -1) for d in dims):
                problems.append(f"{where} dims {dims!r} must be positive integers or -1")
    return tensors


def _check_filenames(config, problems):
    """default_model_filename and the cc_model_filenames values must be plain file names
    inside the version folder: the server would otherwise open any path it can read."""
    filename = config.get("default_model_filename")
    if filename not in (None, "") and not model_filename_ok(filename):  # empty: the server's default
        problems.append(MODEL_FILENAME_RULE)
    cc_names = config.get("cc_model_filenames")
    if cc_names is None:
        return
    # JSON form {"7.2": "model.plan"}; text form cc_model_filenames { key: "7.2" value: "model.plan" }
    entries = cc_names if isinstance(cc_names, list) else [cc_names]
    values = []
    for entry in entries:
        if isinstance(entry, dict) and set(entry) <= {"key", "value"} and "value" in entry:
            values.append(entry["value"])
        elif isinstance(entry, dict):
            values.extend(entry.values())
        else:
            values.append(entry)
    if not all(model_filename_ok(v) for v in values):
        problems.append("cc_model_filenames: " + MODEL_FILENAME_RULE.replace("default_model_filename ", "every value "))


def validate_config(config, model_name):
    """Return the problems of a parsed configuration (empty when it is fine)."""
    problems = []
    if not isinstance(config, dict):
        return ["the configuration is not a message"]
    name = config.get("name")
    if name is not None and name != model_name:
        problems.append(f"name {name!r} does not match the model name {model_name!r}")
    if not config.get("backend") and not config.get("platform"):
        problems.append("neither backend nor platform is set")
    mbs = config.get("max_batch_size", 0)
    if not isinstance(mbs, int) or isinstance(mbs, bool) or mbs < 0:
        problems.append(f"max_batch_size {mbs!r} must be an integer >= 0")
    _check_tensors(config, "input", problems)
    _check_tensors(config, "output", problems)
    _check_filenames(config, problems)
    policy = config.get("version_policy")
    if policy is not None:
        if not isinstance(policy, dict) or len(policy) != 1 or list(policy)[0] not in ("latest", "all", "specific"):
            problems.append("version_policy must be one of latest, all, specific")
    return problems


def load_config_text(text, model_name):
    """Parse and validate config.pbtxt text; raise ConfigError listing every problem."""
    config = parse_config(text)
    problems = validate_config(config, model_name)
    if problems:
        raise ConfigError("invalid model configuration for {}: {}".format(model_name, "; ".join(problems)),
                          problems=problems)
    return config


def config_from_dict(config, model_name):
    """Render a dict to config.pbtxt text, then parse and validate that text (so what is
    placed is exactly what was checked). Sets name and a latest-1 version policy when absent."""
    config = dict(config)
    config.setdefault("name", model_name)
    config.setdefault("version_policy", {"latest": {"num_versions": 1}})
    text = render_config(config)
    return text, load_config_text(text, model_name)


def synthesize_inputs(metadata):
    """Inputs for an 'any successful inference' smoke test from model metadata: zeros, with
    every variable dimension set to 1."""
    inputs = []
    for tensor in (metadata or {}).get("inputs", []):
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in tensor.get("shape", [])]
        count = 1
        for dim in shape:
            count *= dim
        datatype = tensor.get("datatype", "FP32")
        if datatype == "BYTES":
            data = [""] * count
        elif datatype == "BOOL":
            data = [False] * count
        else:
            data = [0] * count
        inputs.append({"name": tensor["name"], "shape": shape, "datatype": datatype, "data": data})
    if not inputs:
        raise ConfigError("the model metadata lists no inputs; give smoke_test.inputs")
    return inputs
