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


# -- rendering that Triton's own text parser reads ------------------------------------------
# Triton parses config.pbtxt with protobuf's text format against model_config.proto: strings must
# be quoted (only enum fields take bare words) and maps are repeated {key, value} entries. The
# checks below parse what render_config writes with protobuf and Triton's ModelConfig message.
EXAMPLES = Path(__file__).resolve().parent / "pbtxt_examples"


def _triton():
    """protobuf's text_format and json_format, and Triton's ModelConfig message class.

    tritonclient (requirements/runtime.txt) ships model_config_pb2 in its grpc package, whose
    __init__ needs grpcio; the module itself needs only protobuf, so it is loaded by path."""
    import importlib.util

    import tritonclient
    from google.protobuf import json_format, text_format

    path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("edgeai_test_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return text_format, json_format, module.ModelConfig


def test_every_string_is_quoted_and_only_enum_values_are_bare():
    text_format, dummy, model_config = _triton()
    text, parsed = config_from_dict(SCALE, "scale")
    assert 'name: "INPUT0"' in text and 'name: "OUTPUT0"' in text
    assert "kind: KIND_CPU" in text
    message = text_format.Parse(text, model_config())
    assert [i.name for i in message.input] == ["INPUT0"]
    assert parsed["input"][0]["name"] == "INPUT0"
    # an all-capital string outside an enum field stays a string
    config = dict(SCALE, parameters={"MODE": {"string_value": "FAST"}}, default_model_filename="MODEL")
    text = render_config(config, name="scale")
    assert 'string_value: "FAST"' in text and 'default_model_filename: "MODEL"' in text
    assert text_format.Parse(text, model_config()).parameters["MODE"].string_value == "FAST"


@pytest.mark.parametrize("name", sorted(p.stem for p in EXAMPLES.glob("*.pbtxt")))
def test_rendered_examples_are_the_same_configuration_for_triton(name):
    text_format, dummy, model_config = _triton()
    original = (EXAMPLES / f"{name}.pbtxt").read_text()
    rendered = render_config(parse_config(original))
    assert text_format.Parse(rendered, model_config()) == text_format.Parse(original, model_config())


JSON_FORM_CONFIGS = {
    "maps_of_model_config": {
        "name": "seg",
        "platform": "tensorrt_plan",
        "max_batch_size": 4,
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP16", "format": "FORMAT_NCHW", "dims": [3, -1, -1]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_INT64", "dims": [-1, -1]}],
        "cc_model_filenames": {"8.7": "seg_orin.plan", "7.2": "seg_xavier.plan"},
        "default_model_filename": "seg.plan",
        "metric_tags": {"site": "SITE-A", "line": "3"},
        "parameters": {"EXECUTION_ENV_PATH": {"string_value": "$$TRITON_MODEL_DIRECTORY/env.tar.gz"},
                       "8.7": {"string_value": "X"}},
        "dynamic_batching": {
            "preferred_batch_size": [2, 4],
            "priority_levels": 2,
            "default_queue_policy": {"timeout_action": "REJECT"},
            "priority_queue_policy": {"1": {"timeout_action": "DELAY", "max_queue_size": 8}},
        },
        "optimization": {
            "priority": "PRIORITY_MAX",
            "cuda": {"graphs": True, "graph_spec": [{"batch_size": 2, "input": {"INPUT0": {"dim": [3, 64, 64]}},
                                                     "graph_lower_bound": {"batch_size": 1,
                                                                           "input": {"INPUT0": {"dim": [3, 8, 8]}}}}]},
            "execution_accelerators": {"gpu_execution_accelerator": [
                {"name": "tensorrt", "parameters": {"precision_mode": "FP16", "minimum_segment_size": "3"}},
            ]},
        },
        "instance_group": [{"kind": "KIND_GPU", "count": 1, "gpus": [0],
                            "secondary_devices": [{"kind": "KIND_NVDLA", "device_id": 0}],
                            "rate_limiter": {"priority": 2, "resources": [{"name": "R1", "count": 1}]}}],
        "model_warmup": [{"name": "WARMUP", "batch_size": 1,
                          "inputs": {"INPUT0": {"data_type": "TYPE_FP16", "dims": [3, 8, 8], "zero_data": True}}}],
        "model_repository_agents": {"agents": [{"name": "checksum", "parameters": {"MD5:1/seg.plan": "ABC"}}]},
    },
    "ensemble": {
        "name": "pipeline",
        "platform": "ensemble",
        "max_batch_size": 0,
        "input": [{"name": "RAW", "data_type": "TYPE_UINT8", "dims": [-1]}],
        "output": [{"name": "SCORES", "data_type": "TYPE_FP32", "dims": [10]}],
        "ensemble_scheduling": {"step": [
            {"model_name": "pre", "model_version": -1, "input_map": {"RAW_IN": "RAW"}, "output_map": {"IMG": "IMAGE"}},
            {"model_name": "cls", "model_version": -1, "input_map": {"IMG": "IMAGE"}, "output_map": {"OUT": "SCORES"}},
        ]},
        "batch_input": [{"kind": "BATCH_ELEMENT_COUNT", "target_name": ["N"], "data_type": "TYPE_INT32",
                         "source_input": ["RAW"]}],
    },
}


