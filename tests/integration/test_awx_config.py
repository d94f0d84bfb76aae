# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The AWX configuration as code (awx/) and the execution environment definition.

No AWX controller runs here: these tests read awx/configure.yml and awx/vars/main.yml the way
Ansible and AWX will, check the contracts they depend on (the inventory plugin's environment
variables, the playbook's variable names, the project's files), parse the schedule's rrule
with python-dateutil, and run ansible-builder and ansible-playbook for real where they work
offline (`ansible-builder create`, `--syntax-check`, the play's own preflight, and the whole
play against a stand-in awx.awx collection that records the arguments each task renders).
"""

from __future__ import annotations

import ast
import datetime
import re
import shutil
import socket
import subprocess
import sys
import tarfile
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from bindep.depends import Depends
from dateutil.rrule import rrulestr
from edgeai_lab import loopback
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
AWX = REPO / "awx"

PLAYBOOK_VARIABLES = {
    # The rollout knobs of playbooks/deploy_model.yml (the survey must use these names).
    "edgeai_max_unavailable_per_site",
    "edgeai_failure_budget_percent",
    "edgeai_failure_budget_min_executed",
    "edgeai_on_abort",
}
SECRET_WORDS = re.compile(r"token|secret|password|passphrase|private_key|ssh_key", re.I)


class Unsafe(str):
    """A string tagged !unsafe: Ansible passes it on without templating it."""


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!unsafe", lambda loader, node: Unsafe(loader.construct_scalar(node)))


def load(path):
    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=_Loader)


@pytest.fixture(scope="module")
def awx_vars():
    return load(AWX / "vars" / "main.yml")


@pytest.fixture(scope="module")
def play():
    plays = load(AWX / "configure.yml")
    assert len(plays) == 1
    return plays[0]


def tasks_using(play, module):
    found = [task for task in play["tasks"] if module in task]
    assert found, f"no {module} task in awx/configure.yml"
    return found


def walk_strings(value):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk_strings(key)
            yield from walk_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk_strings(item)
    elif isinstance(value, str):
        yield value


def ansible_env(**extra):
    """No ANSIBLE_*, CONTROLLER_* or TOWER_* setting of the caller's (an AWX login) leaks in."""
    return loopback.ansible_env("CONTROLLER_", "TOWER_", **extra)


# --- the play ------------------------------------------------------------------------------


def test_play_runs_on_localhost_and_reads_its_variables(play):
    assert play["hosts"] == "localhost"
    assert play["connection"] == "local"
    assert play["vars_files"] == ["vars/main.yml"]


def test_every_module_is_an_awx_module_or_builtin(play):
    for task in play["tasks"]:
        modules = [key for key in task if "." in key]
        assert len(modules) == 1, task["name"]
        assert modules[0].startswith(("awx.awx.", "ansible.builtin.")), modules[0]


@pytest.fixture(scope="module")
def awx_docs(play):
    """The documentation of the real awx.awx modules the play calls (bundled with ansible)."""
    modules = sorted({key for task in play["tasks"] for key in task if key.startswith("awx.awx.")})
    result = subprocess.run(
        [BIN / "ansible-doc", "--json", *modules],
        capture_output=True, text=True, check=True, cwd=REPO, env=ansible_env(),
    )
    return {name: doc["doc"]["options"] for name, doc in yaml.safe_load(result.stdout).items()}


def test_module_options_exist_in_the_bundled_awx_collection(play, awx_docs):
    """Every option the play sets is documented by the awx.awx module it calls."""
    for task in play["tasks"]:
        module = next(key for key in task if "." in key)
        if not module.startswith("awx.awx."):
            continue
        unknown = set(task[module]) - set(awx_docs[module])
        assert not unknown, f"{task['name']}: {module} has no option {sorted(unknown)}"


def test_syntax_check_passes():
    subprocess.run(
        [BIN / "ansible-playbook", "--syntax-check", "awx/configure.yml"],
        check=True, cwd=REPO, env=ansible_env(), capture_output=True, text=True,
    )


def _run_play(**env):
    return subprocess.run(
        [BIN / "ansible-playbook", "awx/configure.yml"],
        cwd=REPO, env=ansible_env(**env), capture_output=True, text=True, timeout=180, check=False,
    )


