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

DATA_TYPES = frozenset((
    "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64", "TYPE_INT8",
    "TYPE_INT16", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32", "TYPE_FP64",
    "TYPE_STRING", "TYPE_BF16",
))
# KServe v2 datatype of each Triton data_type (for synthesised smoke-test inputs)
KSERVE_DATATYPE = dict((t, t[len("TYPE_"):]) for t in DATA_TYPES)
KSERVE_DATATYPE["TYPE_STRING"] = "BYTES"

# Fields that are repeated messages in Triton's ModelConfig (always lists once parsed).
REPEATED = frozenset(("input", "output", "instance_group", "dims", "versions", "gpus",
                      "reshape", "batch_input", "batch_output", "model_warmup"))
_ENUM = re.compile(r"^[A-Z][A-Z0-9_]*$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOKEN = re.compile(
    r"""\s+|\#[^\n]*|(?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')"""
    r"""|(?P<punct>[{}\[\]:,;<>])|(?P<word>[^\s{}\[\]:,;<>"'#]+)"""
)


# -- generation ------------------------------------------------------------------------
def _scalar_text(key, value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if not isinstance(value, str):
        raise ConfigError(f"config field {key!r}: unsupported value {value!r}")
    if _ENUM.match(value):
        return value  # enum constant such as TYPE_FP32 or KIND_CPU
    return json.dumps(value)


def _emit(key, value, indent, lines):
    pad = "  " * indent
    if not _IDENT.match(str(key)):
        raise ConfigError(f"config field name {key!r} is not valid")
    if isinstance(value, dict):
        lines.append(f"{pad}{key} {{")
        for k in value:
            _emit(k, value[k], indent + 1, lines)
        lines.append(f"{pad}}}")
    elif isinstance(value, (list, tuple)):
        if value and all(isinstance(v, dict) for v in value):
            lines.append(f"{pad}{key} [")
            for i, item in enumerate(value):
                lines.append(f"{pad}  {{")
                for k in item:
                    _emit(k, item[k], indent + 2, lines)
                lines.append("{}  }}{}".format(pad, "," if i < len(value) - 1 else ""))
            lines.append(f"{pad}]")
        elif any(isinstance(v, (dict, list, tuple)) for v in value):
            raise ConfigError(f"config field {key!r} mixes messages and values")
        else:
            lines.append("{}{}: [ {} ]".format(pad, key, ", ".join(_scalar_text(key, v) for v in value)))
    elif value is None:
        return
    else:
        lines.append(f"{pad}{key}: {_scalar_text(key, value)}")


def render_config(config, name=None):
    """Render a dict (the JSON form of Triton's ModelConfig) as config.pbtxt text.

    String values that look like enum constants (TYPE_FP32, KIND_CPU) are written bare."""
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
def _tokens(text):
    out = []
    pos = 0
    line = 1
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise ConfigError(f"config.pbtxt line {line}: cannot parse near {text[pos:pos + 20]!r}")
        if match.lastgroup:
            out.append((match.lastgroup, match.group(match.lastgroup), line))
        line += match.group(0).count("\n")
        pos = match.end()
    return out


def _scalar(kind, tok):
    if kind == "str":
        return tok[1:-1].encode("utf-8").decode("unicode_escape")
    if tok in ("true", "True"):
        return True
    if tok in ("false", "False"):
        return False
    for conv in (int, float):
        try:
            return conv(tok)
        except ValueError:
            pass
    return tok


class _Parser:
    def __init__(self, text):
        self.toks = _tokens(text)
        self.pos = 0

    def _peek(self):
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def _next(self):
        tok = self._peek()
        if tok is None:
            raise ConfigError("config.pbtxt: unexpected end of text")
        self.pos += 1
        return tok

    def message(self, end):
        msg = {}
        while True:
            tok = self._peek()
            if tok is None:
                if end is not None:
                    raise ConfigError(f"config.pbtxt: missing {end!r} at the end")
                return msg
            if tok[0] == "punct" and tok[1] == end:
                self.pos += 1
                return msg
            if tok[0] == "punct" and tok[1] in ",;":
                self.pos += 1
                continue
            kind, name, line = self._next()
            if kind != "word" or not _IDENT.match(name):
                raise ConfigError(f"config.pbtxt line {line}: expected a field name, got {name!r}")
            tok = self._peek()
            colon = bool(tok and tok[0] == "punct" and tok[1] == ":")
            if colon:
                self.pos += 1
            values = self.value(name, colon)
            msg.setdefault(name, []).extend(values)

    def value(self, name, colon):
        kind, tok, line = self._next()
        if kind == "punct" and tok in "{<":
            return [self.message("}" if tok == "{" else ">")]
        if kind == "punct" and tok == "[":
            items = []
            while True:
                nxt = self._peek()
                if nxt is None:
                    raise ConfigError(f"config.pbtxt: list of {name!r} is not closed")
                if nxt[0] == "punct" and nxt[1] == "]":
                    self.pos += 1
                    return items
                if nxt[0] == "punct" and nxt[1] == ",":
                    self.pos += 1
                    continue
                items.extend(self.value(name, True))
        if kind == "punct":
            raise ConfigError(f"config.pbtxt line {line}: unexpected {tok!r} after {name!r}")
        if not colon:
            raise ConfigError(f"config.pbtxt line {line}: expected ':' after {name!r}")
        return [_scalar(kind, tok)]


def _plain(msg):
    out = {}
    for key, values in msg.items():
        values = [_plain(v) if isinstance(v, dict) else v for v in values]
        out[key] = values if (key in REPEATED or len(values) > 1) else values[0]
    return out


def parse_config(text):
    """Parse config.pbtxt text into a dict (repeated fields as lists)."""
    return _plain(_Parser(text).message(None))


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
