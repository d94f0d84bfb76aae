"""The server's config.pbtxt parser is the collection's (one parser, a byte-identical copy),
and the server reads Triton-style configurations with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from litert_server import _pbtxt
from litert_server.errors import LoadError
from litert_server.modelconfig import config_from_pbtxt, parse_pbtxt

HERE = Path(__file__).resolve().parents[1]
ROOT = HERE.parents[1]
ORIGINAL = ROOT / "plugins" / "module_utils" / "_pbtxt.py"
COPY = HERE / "src" / "litert_server" / "_pbtxt.py"
EXAMPLES = ROOT / "tests" / "unit" / "plugins" / "module_utils" / "pbtxt_examples"


def test_copy_is_byte_identical_to_the_collections_parser() -> None:
    assert Path(_pbtxt.__file__).resolve() == COPY
    assert COPY.read_bytes() == ORIGINAL.read_bytes(), (
        "src/litert_server/_pbtxt.py differs from plugins/module_utils/_pbtxt.py: edit the original, "
        "then run build.sh (or copy it) and commit both"
    )
    header = COPY.read_text().splitlines()[:12]
    assert any("The original is plugins/module_utils/_pbtxt.py" in line for line in header)
    assert any("byte-identical COPY" in line for line in header)


def test_build_copies_the_original_into_the_image() -> None:
    script = (HERE / "build.sh").read_text()
    assert 'original="$here/../../plugins/module_utils/_pbtxt.py"' in script
    assert 'cp "$original" "$ctx/src/src/litert_server/_pbtxt.py"' in script


def test_litert_example_config() -> None:
    cfg = config_from_pbtxt((EXAMPLES / "edgetpu_detector_tflite.pbtxt").read_text(), "edgetpu_detector")
    assert cfg.default_model_filename == "ssd_mobilenet_v2_edgetpu.tflite"
    assert [(t.name, t.datatype, t.dims) for t in cfg.inputs] == [
        ("normalized_input_image_tensor", "UINT8", (1, 300, 300, 3))
    ]
    assert [t.dims for t in cfg.outputs] == [(1, 10, 4), (1, 10), (1, 10), (1,)]
    assert cfg.policy == "specific" and cfg.versions == (1, 3)
    assert cfg.select_versions([1, 2, 3]) == [1, 3]


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("image_classifier_onnx", "image_classifier"),
        ("text_embedder_python", "text_embedder"),
        ("segmenter_tensorrt", "segmenter"),
        ("scorer_odd_syntax", "scorer"),
    ],
)
def test_other_platforms_parse_and_are_refused_by_name(name: str, model: str) -> None:
    text = (EXAMPLES / f"{name}.pbtxt").read_text()
    assert parse_pbtxt(text)["name"] == [model]
    with pytest.raises(LoadError, match="not served here"):
        config_from_pbtxt(text, model)


def test_booleans_and_line_numbers_come_from_the_shared_parser() -> None:
    assert parse_pbtxt("a: true b: False") == {"a": [True], "b": [False]}
    with pytest.raises(LoadError, match="line 3"):
        config_from_pbtxt('name: "m"\nbackend: "tflite"\ninput { dims: ] }\n', "m")
