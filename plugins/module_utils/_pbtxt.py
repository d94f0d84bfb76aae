# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
#
# THE ONE config.pbtxt PARSER of the project. The original is plugins/module_utils/_pbtxt.py
# in the edgeai.fleet collection. images/litert-server/src/litert_server/_pbtxt.py is a
# byte-identical COPY (images/litert-server/build.sh copies the original into the image and
# refreshes the committed copy; tests on both sides fail when the two differ): edit the
# original, never the copy. Standard library only, Python 3.8 compatible, no ansible imports.
"""Triton model configuration (config.pbtxt, protobuf text format): the tokenizer and parser,
the type tables, and the rule for model file names.

``parse_message`` gives the raw form ``{field: [values...]}`` (messages are dicts of the same
form); ``parse_config`` gives the plain form: repeated fields (``REPEATED``) and fields given more
than once are lists, others single values. Scalars: double- or single-quoted strings (C escapes,
octal, hex, \\u and \\U; adjacent literals concatenate), ASCII integers (decimal or 0x hex),
ASCII floats (``1.5``, ``1e-3``, ``2f``, ``inf``, ``nan``), ``true``/``false``; any other bare word
(``TYPE_FP32``, ``KIND_CPU``) stays a string. Every error is a ``PbtxtError`` (a ValueError)
that names the line; nesting deeper than ``MAX_DEPTH`` and text longer than ``MAX_CHARS`` are
refused, so no input makes the parser recurse without bound.
"""

from __future__ import annotations

import re

# Triton data_type values; KServe v2 datatype of each.
DATA_TYPES = frozenset((
    "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64", "TYPE_INT8",
    "TYPE_INT16", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32", "TYPE_FP64",
    "TYPE_STRING", "TYPE_BF16",
))
KSERVE_DATATYPE = {t: ("BYTES" if t == "TYPE_STRING" else t[len("TYPE_"):]) for t in sorted(DATA_TYPES)}

# Fields that are repeated in Triton's ModelConfig and its messages (always lists once parsed;
# other fields are lists only when given more than once). Maps (parameters, cc_model_filenames,
# metric_tags, a warm-up's inputs) are key/value messages in the text form: not listed here.
REPEATED = frozenset((
    "input", "output", "batch_input", "batch_output", "instance_group", "model_warmup",  # ModelConfig
    "dims", "shape", "versions", "gpus", "secondary_devices", "profile",  # tensors, reshape, policies, groups
    "preferred_batch_size", "control_input", "control", "state", "resources", "source_input",
    "int32_false_true", "fp32_false_true", "bool_false_true", "gpu_execution_accelerator",
    "cpu_execution_accelerator", "agents", "step",
))

MAX_DEPTH = 32  # nested messages
MAX_CHARS = 1 << 20  # a Triton configuration is a few KiB

# A model file named by a configuration (default_model_filename, cc_model_filenames) is a plain
# file name inside its version folder. One message for every refused name, so that an error
# never tells whether some other path exists.
MODEL_FILENAME_RULE = ("default_model_filename must be a plain file name inside the version folder "
                       "(no '/', no '\\', no '..', no NUL or control character, at most 255 bytes)")

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOKEN = re.compile(
    r"""[ \t\r\n\f\v]+|\#[^\n]*|(?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')"""
    r"""|(?P<punct>[{}\[\]:,;<>])|(?P<word>[^\s{}\[\]:,;<>"'#]+)"""
)
_INT = re.compile(r"-?[0-9]+")
_HEX = re.compile(r"-?0[xX][0-9a-fA-F]+")
_FLOAT = re.compile(r"-?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?[fF]?")
_SPECIAL_FLOATS = {"inf": float("inf"), "-inf": float("-inf"), "infinity": float("inf"),
                   "-infinity": float("-inf"), "nan": float("nan"), "-nan": float("nan")}
_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11,
            "\\": 92, "'": 39, '"': 34, "?": 63}
