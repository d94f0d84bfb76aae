# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The device_facts module end to end: arguments in, ansible_facts out (check mode too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.edgeai.fleet.plugins.modules import device_facts

PROFILES_DIR = Path(__file__).resolve().parents[4] / "tests" / "lab" / "profiles"


def run_module(capsys, args):
    with patch_module_args(args), pytest.raises(SystemExit) as exc:
        device_facts.main()
    out = json.loads(capsys.readouterr().out)
    return exc.value.code, out


@pytest.mark.parametrize("check_mode", [False, True])
def test_module_on_orin_profile(capsys, check_mode):
    rc, out = run_module(capsys, {"root": str(PROFILES_DIR / "agx-orin" / "root"), "query_engine": False,
                                  "_ansible_check_mode": check_mode})
    assert rc == 0
    assert out["changed"] is False
    facts = out["ansible_facts"]["edge_device"]
    assert facts["platform"] == "jetson"
    assert facts["jetson"]["jetpack"] == "6.0"
    assert facts["storage"]["path"] == "/var/lib/edgeai/models"


def test_module_on_missing_root_is_generic_not_a_traceback(capsys, tmp_path):
    rc, out = run_module(capsys, {"root": str(tmp_path / "nothing-here"), "query_engine": False})
    assert rc == 0
    facts = out["ansible_facts"]["edge_device"]
    assert facts["platform"] == "generic"
    assert facts["warnings"]


def test_module_runs_docker_version_through_run_command(capsys, tmp_path, monkeypatch):
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/docker").write_text("")
    seen = []

    def fake_run_command(self, args, **kwargs):
        seen.append(args)
        return 0, json.dumps({"Client": {"Version": "27.0.1"}, "Server": {"Version": "27.0.1"}}), ""

    monkeypatch.setattr(device_facts.AnsibleModule, "run_command", fake_run_command)
    rc, out = run_module(capsys, {"root": str(tmp_path)})
    engine = out["ansible_facts"]["edge_device"]["container_engine"]
    assert seen == [[str(tmp_path / "usr/bin/docker"), "version", "--format", "{{json .}}"]]
    assert engine["version"] == "27.0.1" and engine["running"] is True


def test_module_documents_every_returned_field():
    import yaml

    doc = yaml.safe_load(device_facts.RETURN)["ansible_facts"]["contains"]["edge_device"]["contains"]
    from ansible_collections.edgeai.fleet.plugins.module_utils._device_facts import gather

    facts = gather(root=str(PROFILES_DIR / "agx-orin" / "root"), machine="aarch64", host_proc_fallback=False)
    assert set(facts) == set(doc)
    for section in ("jetson", "container_engine", "storage"):
        assert set(facts[section]) == set(doc[section]["contains"]), section
    assert set(facts["jetson"]["power_mode"] or {"id": 0, "name": 0, "default_id": 0, "source": 0, "modes": 0}) == \
        set(doc["jetson"]["contains"]["power_mode"]["contains"])
    coral = gather(root=str(PROFILES_DIR / "coral-dev-board" / "root"), machine="aarch64")["coral"]
    assert set(coral) == set(doc["coral"]["contains"])
    assert set(coral["apex_module"]) == set(doc["coral"]["contains"]["apex_module"]["contains"])