@pytest.mark.parametrize("name", sorted(JSON_FORM_CONFIGS))
def test_json_form_renders_to_what_triton_reads_from_that_json(name):
    """What render_config writes is, for Triton's own parser, the same ModelConfig as the JSON
    form it was given (protobuf's JSON mapping of model_config.proto)."""
    text_format, json_format, model_config = _triton()
    config = JSON_FORM_CONFIGS[name]
    text = render_config(config)
    assert text_format.Parse(text, model_config()) == json_format.ParseDict(config, model_config())
    parsed = load_config_text(text, config["name"])  # our parser and validation agree
    assert parse_config(render_config(parsed)) == parsed


def test_maps_are_written_as_key_value_entries():
    text, parsed = config_from_dict({**SCALE, "backend": "tensorrt", "cc_model_filenames": {"8.7": "orin.plan"},
                                     "parameters": {"k": {"string_value": "v"}}}, "scale")
    assert 'cc_model_filenames {\n  key: "8.7"\n  value: "orin.plan"\n}' in text
    assert 'parameters {\n  key: "k"\n  value {\n    string_value: "v"\n  }\n}' in text
    assert parsed["cc_model_filenames"] == {"key": "8.7", "value": "orin.plan"}
    assert parsed["parameters"] == {"key": "k", "value": {"string_value": "v"}}
    # keys that YAML reads as numbers are the strings Triton expects
    assert 'key: "8.7"' in render_config({"cc_model_filenames": {8.7: "orin.plan"}})
    # the JSON form of a map is validated like the text form
    with pytest.raises(ConfigError, match="cc_model_filenames: every value must be a plain file name"):
        config_from_dict({**SCALE, "cc_model_filenames": {"8.7": "../orin.plan"}}, "scale")


@pytest.mark.parametrize(
    "config, problem",
    [
        ({"input": [{"name": "a", "data_type": "TYPE FP32"}]}, "not an enum constant"),
        ({"instance_group": [{"kind": "KIND_CPU; count: 9"}]}, "not an enum constant"),
        ({"dynamic_batching": {"priority_queue_policy": {"high": {}}}}, "not an integer"),
        ({"dynamic_batching": {"priority_queue_policy": {"-1": {}}}}, "not an integer"),
        ({"parameters": [{"string_value": "v"}]}, "is a map"),
        ({"metric_tags": "site=a"}, "is a map"),
        ({"metric_tags": {("a", "b"): "x"}}, "not a string"),
    ],
)
def test_render_refuses_what_triton_could_not_read(config, problem):
    with pytest.raises(ConfigError, match=problem):
        render_config(config)