_OCT = re.compile(r"[0-7]{1,3}")
_HEX2 = re.compile(r"[0-9a-fA-F]{1,2}")
_HEXDIGITS = re.compile(r"[0-9a-fA-F]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class PbtxtError(ValueError):
    """config.pbtxt text that cannot be parsed; ``line`` is 1-based (0: not known)."""

    def __init__(self, msg, line=0):
        super().__init__(msg)
        self.msg = msg
        self.line = line


def model_filename_ok(name):
    """True when ``name`` is a plain file name inside a version folder."""
    return (isinstance(name, str) and 0 < len(name.encode("utf-8", "surrogatepass")) <= 255
            and "/" not in name and "\\" not in name and ".." not in name and name != "."
            and not _CONTROL.search(name))


def check_model_filename(name):
    """Return ``name`` if it is a plain file name, else raise PbtxtError(MODEL_FILENAME_RULE)."""
    if not model_filename_ok(name):
        raise PbtxtError(MODEL_FILENAME_RULE)
    return name


def _tokens(text):
    if not isinstance(text, str):
        raise PbtxtError("config.pbtxt: the configuration must be text")
    if len(text) > MAX_CHARS:
        raise PbtxtError(f"config.pbtxt: longer than {MAX_CHARS} characters")
    out = []
    pos = 0
    line = 1
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise PbtxtError(f"config.pbtxt line {line}: cannot parse near {text[pos:pos + 20]!r}", line)
        if match.lastgroup:
            out.append((match.lastgroup, match.group(match.lastgroup), line))
        line += match.group(0).count("\n")
        pos = match.end()
    return out


def _hex_code(digits, width, esc, line):
    if len(digits) != width or not _HEXDIGITS.fullmatch(digits) or int(digits, 16) > 0x10FFFF:
        raise PbtxtError(f"config.pbtxt line {line}: bad \\{esc} escape", line)
    return int(digits, 16)


def _unquote(tok, line):
    """The value of a quoted string token (protobuf text format escapes, UTF-8)."""
    body = tok[1:-1]
    if "\\" not in body:
        return body
    out = bytearray()
    i = 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            start = i
            while i < len(body) and body[i] != "\\":
                i += 1
            out += body[start:i].encode("utf-8", "surrogatepass")
            continue
        esc = body[i + 1] if i + 1 < len(body) else ""
        if esc in _ESCAPES:
            out.append(_ESCAPES[esc])
            i += 2
        elif _OCT.match(body, i + 1):
            digits = _OCT.match(body, i + 1).group(0)
            if int(digits, 8) > 255:
                raise PbtxtError(f"config.pbtxt line {line}: octal escape \\{digits} is over 255", line)
            out.append(int(digits, 8))
            i += 1 + len(digits)
        elif esc in "xX" and _HEX2.match(body, i + 2):
            digits = _HEX2.match(body, i + 2).group(0)
            out.append(int(digits, 16))
            i += 2 + len(digits)
        elif esc in ("u", "U"):
            width = 4 if esc == "u" else 8
            code = _hex_code(body[i + 2:i + 2 + width], width, esc, line)
            i += 2 + width
            if 0xD800 <= code < 0xDC00 and body[i:i + 2] == "\\u":  # a UTF-16 surrogate pair
                low = _hex_code(body[i + 2:i + 6], 4, "u", line)
                if 0xDC00 <= low < 0xE000:
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    i += 6
            if 0xD800 <= code < 0xE000:
                raise PbtxtError(f"config.pbtxt line {line}: lone surrogate in a \\{esc} escape", line)
            out += chr(code).encode("utf-8")
        else:
            raise PbtxtError(f"config.pbtxt line {line}: unknown escape \\{esc}", line)
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PbtxtError(f"config.pbtxt line {line}: string is not valid UTF-8", line) from exc


def _scalar(tok):
    """A bare word: bool, int, float, or the word itself (an enum constant)."""
    if tok in ("true", "True"):
        return True
    if tok in ("false", "False"):
        return False
    if _INT.fullmatch(tok):
        return int(tok, 10)
    if _HEX.fullmatch(tok):
        return int(tok, 16)
    if _FLOAT.fullmatch(tok):
        return float(tok.rstrip("fF"))
    return _SPECIAL_FLOATS.get(tok.lower(), tok)


class _Parser:
    def __init__(self, text):
        self.toks = _tokens(text)
        self.pos = 0
        self.depth = 0

    def _peek(self):
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def _next(self, what):
        tok = self._peek()
        if tok is None:
            raise PbtxtError(f"config.pbtxt: unexpected end of text, expected {what}")
        self.pos += 1
        return tok

    def message(self, end, line=0):
        if self.depth >= MAX_DEPTH:
            raise PbtxtError(f"config.pbtxt line {line}: messages nested deeper than {MAX_DEPTH}", line)
        self.depth += 1
        msg = {}
        while True:
            tok = self._peek()
            if tok is None:
                if end is not None:
                    raise PbtxtError(f"config.pbtxt: missing {end!r} at the end (opened on line {line})", line)
                self.depth -= 1
                return msg
            if tok[0] == "punct" and tok[1] == end:
                self.pos += 1
                self.depth -= 1
                return msg
            if tok[0] == "punct" and tok[1] in ",;":
                self.pos += 1
                continue
            kind, name, fline = self._next("a field name")
            if kind != "word" or not IDENT.fullmatch(name):
                raise PbtxtError(f"config.pbtxt line {fline}: expected a field name, got {name!r}", fline)
            tok = self._peek()
            colon = bool(tok and tok[0] == "punct" and tok[1] == ":")
            if colon:
                self.pos += 1
            msg.setdefault(name, []).extend(self.value(name, colon, in_list=False))

    def value(self, name, colon, in_list):
        kind, tok, line = self._next(f"a value for {name!r}")
        if kind == "punct" and tok in "{<":
            return [self.message("}" if tok == "{" else ">", line)]
        if kind == "punct" and tok == "[" and not in_list:
            items = []
            while True:
                nxt = self._peek()
                if nxt is None:
                    raise PbtxtError(f"config.pbtxt line {line}: list of {name!r} is not closed", line)
                if nxt[0] == "punct" and nxt[1] == "]":
                    self.pos += 1
                    return items
                if nxt[0] == "punct" and nxt[1] == ",":
                    self.pos += 1
                    continue
                items.extend(self.value(name, True, in_list=True))
        if kind == "punct":
            raise PbtxtError(f"config.pbtxt line {line}: unexpected {tok!r} after {name!r}", line)
        if not colon:
            raise PbtxtError(f"config.pbtxt line {line}: expected ':' after {name!r}", line)
        if kind == "str":
            parts = [_unquote(tok, line)]
            while self._peek() is not None and self._peek()[0] == "str":  # "a" "b" is "ab"
                more = self._next("a string")
                parts.append(_unquote(more[1], more[2]))
            return ["".join(parts)]
        return [_scalar(tok)]


def parse_message(text):
    """Parse config.pbtxt text into the raw form ``{field: [values...]}``."""
    return _Parser(text).message(None)


def plain(msg):
    """The plain form of a raw message: lists for REPEATED fields and fields given twice."""
    out = {}
    for key, values in msg.items():
        values = [plain(v) if isinstance(v, dict) else v for v in values]
        out[key] = values if (key in REPEATED or len(values) > 1) else values[0]
    return out


def parse_config(text):
    """Parse config.pbtxt text into a dict (repeated fields as lists)."""
    return plain(parse_message(text))
