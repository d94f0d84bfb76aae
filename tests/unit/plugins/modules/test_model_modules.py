# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""model_artifact, inference_model and inference_server_info as modules: argument specs,
secrets kept out of the output, failures reported as module failures."""

from __future__ import annotations

import json

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.edgeai.fleet.plugins.module_utils._inference_client import INFERENCE_SERVER_ARGS
from ansible_collections.edgeai.fleet.plugins.modules import inference_model, inference_server_info, model_artifact


def run(capsys, module, **args):
    with patch_module_args(args), pytest.raises(SystemExit) as exc:
        module.main()
    return exc.value.code, json.loads(capsys.readouterr().out)


def test_url_requires_sha256(capsys, tmp_path):
    rc, out = run(capsys, model_artifact, name="m", version=1, dest=str(tmp_path), url="https://127.0.0.1:1/m.tgz")
    assert rc == 1
    assert "sha256" in out["msg"]


def test_sources_are_mutually_exclusive(capsys, tmp_path):
    rc, out = run(capsys, model_artifact, name="m", version=1, dest=str(tmp_path), src="/x", image="r.example/m:1")
    assert rc == 1 and "mutually exclusive" in out["msg"]


def test_stage_from_src_check_mode_then_real(capsys, tmp_path):
    model = tmp_path / "model.tflite"
    model.write_bytes(b"TFL3")
    args = dict(name="det", version=2, dest=str(tmp_path / "a"), src=str(model), _ansible_diff=True)
    rc, out = run(capsys, model_artifact, _ansible_check_mode=True, **args)
    assert rc == 0 and out["changed"] is True and not (tmp_path / "a" / "det" / "2").exists()
    rc, out = run(capsys, model_artifact, **args)
    assert rc == 0 and out["changed"] is True and out["files"] == ["model.tflite"]
    rc, out = run(capsys, model_artifact, **args)
    assert rc == 0 and out["changed"] is False


def test_failures_carry_details_and_hide_secrets(capsys, tmp_path):
    model = tmp_path / "model.tflite"
    model.write_bytes(b"TFL3")
    rc, out = run(capsys, model_artifact, name="det", version=1, dest=str(tmp_path / "a"), src=str(model),
                  sha256="0" * 64, url_token="hunter2", headers={"X-Key": "hunter2"})
    assert rc == 1 and out["expected_sha256"] == "0" * 64
    assert "hunter2" not in json.dumps(out)


def test_connection_options_are_shared_and_token_is_secret():
    assert INFERENCE_SERVER_ARGS["token"]["no_log"] is True
    for module in (inference_model, inference_server_info):
        for option in ("url", "timeout", "validate_certs", "ca_path", "token"):
            assert option in module.DOCUMENTATION or "edgeai.fleet._inference_server" in module.DOCUMENTATION


def test_present_needs_version(capsys, tmp_path):
    rc, out = run(capsys, inference_model, name="m", state="present", repository=str(tmp_path))
    assert rc == 1 and "version" in out["msg"]


def test_inference_model_reports_unreachable_server(capsys, tmp_path):
    staged = tmp_path / "a" / "m" / "1"
    staged.mkdir(parents=True)
    (staged / "config.pbtxt").write_text('name: "m" backend: "python"')
    (staged / "model.py").write_text("")
    rc, out = run(capsys, inference_model, name="m", version=1, url="http://127.0.0.1:9", timeout=2,
                  repository=str(tmp_path / "r"), artifacts=str(tmp_path / "a"), state_dir=str(tmp_path / "s"),
                  token="sekrit")
    assert rc == 1 and "not live" in out["msg"] and out["rolled_back"] is False
    assert not (tmp_path / "r" / "m").exists()
    assert "sekrit" not in json.dumps(out)


def test_server_info_unreachable_is_not_a_failure(capsys):
    rc, out = run(capsys, inference_server_info, url="http://127.0.0.1:9", timeout=2)
    assert rc == 0 and out["live"] is False and out["changed"] is False
