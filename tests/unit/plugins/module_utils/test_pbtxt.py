# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one config.pbtxt parser (plugins/module_utils/_pbtxt.py) on configurations written the
way Triton's documentation writes them, its corner cases, and its copy in the LiteRT image."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import pytest
from ansible_collections.edgeai.fleet.plugins.module_utils import _pbtxt
from ansible_collections.edgeai.fleet.plugins.module_utils._errors import ConfigError
from ansible_collections.edgeai.fleet.plugins.module_utils._model_config import (
    load_config_text,
    parse_config,
    render_config,
)
from ansible_collections.edgeai.fleet.plugins.module_utils._pbtxt import PbtxtError, parse_message

ROOT = Path(__file__).resolve().parents[4]
ORIGINAL = ROOT / "plugins" / "module_utils" / "_pbtxt.py"
COPY = ROOT / "images" / "litert-server" / "src" / "litert_server" / "_pbtxt.py"
EXAMPLES = Path(__file__).resolve().parent / "pbtxt_examples"


def _example(name):
    return (EXAMPLES / f"{name}.pbtxt").read_text()


# -- one parser ----------------------------------------------------------------------------
def test_the_image_carries_a_byte_identical_copy():
    assert COPY.read_bytes() == ORIGINAL.read_bytes(), (
        "images/litert-server/src/litert_server/_pbtxt.py differs from plugins/module_utils/_pbtxt.py: "
        "copy the original over it (images/litert-server/build.sh does) and commit both"
    )


def test_the_parser_is_stdlib_only_and_python38():
    source = ORIGINAL.read_text()
    tree = ast.parse(source, feature_version=(3, 8))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"__future__", "re"}, imported
    header = "\n".join(source.splitlines()[:12])
    for words in (
        "The original is plugins/module_utils/_pbtxt.py",
        "images/litert-server/src/litert_server/_pbtxt.py is a",
        "byte-identical COPY",
        "edit the\n# original, never the copy",
    ):
        assert words in header, words


# -- Triton-style configurations -----------------------------------------------------------
def test_onnx_classifier():
    config = load_config_text(_example("image_classifier_onnx"), "image_classifier")
    assert config["platform"] == "onnxruntime_onnx" and config["max_batch_size"] == 16
    assert config["input"] == [
        {"name": "pixel_values", "data_type": "TYPE_FP32", "format": "FORMAT_NCHW", "dims": [3, 224, 224]}
    ]
    assert config["output"][0]["label_filename"] == "labels.txt"
    assert config["version_policy"] == {"latest": {"num_versions": 2}}
    assert config["dynamic_batching"] == {
        "preferred_batch_size": [4, 8, 16],
        "max_queue_delay_microseconds": 250,
        "preserve_ordering": True,
    }
    assert config["instance_group"] == [{"name": "classifier_gpu", "count": 2, "kind": "KIND_GPU", "gpus": [0, 1]}]


def test_edgetpu_detector_for_the_litert_server():
    config = load_config_text(_example("edgetpu_detector_tflite"), "edgetpu_detector")
    assert config["backend"] == "tflite" and config["max_batch_size"] == 0
    assert config["default_model_filename"] == "ssd_mobilenet_v2_edgetpu.tflite"
    assert [o["name"] for o in config["output"]] == [
        "TFLite_Detection_PostProcess",
        "TFLite_Detection_PostProcess:1",
        "TFLite_Detection_PostProcess:2",
        "TFLite_Detection_PostProcess:3",
    ]
    assert config["output"][3]["dims"] == [1]
    assert config["version_policy"] == {"specific": {"versions": [1, 3]}}
    # a map given twice is a list of key/value messages
    assert config["parameters"] == [
        {"key": "num_threads", "value": {"string_value": "2"}},
        {"key": "score_threshold", "value": {"string_value": "0.45"}},
    ]


def test_python_embedder_with_warmup():
    config = load_config_text(_example("text_embedder_python"), "text_embedder")
    assert config["input"][1] == {"name": "NORMALIZE", "data_type": "TYPE_BOOL", "dims": [1], "optional": True}
    assert config["output"][0]["data_type"] == "TYPE_FP16"
    assert config["instance_group"] == [{"count": 3, "kind": "KIND_CPU"}]
    assert config["dynamic_batching"] == {}
    assert config["model_warmup"] == [
        {
            "name": "short sentence",
            "batch_size": 1,
            "inputs": {"key": "TEXT", "value": {"data_type": "TYPE_STRING", "dims": [1], "zero_data": True}},
        }
    ]
    assert config["parameters"]["value"]["string_value"] == "$$TRITON_MODEL_DIRECTORY/env.tar.gz"


def test_tensorrt_segmenter():
    config = load_config_text(_example("segmenter_tensorrt"), "segmenter")
    assert config["cc_model_filenames"] == [
        {"key": "8.7", "value": "segmenter_orin.plan"},
        {"key": "7.2", "value": "segmenter_xavier.plan"},
    ]
    assert config["input"][0]["dims"] == [3, -1, -1]
    assert config["output"][0]["reshape"] == {"shape": [-1, -1]}
    assert config["version_policy"] == {"all": {}}
    assert config["optimization"]["cuda"] == {"graphs": True, "busy_wait_events": False}
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 500  # 0x1F4
    assert config["dynamic_batching"]["default_queue_policy"]["timeout_action"] == "REJECT"
    assert config["response_cache"] == {"enable": False}


