# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every use of a role of the collection goes through an entry point it declares.

A role is used through `roles:`, `include_role` or `import_role`, in the roles themselves, the
playbooks, the molecule scenarios, and the playbooks that tests and benchmarks write out (string
constants of their Python files). Each call must name a declared entry point exactly as
meta/argument_specs.yml spells it (`tasks_from: client`, not `client.yml`: Ansible validates the
arguments only for the exact name), and pass none of the role's private (`_`-prefixed)
variables. A role that calls another role passes only the options that entry point declares.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
FQCN = "edgeai.fleet."
ROLE_ACTIONS = ("ansible.builtin.include_role", "ansible.builtin.import_role", "include_role", "import_role")
TASK_LISTS = ("tasks", "pre_tasks", "post_tasks", "handlers", "block", "rescue", "always")
ROLE_USE = re.compile(r"include_role|import_role|^\s*roles:", re.M)


def specs(role: str) -> dict:
    path = REPO / "roles" / role / "meta" / "argument_specs.yml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))["argument_specs"]


ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if (p / "meta" / "argument_specs.yml").is_file())


def _calls_in_tasks(tasks, where):
    for task in tasks or []:
        if not isinstance(task, dict):
            continue
        for key in TASK_LISTS:
            if isinstance(task.get(key), list):
                yield from _calls_in_tasks(task[key], where)
        for action in ROLE_ACTIONS:
            args = task.get(action)
            if isinstance(args, dict) and "name" in args:
                yield {"where": where, "role": args["name"], "tasks_from": args.get("tasks_from", "main"),
                       "vars": task.get("vars") or {}}


def _calls_in_document(doc, where):
    """Calls in a playbook (a list of plays) or a task file (a list of tasks)."""
    if not isinstance(doc, list):
        return
    for item in doc:
        if isinstance(item, dict) and ("hosts" in item or "import_playbook" in item):
            for entry in item.get("roles") or []:
                entry = {"role": entry} if isinstance(entry, str) else entry
                yield {"where": where, "role": entry.get("role") or entry.get("name"),
                       "tasks_from": entry.get("tasks_from", "main"), "vars": entry.get("vars") or {}}
            for key in TASK_LISTS:
                yield from _calls_in_tasks(item.get(key), where)
        else:
            yield from _calls_in_tasks([item], where)


def _yaml_files():
    for top in ("roles", "playbooks", "molecule"):
        for path in sorted((REPO / top).rglob("*.y*ml")):
            if "meta" in path.parts or "defaults" in path.parts or "vars" in path.parts:
                continue
            yield path
    # the playbooks tests and benchmarks keep next to them (the rest there is data)
    for top in ("tests", "benchmarks"):
        for path in sorted((REPO / top).rglob("*.y*ml")):
            if "output" not in path.parts and ROLE_USE.search(path.read_text(encoding="utf-8")):
                yield path


def _python_playbooks():
    """(path, YAML text) for the string constants of tests/ and benchmarks/ that are playbooks."""
    for top in ("tests", "benchmarks"):
        for path in sorted((REPO / top).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and "hosts:" in node.value \
                        and ROLE_USE.search(node.value):
                    yield path, node.value


def all_calls():
    calls = []
    for path in _yaml_files():
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        calls.extend(_calls_in_document(doc, str(path.relative_to(REPO))))
    for path, text in _python_playbooks():
        calls.extend(_calls_in_document(yaml.safe_load(text), str(path.relative_to(REPO))))
    return [c for c in calls if isinstance(c["role"], str) and c["role"].startswith(FQCN)]


CALLS = all_calls()


def test_the_scan_sees_the_callers():
    """The scan is not empty: it finds the role-to-role calls, the lab's playbooks and those tests write out."""
    seen = {(c["where"], c["role"], c["tasks_from"]) for c in CALLS}
    for expected in [
        ("roles/inference_server/tasks/pull.yml", "edgeai.fleet.container_engine", "registry"),
        ("roles/inference_server/tasks/pull.yml", "edgeai.fleet.site_cache", "client"),
        ("roles/site_cache/tasks/client.yml", "edgeai.fleet.container_engine", "registry"),
        ("roles/jetpack/tasks/apt_source.yml", "edgeai.fleet.apt_source", "main"),
        ("roles/coral/tasks/apt_source.yml", "edgeai.fleet.apt_source", "main"),
        ("playbooks/deploy_model.yml", "edgeai.fleet.model_deploy", "wave"),
        # the lab's site-cache playbooks (test_site_cache and the site bandwidth benchmark)
        ("tests/lab/playbooks/site_cache/pull.yml", "edgeai.fleet.inference_server", "image"),
        ("tests/lab/playbooks/site_cache/stage.yml", "edgeai.fleet.model_deploy", "stage"),
        ("tests/lab/playbooks/site_cache/caches.yml", "edgeai.fleet.site_cache", "main"),
        ("tests/integration/test_events_role.py", "edgeai.fleet.webhook", "main"),  # a playbook in a Python string
    ]:
        assert expected in seen, f"not found by the scan: {expected}"


@pytest.mark.parametrize("call", CALLS, ids=lambda c: f"{c['where']}->{c['role']}:{c['tasks_from']}")
def test_call_names_a_declared_entry_point_and_no_private_variable(call):
    role = call["role"][len(FQCN):]
    assert role in ROLES, f"{call['where']}: {call['role']} is not a role of the collection"
    entry_points = specs(role)
    assert call["tasks_from"] in entry_points, (
        f"{call['where']}: {call['role']} has no entry point {call['tasks_from']!r} (declared: "
        f"{sorted(entry_points)}); name one of them exactly, without .yml, or declare it in "
        f"roles/{role}/meta/argument_specs.yml")
    private = sorted(name for name in call["vars"] if name.startswith("_"))
    assert not private, f"{call['where']}: passes private variables of {call['role']}: {private}"


ROLE_TO_ROLE = [c for c in CALLS if c["where"].startswith("roles/")
                and c["where"].split("/")[1] != c["role"][len(FQCN):]]


@pytest.mark.parametrize("call", ROLE_TO_ROLE, ids=lambda c: f"{c['where']}->{c['role']}:{c['tasks_from']}")
def test_a_role_passes_another_role_only_its_declared_options(call):
    entry_point = specs(call["role"][len(FQCN):]).get(call["tasks_from"]) or {}
    undeclared = sorted(set(call["vars"]) - set(entry_point.get("options") or {}))
    assert not undeclared, (
        f"{call['where']}: passes {undeclared} to {call['role']} entry point {call['tasks_from']!r}, "
        "which does not declare them")


@pytest.mark.parametrize("role", ROLES)
def test_every_declared_entry_point_has_its_task_file(role):
    for entry_point in specs(role):
        assert (REPO / "roles" / role / "tasks" / f"{entry_point}.yml").is_file(), \
            f"roles/{role}: entry point {entry_point} has no tasks/{entry_point}.yml"