def test_without_a_controller_in_the_environment_the_play_stops_before_any_change():
    result = _run_play()
    assert result.returncode != 0
    assert "Set CONTROLLER_HOST and CONTROLLER_OAUTH_TOKEN" in result.stdout
    assert "Ensure the organization" not in result.stdout


def test_shipped_variables_pass_the_preflight_and_the_first_call_goes_to_the_controller():
    """With a controller that refuses connections (a closed loopback port), the play gets past
    its own checks and fails on the first API call, not earlier."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # the port is closed again here: connections to it are refused
    result = _run_play(CONTROLLER_HOST=f"http://127.0.0.1:{port}", CONTROLLER_OAUTH_TOKEN="not-a-real-token")
    assert result.returncode != 0
    assert "Check the variables that shape the jobs" in result.stdout
    assert "Connection refused" in result.stdout
    failed = re.findall(r"TASK \[([^\]]+)\]", result.stdout)[-1]
    assert failed == "Ensure the organization", result.stdout[-3000:]


# --- credentials and secrets ---------------------------------------------------------------


def test_no_secret_is_committed_under_awx():
    for path in AWX.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            assert "PRIVATE KEY" not in text, path
            assert "$ANSIBLE_VAULT" not in text, path


def test_secret_looking_variables_carry_no_literal_value(awx_vars):
    for name, value in awx_vars.items():
        names_an_object = name.endswith(
            ("_credential_type", "_credential_type_inputs", "_credential_type_injectors", "_credential"))
        if SECRET_WORDS.search(name) and not names_an_object:
            assert value in ("", None), f"{name} must not hold a value in awx/vars/main.yml"


def test_credential_values_come_only_from_vault_variables(play):
    secrets = {name: expr for name, expr in play["vars"].items()
               if SECRET_WORDS.search(name) and name != "_awx_deploy_extra_vars"}
    assert set(secrets) == {"_awx_registry_token", "_awx_webhook_api_token", "_awx_webhook_hmac_secret",
                            "_awx_ssh_private_key", "_awx_ssh_key_passphrase"}
    for name, expr in secrets.items():
        assert re.fullmatch(r"\{\{ vault_edgeai_awx_\w+ \| default\(''\) \}\}", expr), (name, expr)


def test_every_credential_task_is_no_log_and_keeps_existing_secrets_without_input(play):
    tasks = tasks_using(play, "awx.awx.credential")
    assert len(tasks) == 3
    for task in tasks:
        assert task.get("no_log") is True, task["name"]
        # 'exists' leaves a credential that is there alone when no secret is given
        assert "'present' if" in task["awx.awx.credential"]["state"]
        assert "else 'exists'" in task["awx.awx.credential"]["state"]


def _template_names(template):
    return set(re.findall(r"\{\{\s*(\w+)\s*\}\}", template))


@pytest.mark.parametrize("prefix, secret_fields", [
    ("edgeai_awx_registry", {"token"}),
    ("edgeai_awx_webhook", {"api_token", "hmac_secret"}),
])
def test_credential_types_inject_declared_fields_only(awx_vars, prefix, secret_fields):
    fields = awx_vars[f"{prefix}_credential_type_inputs"]["fields"]
    ids = {field["id"] for field in fields}
    assert {field["id"] for field in fields if field.get("secret")} == secret_fields
    injectors = awx_vars[f"{prefix}_credential_type_injectors"]
    assert set(injectors) == {"env"}
    for env_name, template in injectors["env"].items():
        assert env_name.startswith("EDGEAI_")
        # !unsafe: configure.yml hands the template to AWX instead of rendering it itself
        assert isinstance(template, Unsafe), env_name
        assert _template_names(template) <= ids, env_name


def _inventory_plugin_env_names():
    source = (REPO / "plugins" / "inventory" / "device_registry.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    doc = next(node.value.value for node in tree.body if isinstance(node, ast.Assign)
               and any(getattr(t, "id", None) == "DOCUMENTATION" for t in node.targets))
    options = yaml.safe_load(doc)["options"]
    return {name: [e["name"] for e in options[name].get("env", [])] for name in ("api_url", "api_token")}


def test_registry_credential_feeds_the_inventory_plugin_its_url_and_token(awx_vars):
    env = _inventory_plugin_env_names()
    injected = awx_vars["edgeai_awx_registry_credential_type_injectors"]["env"]
    assert injected[env["api_url"][0]] == "{{ url }}"
    assert injected[env["api_token"][0]] == "{{ token }}"


# --- inventory source ----------------------------------------------------------------------


def test_inventory_source_is_a_device_registry_config_in_the_project(awx_vars, play):
    source_path = awx_vars["edgeai_awx_inventory_source_path"]
    assert source_path.endswith(".device_registry.yml")
    config_file = REPO / source_path
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    assert config["plugin"] == "edgeai.fleet.device_registry"
    assert (config_file.parent / config["source_file"]).is_file()

    (task,) = tasks_using(play, "awx.awx.inventory_source")
    args = task["awx.awx.inventory_source"]
    assert args["source"] == "scm"
    assert args["source_project"] == "{{ edgeai_awx_project_name }}"
    assert args["source_path"] == "{{ edgeai_awx_inventory_source_path }}"
    assert args["credential"] == "{{ edgeai_awx_registry_credential }}"


def test_the_inventory_config_parses_with_the_plugin():
    result = subprocess.run(
        [BIN / "ansible-inventory", "-i", "inventories/example/fleet.device_registry.yml", "--list"],
        capture_output=True, text=True, check=True, cwd=REPO, env=ansible_env(),
    )
    inventory = yaml.safe_load(result.stdout)
    assert inventory["_meta"]["hostvars"], "the example registry yields no hosts"


# --- job templates, survey, workflow -------------------------------------------------------


def test_job_templates_run_the_deploy_playbook_sliced_and_canary(awx_vars, play):
    assert (REPO / awx_vars["edgeai_awx_deploy_playbook"]).is_file()
    (task,) = tasks_using(play, "awx.awx.job_template")
    args = task["awx.awx.job_template"]
    assert args["playbook"] == "{{ edgeai_awx_deploy_playbook }}"
    assert args["survey_enabled"] is True
    assert args["survey_spec"] == "{{ edgeai_awx_deploy_survey }}"
    assert args["execution_environment"] == "{{ edgeai_awx_ee_name }}"
    assert len(args["credentials"]) == 3
    items = {item["name"]: item for item in task["loop"]}
    fleet = items["{{ edgeai_awx_deploy_job_template }}"]
    canary = items["{{ edgeai_awx_canary_job_template }}"]
    assert fleet["job_slice_count"] == "{{ edgeai_awx_deploy_job_slice_count }}"
    assert fleet["limit"] == ""
    assert canary["job_slice_count"] == 1
    assert canary["limit"] == "{{ edgeai_awx_canary_limit }}"
    assert awx_vars["edgeai_awx_canary_limit"] == "ring_canary"
    assert isinstance(awx_vars["edgeai_awx_deploy_job_slice_count"], int)


def test_workflow_runs_the_fleet_only_after_the_canary_succeeds(play):
    (task,) = tasks_using(play, "awx.awx.workflow_job_template")
    nodes = {node["identifier"]: node for node in task["awx.awx.workflow_job_template"]["workflow_nodes"]}
    assert nodes["canary"]["unified_job_template"]["name"] == "{{ edgeai_awx_canary_job_template }}"
    assert nodes["canary"]["related"]["success_nodes"] == [{"identifier": "fleet"}]
    assert nodes["fleet"]["unified_job_template"]["name"] == "{{ edgeai_awx_deploy_job_template }}"
    assert "related" not in nodes["fleet"]


def test_survey_asks_model_and_version_and_the_rollout_knobs(awx_vars):
    survey = awx_vars["edgeai_awx_deploy_survey"]
    assert survey["name"] and survey["description"]  # AWX rejects a survey without them
    questions = {q["variable"]: q for q in survey["spec"]}
    assert len(questions) == len(survey["spec"])
    for question in survey["spec"]:
        assert {"question_name", "variable", "type", "required"} <= set(question)

    model = questions["edgeai_release_model_name"]
    version = questions["edgeai_release_model_version"]
    assert (model["type"], model["required"]) == ("text", True)
    assert (version["type"], version["required"], version["min"]) == ("integer", True, 1)

    optional = {name: q for name, q in questions.items() if not q["required"]}
    assert set(optional) == PLAYBOOK_VARIABLES
    for name, question in optional.items():
        # AWX passes a default on every launch: none, so the playbook's defaults apply
        assert "default" not in question, name
    assert set(questions["edgeai_on_abort"]["choices"]) == {"keep", "rollback"}
    budget = questions["edgeai_failure_budget_percent"]
    assert (budget["min"], budget["max"]) == (0, 100)


def test_survey_answers_become_the_release_the_playbook_reads(awx_vars):
    mapping = awx_vars["edgeai_awx_deploy_extra_vars"]["edgeai_release"]
    for value in mapping.values():
        assert isinstance(value, Unsafe)  # rendered by the job, not by configure.yml
    assert _template_names(mapping["model_name"]) == {"edgeai_release_model_name"}
    assert _template_names(mapping["model_version"]) == {"edgeai_release_model_version"}
    survey_vars = {q["variable"] for q in awx_vars["edgeai_awx_deploy_survey"]["spec"]}
    assert {"edgeai_release_model_name", "edgeai_release_model_version"} <= survey_vars
    example = yaml.safe_load((REPO / "playbooks" / "examples" / "release.yml").read_text(encoding="utf-8"))
    assert set(mapping) <= set(example["edgeai_release"])


def test_only_deliberate_templates_are_left_for_awx(awx_vars):
    """A '{{' in awx/vars that is not !unsafe would be rendered by configure.yml itself."""
    for value in walk_strings(awx_vars):
        if "{{" in value:
            assert isinstance(value, Unsafe), value


# --- nightly convergence schedule ----------------------------------------------------------


def test_schedule_rrule_has_a_time_zone_and_runs_nightly(awx_vars):
    rule = awx_vars["edgeai_awx_converge_rrule"]
    match = re.fullmatch(r"DTSTART;TZID=([^:]+):(\d{8}T\d{6}) (RRULE:.+)", rule)
    assert match, rule
    zone = ZoneInfo(match.group(1))
    assert "FREQ=DAILY" in match.group(3).split(":", 1)[1].split(";")

    parsed = rrulestr(rule.replace(" RRULE:", "\nRRULE:"), tzinfos={match.group(1): zone})
    runs = parsed.xafter(datetime.datetime(2026, 3, 27, tzinfo=zone), count=4)
    runs = list(runs)
    assert all(run.tzinfo is not None for run in runs)
    start = datetime.datetime.strptime(match.group(2), "%Y%m%dT%H%M%S")
    # nightly at the same wall-clock time, across the daylight saving change of 2026-03-29
    assert {(run.hour, run.minute) for run in runs} == {(start.hour, start.minute)}
    assert [(b.date() - a.date()).days for a, b in zip(runs, runs[1:], strict=False)] == [1, 1, 1]


def test_schedule_answers_the_required_survey_questions(awx_vars, play):
    required = {q["variable"] for q in awx_vars["edgeai_awx_deploy_survey"]["spec"] if q["required"]}
    assert required <= set(awx_vars["edgeai_awx_converge_release"])
    (task,) = tasks_using(play, "awx.awx.schedule")
    args = task["awx.awx.schedule"]
    assert args["unified_job_template"] == "{{ edgeai_awx_deploy_job_template }}"
    assert args["rrule"] == "{{ edgeai_awx_converge_rrule }}"
    assert args["extra_data"] == "{{ edgeai_awx_converge_release }}"


# --- execution environment -----------------------------------------------------------------


def _requirements(path):
    reqs = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            reqs[req.name.lower()] = req
    return reqs


def test_ee_python_requirements_match_the_runtime_requirements():
    runtime = _requirements(REPO / "requirements" / "runtime.txt")
    # and the release builder's controller packages, which an EE needs to run build_release.yml
    runtime.update(_requirements(REPO / "requirements" / "builder.txt"))
    ee = _requirements(REPO / "meta" / "ee-requirements.txt")
    for name in ("ansible", "ansible-core"):
        runtime.pop(name)
    # The EE file gives lower bounds (>=) at the versions the controller pins (==).
    assert {n: (str(r.specifier), r.extras) for n, r in ee.items()} == \
        {n: (str(r.specifier).replace("==", ">=", 1), r.extras) for n, r in runtime.items()}


@pytest.mark.parametrize("platform, wanted", [
    ("rpm", {"openssh-clients", "rsync", "git-core"}),
    ("dpkg", {"openssh-client", "rsync", "git"}),
])
def test_ee_system_requirements_resolve_per_platform(platform, wanted):
    depends = Depends((REPO / "meta" / "ee-bindep.txt").read_text(encoding="utf-8"))
    rules = depends.active_rules(["default", f"platform:{platform}"])
    assert {rule[0] for rule in rules} == wanted


def test_collection_meta_points_at_the_ee_files():
    meta = yaml.safe_load((REPO / "meta" / "execution-environment.yml").read_text(encoding="utf-8"))
    assert meta["dependencies"] == {"python": "meta/ee-requirements.txt", "system": "meta/ee-bindep.txt"}


@pytest.fixture(scope="module")
def collection_tarball(tmp_path_factory):
    return loopback.build_collection(tmp_path_factory.mktemp("collection"))


def test_built_collection_carries_its_ee_metadata(collection_tarball):
    with tarfile.open(collection_tarball) as tar:
        names = set(tar.getnames())
    assert {"meta/execution-environment.yml", "meta/ee-requirements.txt", "meta/ee-bindep.txt"} <= names


def test_ansible_builder_create_writes_a_complete_build_context(tmp_path, collection_tarball):
    src = tmp_path / "src"
    for rel in ("execution-environment.yml", "requirements.yml", "meta/ee-requirements.txt", "meta/ee-bindep.txt"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, src / rel)
    shutil.copy(collection_tarball, src / collection_tarball.name)
    context = tmp_path / "context"

    subprocess.run([BIN / "ansible-builder", "create", "-f", str(src / "execution-environment.yml"),
                    "-c", str(context), "--output-filename", "Containerfile"],
                   check=True, capture_output=True, text=True, cwd=src)

    build = context / "_build"
    assert (build / "requirements.txt").read_text() == (REPO / "meta/ee-requirements.txt").read_text()
    assert (build / "bindep.txt").read_text() == (REPO / "meta/ee-bindep.txt").read_text()
    assert yaml.safe_load((build / "requirements.yml").read_text()) == \
        yaml.safe_load((REPO / "requirements.yml").read_text())
    assert (build / "collections" / collection_tarball.name).is_file()
    containerfile = (context / "Containerfile").read_text()
    assert re.search(r'^ARG EE_BASE_IMAGE="[^"]+"$', containerfile, re.M)
    assert 'ARG ANSIBLE_INSTALL_REFS="ansible-core==2.19.14 ansible-runner==' in containerfile
    assert "ansible-galaxy collection install" in containerfile
    assert "/build/collections/edgeai-fleet-*.tar.gz" in containerfile


def test_ee_pins_the_same_ansible_core_as_the_controller():
    ee = yaml.safe_load((REPO / "execution-environment.yml").read_text(encoding="utf-8"))
    runtime = _requirements(REPO / "requirements" / "runtime.txt")
    assert ee["version"] == 3
    assert ee["dependencies"]["ansible_core"]["package_pip"] == f"ansible-core{runtime['ansible-core'].specifier}"
    assert ee["dependencies"]["python"] == "meta/ee-requirements.txt"
    assert ee["dependencies"]["system"] == "meta/ee-bindep.txt"


# --- the play run for real, against a recording stand-in for awx.awx ------------------------
# No AWX controller runs here. A stand-in collection named awx.awx, first on the collections
# path, has an action plugin per module that records the arguments the task hands over after
# Ansible has rendered them (what the real module would send to the controller) and changes
# nothing.

STUB_ACTION = '''\
from __future__ import annotations
import json, os
from ansible.plugins.action import ActionBase
class ActionModule(ActionBase):
    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        with open(os.environ['EDGEAI_AWX_STUB_LOG'], 'a') as log:
            log.write(json.dumps({'module': %r, 'params': self._task.args}, default=str) + '\\n')
        result['changed'] = False
        # echoed back (shown with -v) as a module that does not hide its arguments would:
        # only the task's no_log keeps them out of the output
        result['recorded_args'] = self._task.args
        return result
'''
STUB_DOC = '''\
DOCUMENTATION = r"""
module: %s
short_description: stand-in
description: stand-in that records its arguments
author: edgeai.fleet tests
"""
'''
SECRETS = {
    "vault_edgeai_awx_registry_token": "reg-token-7d2e",
    "vault_edgeai_awx_webhook_api_token": "hook-token-91ab",
    "vault_edgeai_awx_webhook_hmac_secret": "hmac-secret-c0ff",
    "vault_edgeai_awx_ssh_private_key": "stand-in key material 5e5e\n",
}


def run_with_stub(tmp_path, *extra_args):
    collection = tmp_path / "stub" / "ansible_collections" / "awx" / "awx"
    for sub in ("meta", "plugins/modules", "plugins/action"):
        (collection / sub).mkdir(parents=True, exist_ok=True)
    (collection / "galaxy.yml").write_text("namespace: awx\nname: awx\nversion: 0.0.0\n")
    (collection / "meta" / "runtime.yml").write_text("requires_ansible: '>=2.15'\n")
    for task in load(AWX / "configure.yml")[0]["tasks"]:
        for key in task:
            if key.startswith("awx.awx."):
                name = key.rsplit(".", 1)[1]
                (collection / "plugins" / "modules" / f"{name}.py").write_text(STUB_DOC % name)
                (collection / "plugins" / "action" / f"{name}.py").write_text(STUB_ACTION % name)
    log = tmp_path / "calls.jsonl"
    log.unlink(missing_ok=True)
    result = subprocess.run(
        [BIN / "ansible-playbook", "awx/configure.yml", *extra_args],
        cwd=REPO, capture_output=True, text=True, timeout=180, check=False,
        env=ansible_env(ANSIBLE_COLLECTIONS_PATH=str(tmp_path / "stub"), EDGEAI_AWX_STUB_LOG=str(log),
                        CONTROLLER_HOST="https://awx.example.invalid", CONTROLLER_OAUTH_TOKEN="not-a-real-token"),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    calls = [yaml.safe_load(line) for line in log.read_text().splitlines()]
    return result, calls


def calls_of(calls, module):
    return {call["params"]["name"]: call["params"] for call in calls if call["module"] == module}


def test_without_secrets_credentials_are_placeholders_that_keep_what_exists(tmp_path, awx_vars):
    result, calls = run_with_stub(tmp_path)
    creds = calls_of(calls, "credential")
    assert set(creds) == {awx_vars["edgeai_awx_registry_credential"], awx_vars["edgeai_awx_webhook_credential"],
                          awx_vars["edgeai_awx_machine_credential"]}
    for params in creds.values():
        assert params["state"] == "exists"
        assert not {"token", "api_token", "hmac_secret", "ssh_key_data", "ssh_key_unlock"} & set(params["inputs"])
    assert creds[awx_vars["edgeai_awx_machine_credential"]]["inputs"] == {"username": awx_vars["edgeai_awx_ssh_user"]}
    assert "No secret given for" in result.stdout


@pytest.fixture(scope="module")
def run_with_secrets(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("with-secrets")
    secrets_file = tmp_path / "secrets.yml"
    secrets_file.write_text(yaml.safe_dump(SECRETS))
    return run_with_stub(tmp_path, "-e", f"@{secrets_file}", "-v")


def test_with_secrets_credentials_get_them_and_the_log_never_shows_them(run_with_secrets, awx_vars):
    result, calls = run_with_secrets
    creds = calls_of(calls, "credential")
    registry = creds[awx_vars["edgeai_awx_registry_credential"]]
    webhook = creds[awx_vars["edgeai_awx_webhook_credential"]]
    machine = creds[awx_vars["edgeai_awx_machine_credential"]]
    assert (registry["state"], registry["inputs"]["token"]) == ("present", SECRETS["vault_edgeai_awx_registry_token"])
    assert webhook["state"] == "present"
    assert webhook["inputs"]["api_token"] == SECRETS["vault_edgeai_awx_webhook_api_token"]
    assert webhook["inputs"]["hmac_secret"] == SECRETS["vault_edgeai_awx_webhook_hmac_secret"]
    assert machine["inputs"]["ssh_key_data"] == SECRETS["vault_edgeai_awx_ssh_private_key"]
    for value in SECRETS.values():
        assert value.strip() not in result.stdout + result.stderr
    assert "No secret given for" not in result.stdout


def test_rendered_job_templates_workflow_and_schedule(tmp_path, awx_vars):
    extra = {"edgeai_awx_release_extra": {"artifacts": {"jetson": "a.plan"}, "model_name": "ignored"},
             "edgeai_awx_deploy_job_slice_count": 10}
    extra_file = tmp_path / "extra.yml"
    extra_file.write_text(yaml.safe_dump(extra))
    calls = run_with_stub(tmp_path, "-e", f"@{extra_file}")[1]

    templates = calls_of(calls, "job_template")
    fleet = templates[awx_vars["edgeai_awx_deploy_job_template"]]
    canary = templates[awx_vars["edgeai_awx_canary_job_template"]]
    assert (fleet["job_slice_count"], fleet["limit"], fleet["ask_job_slice_count_on_launch"]) == (10, "", True)
    canary_settings = (canary["job_slice_count"], canary["limit"], canary["ask_job_slice_count_on_launch"])
    assert canary_settings == (1, "ring_canary", False)
    for params in (fleet, canary):
        assert params["playbook"] == "playbooks/deploy_model.yml"
        assert params["survey_enabled"] is True
        assert params["survey_spec"] == awx_vars["edgeai_awx_deploy_survey"]
        # the survey's answers win over edgeai_awx_release_extra; the rest of the release is kept
        assert params["extra_vars"] == {"edgeai_release": {
            "artifacts": {"jetson": "a.plan"},
            "model_name": "{{ edgeai_release_model_name }}",
            "model_version": "{{ edgeai_release_model_version }}",
        }}
        assert params["credentials"] == [awx_vars["edgeai_awx_machine_credential"],
                                         awx_vars["edgeai_awx_registry_credential"],
                                         awx_vars["edgeai_awx_webhook_credential"]]

    (source,) = calls_of(calls, "inventory_source").values()
    assert (source["source"], source["source_path"]) == ("scm", "inventories/example/fleet.device_registry.yml")

    (schedule,) = calls_of(calls, "schedule").values()
    assert schedule["rrule"] == awx_vars["edgeai_awx_converge_rrule"]
    assert schedule["extra_data"] == awx_vars["edgeai_awx_converge_release"]
    assert schedule["unified_job_template"] == awx_vars["edgeai_awx_deploy_job_template"]

    (workflow,) = calls_of(calls, "workflow_job_template").values()
    assert workflow["survey_spec"] == awx_vars["edgeai_awx_deploy_survey"]
    assert [node["identifier"] for node in workflow["workflow_nodes"]] == ["canary", "fleet"]

    (project,) = calls_of(calls, "project").values()
    assert "credential" not in project  # no SCM credential named: the option is left out

    types = calls_of(calls, "credential_type")
    assert types[awx_vars["edgeai_awx_registry_credential_type"]]["injectors"] == {
        "env": {"EDGEAI_REGISTRY_URL": "{{ url }}", "EDGEAI_REGISTRY_TOKEN": "{{ token }}"}}


PYTHON_TYPES = {"str": str, "int": int, "bool": bool, "dict": dict, "list": list, "float": (int, float)}


def test_rendered_arguments_have_the_types_and_choices_the_real_modules_accept(run_with_secrets, awx_docs):
    calls = run_with_secrets[1]
    assert calls
    for call in calls:
        options = awx_docs[f"awx.awx.{call['module']}"]
        for name, value in call["params"].items():
            option = options[name]
            wanted = PYTHON_TYPES.get(option.get("type", "str"))
            if wanted is not None:
                assert isinstance(value, wanted), (call["module"], name, value)
                if wanted is int:
                    assert not isinstance(value, bool), (call["module"], name, value)
            if "choices" in option:
                assert value in option["choices"], (call["module"], name, value)
