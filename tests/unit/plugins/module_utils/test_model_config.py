# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""config.pbtxt generation, parsing and validation (plugins/module_utils/_model_config.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible_collections.edgeai.fleet.plugins.module_utils._errors import ConfigError
from ansible_collections.edgeai.fleet.plugins.module_utils._model_config import (
    MODEL_FILENAME_RULE,
    config_from_dict,
    load_config_text,
    parse_config,
    render_config,
    synthesize_inputs,
    validate_config,
)

EXAMPLE = Path(__file__).resolve().parents[4] / "images" / "tritonserver" / "models" / "scale" / "config.pbtxt"

SCALE = {
    "backend": "python",
    "max_batch_size": 0,
    "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
    "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
    "instance_group": [{"kind": "KIND_CPU", "count": 1}],
}


def test_dict_renders_to_text_that_parses_back():
    text, parsed = config_from_dict(SCALE, "scale")
    assert 'name: "scale"' in text
    assert "data_type: TYPE_FP32" in text  # enums bare
    assert 'backend: "python"' in text  # strings quoted
    assert parsed["input"] == [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [-1]}]
    assert parsed["version_policy"] == {"latest": {"num_versions": 1}}
    assert parsed["instance_group"] == [{"kind": "KIND_CPU", "count": 1}]


def test_example_model_config_is_valid():
    config = load_config_text(EXAMPLE.read_text(), "scale")
    assert config["backend"] == "python"
    assert config["output"][0]["dims"] == [-1]


def test_parser_handles_comments_angle_brackets_and_repeated_fields():
    text = """
    # a comment
    name: "m"  platform: "tflite"
    input { name: "a" data_type: TYPE_UINT8 dims: 1 dims: 224 }
    input < name: "b", data_type: TYPE_INT32, dims: [ 3 ] >
    output [ { name: "y" data_type: TYPE_FP32 dims: [ 10 ] } ]
    parameters { key: "k" value: { string_value: "v" } }
    """
    config = parse_config(text)
    assert [i["name"] for i in config["input"]] == ["a", "b"]
    assert config["input"][0]["dims"] == [1, 224]
    assert validate_config(config, "m") == []


@pytest.mark.parametrize(
    "text, problem",
    [
        ('name: "other" backend: "python"', "does not match"),
        ("max_batch_size: 0", "neither backend nor platform"),
        ('backend: "python" input [ { name: "a" data_type: TYPE_FLOAT dims: [1] } ]', "data_type"),
        ('backend: "python" input [ { name: "a" data_type: TYPE_FP32 dims: [0] } ]', "dims"),
        ('backend: "python" input [ { name: "a" data_type: TYPE_FP32 } ]', "no dims"),
        ('backend: "python" max_batch_size: -1', "max_batch_size"),
        ('backend: "python" version_policy: { newest: {} }', "version_policy"),
    ],
)
def test_validation_names_the_problem(text, problem):
    with pytest.raises(ConfigError, match=problem):
        load_config_text(text, "scale")


@pytest.mark.parametrize("text", ['name: "x', "input { name: \"a\"", "input [ { }", "name \"x\"", "a: }"])
def test_syntax_errors_are_config_errors(text):
    with pytest.raises(ConfigError):
        parse_config(text)


def test_render_refuses_bad_field_names_and_values():
    with pytest.raises(ConfigError):
        render_config({"bad-name": 1})
    with pytest.raises(ConfigError):
        render_config({"x": object()})


def test_synthesized_smoke_inputs_follow_metadata():
    inputs = synthesize_inputs({"inputs": [{"name": "x", "datatype": "UINT8", "shape": [-1, 2, 3]}]})
    assert inputs == [{"name": "x", "shape": [1, 2, 3], "datatype": "UINT8", "data": [0] * 6}]
    with pytest.raises(ConfigError):
        synthesize_inputs({"inputs": []})


# -- model files named by a configuration (default_model_filename, cc_model_filenames) ------
OUTSIDE = ["../../../x.tflite", "../x", "/etc/passwd", "/nonexistent/model.tflite", "1/../../model.plan",
           "a/b.tflite", "a\\b", "..", "x\x00y", "model..tflite"]


@pytest.mark.parametrize("name", OUTSIDE)
def test_model_file_outside_the_version_folder_is_refused(name):
    """From the config dict and from config.pbtxt text (an artifact's, a saved one): the same
    ConfigError, whatever the name and whether or not the path exists."""
    messages = set()
    with pytest.raises(ConfigError) as err:
        config_from_dict({**SCALE, "default_model_filename": name}, "scale")
    messages.add(err.value.msg)
    quoted = name.replace("\\", "\\\\").replace("\x00", "\\000")
    text = f'name: "scale" backend: "python" default_model_filename: "{quoted}"'
    with pytest.raises(ConfigError) as err:
        load_config_text(text, "scale")
    messages.add(err.value.msg)
    assert messages == {"invalid model configuration for scale: " + MODEL_FILENAME_RULE}


@pytest.mark.parametrize(
    "text",
    [
        'backend: "tensorrt" cc_model_filenames { key: "8.7" value: "../../orin.plan" }',
        'backend: "tensorrt" cc_model_filenames [ { key: "8.7" value: "a.plan" }, { key: "7.2" value: "/x.plan" } ]',
    ],
)
def test_cc_model_filenames_stay_in_the_version_folder(text):
    with pytest.raises(ConfigError, match="cc_model_filenames: every value must be a plain file name"):
        load_config_text(text, "scale")


def test_plain_model_file_names_are_accepted():
    text, parsed = config_from_dict({**SCALE, "default_model_filename": "model_int8.onnx"}, "scale")
    assert parsed["default_model_filename"] == "model_int8.onnx"
    config = load_config_text('backend: "tensorrt" cc_model_filenames { key: "8.7" value: "orin.plan" }', "scale")
    assert config["cc_model_filenames"] == {"key": "8.7", "value": "orin.plan"}
    # the JSON form of the map
    assert validate_config({**SCALE, "cc_model_filenames": {"8.7": "orin.plan"}}, "scale") == []
    assert validate_config({**SCALE, "cc_model_filenames": {"8.7": "../orin.plan"}}, "scale") != []