def test_text_format_corners():
    config = load_config_text(_example("scorer_odd_syntax"), "scorer")
    assert config["name"] == "scorer" and config["max_batch_size"] == 0
    assert config["input"] == [{"name": "features", "data_type": "TYPE_FP64", "dims": [12]}]
    assert config["output"] == [{"name": "score", "data_type": "TYPE_FP32", "dims": [1]}]
    assert config["model_transaction_policy"] == {"decoupled": False}
    note, ratios = config["parameters"]
    assert note["value"]["string_value"] == 'tab\there, quote " and \u00e9\u00e9 continued'
    assert ratios["value"]["string_value"] == "1.5e-3"
    control = config["sequence_batching"]["control_input"][0]["control"][0]
    assert control == {"kind": "CONTROL_SEQUENCE_START", "fp32_false_true": [0, 1.0]}
    state = config["sequence_batching"]["state"][0]
    assert state["initial_state"]["zero_data"] is True and state["dims"] == [-1]
    assert config["instance_group"][0]["rate_limiter"]["resources"] == [{"name": "R1", "count": 4}]


@pytest.mark.parametrize("name", sorted(p.stem for p in EXAMPLES.glob("*.pbtxt")))
def test_examples_render_back_to_the_same_configuration(name):
    config = parse_config(_example(name))
    assert parse_config(render_config(config)) == config


def test_raw_form_keeps_every_value():
    assert parse_message('a: "x\\"y" b < c: 1 > b { c: 2 } d: [ 1, 2 ] d: 3') == {
        "a": ['x"y'],
        "b": [{"c": [1]}, {"c": [2]}],
        "d": [1, 2, 3],
    }


# -- scalars -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("word", "value"),
    [
        ("12", 12),
        ("-3", -3),
        ("0x1f", 31),
        ("1.5", 1.5),
        ("2.", 2.0),
        (".5", 0.5),
        ("1e-3", 0.001),
        ("2.5f", 2.5),
        ("true", True),
        ("False", False),
        ("KIND_GPU", "KIND_GPU"),
        ("1_000", "1_000"),  # not a number here (Python's int() would take it)
        ("\u0661\u0662", "\u0661\u0662"),  # Arabic-Indic digits are not a number either
        ("\uff11", "\uff11"),
    ],
)
def test_scalars(word, value):
    assert parse_message(f"f: {word}") == {"f": [value]}


def test_special_floats():
    parsed = parse_message("a: inf b: -inf c: nan d: Infinity")
    assert parsed["a"] == [math.inf] and parsed["b"] == [-math.inf] and parsed["d"] == [math.inf]
    assert math.isnan(parsed["c"][0])


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        (r'"a\nb"', "a\nb"),
        (r'"\101\x42\u00e9\U0001F600"', "AB\u00e9\U0001f600"),
        (r'"\ud83d\ude00"', "\U0001f600"),  # a surrogate pair, as json.dumps writes it
        ('"\u00e9t\u00e9"', "\u00e9t\u00e9"),  # UTF-8 text stays itself
        (r'"\303\251"', "\u00e9"),  # octal bytes of UTF-8
        (r"'it\'s'", "it's"),
        ('"a" "b" \'c\'', "abc"),
    ],
)
def test_string_escapes(literal, value):
    assert parse_message(f"s: {literal}") == {"s": [value]}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('s: "\\q"', "unknown escape"),
        ('s: "\\ud800"', "lone surrogate"),
        ('s: "\\777"', "over 255"),
        ('s: "\\377"', "not valid UTF-8"),
        ('s: "\\u12"', "bad \\u escape"),
        ("a " + "{ a " * 40 + "}" * 40, "nested deeper than 32"),
        ("a { " * 100_000, "nested deeper than 32"),
        ("d: [ [ 1 ] ]", "unexpected '['"),
        ("x" * (_pbtxt.MAX_CHARS + 1), "longer than"),
        ('name "x"', "expected ':'"),
        ("input [ { name: \"a\" }", "not closed"),
        ("a: }", "unexpected '}'"),
        ("1a: 2", "expected a field name"),
    ],
)
def test_errors_are_pbtxt_errors_with_a_reason(text, problem):
    with pytest.raises(PbtxtError, match=re.escape(problem)):
        parse_message(text)
    with pytest.raises(ConfigError):
        parse_config(text)


def test_errors_name_the_line():
    with pytest.raises(PbtxtError) as err:
        parse_message('name: "m"\n\ninput {\n  dims: ]\n}\n')
    assert err.value.line == 4 and "line 4" in str(err.value)


@pytest.mark.parametrize("name", ["model.tflite", "model.plan", ".hidden.onnx", "m-1_2.savedmodel", "\u00e9.tflite"])
def test_plain_model_file_names(name):
    assert _pbtxt.check_model_filename(name) == name


@pytest.mark.parametrize(
    "name",
    ["../x.tflite", "../../../etc/passwd", "/etc/passwd", "a/b.tflite", "a\\b", "..", ".", "", "x\x00y", "x\ny",
     "model..tflite", "x" * 256, 5, None],
)
def test_model_file_names_that_leave_the_version_folder(name):
    with pytest.raises(PbtxtError) as err:
        _pbtxt.check_model_filename(name)
    assert str(err.value) == _pbtxt.MODEL_FILENAME_RULE  # one message whatever the name
