# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What Galaxy and the Ansible docs tooling see of the collection.

The role READMEs against their meta/argument_specs.yml (scripts/role-readmes, in check mode and on
copies of the roles), the example playbook of every README (parsed, its variables checked against
the role's entry point, and `ansible-playbook --syntax-check`), the built tarball (relative links
of every Markdown file in it resolve inside it, LICENSE, metadata), the collection dependencies
against what the content uses, and the changelog fragments and version_added that a release needs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path, PurePosixPath

import pytest
import yaml
from edgeai_lab import loopback
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GENERATOR = REPO / "scripts" / "role-readmes"
ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if (p / "meta" / "argument_specs.yml").is_file())
FQCN = "edgeai.fleet"
GALAXY = yaml.safe_load((REPO / "galaxy.yml").read_text(encoding="utf-8"))


def generator(*args, cwd=REPO):
    return subprocess.run([sys.executable, str(GENERATOR), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=loopback.ansible_env(), check=False)


def specs(role, roles_dir=REPO / "roles"):
    return yaml.safe_load((roles_dir / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]


def split_readme(text):
    """(before, generated, after) around the role-readmes markers."""
    match = re.search(r"^<!-- BEGIN role-readmes\b.*?^<!-- END role-readmes -->$", text, re.M | re.S)
    assert match, "no role-readmes markers"
    return text[:match.start()], match.group(0), text[match.end():]


# --- the role READMEs ----------------------------------------------------------------------


def test_every_role_has_a_readme_that_matches_its_argument_specs():
    assert ROLES, "no roles found"
    missing = [r for r in ROLES if not (REPO / "roles" / r / "README.md").is_file()]
    assert not missing, f"roles without README.md: {missing}; run scripts/role-readmes"
    result = generator("--check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(ROLES)} README(s) up to date" in result.stdout


@pytest.mark.parametrize("role", ROLES)
def test_readme_lists_every_entry_point_and_variable(role):
    text = (REPO / "roles" / role / "README.md").read_text(encoding="utf-8")
    generated = split_readme(text)[1]
    for entry_point, spec in specs(role).items():
        assert f"### Entry point `{entry_point}`" in generated
        for name in spec.get("options") or {}:
            assert f"`{name}`" in generated, f"{role}:{entry_point}: {name} not in README"


@pytest.fixture()
def roles_copy(tmp_path):
    """A copy of the roles' meta/argument_specs.yml and README.md, for the generator to change."""
    for role in ROLES:
        (tmp_path / role / "meta").mkdir(parents=True)
        shutil.copy(REPO / "roles" / role / "meta" / "argument_specs.yml", tmp_path / role / "meta")
        shutil.copy(REPO / "roles" / role / "README.md", tmp_path / role)
    return tmp_path


def _add_option(roles_dir, role, entry_point, name, spec):
    path = roles_dir / role / "meta" / "argument_specs.yml"
    data = yaml.safe_load(path.read_text())
    data["argument_specs"][entry_point].setdefault("options", {})[name] = spec
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_check_fails_on_a_new_option_and_a_rewrite_adds_it_keeping_the_prose(roles_copy):
    readme = roles_copy / "webhook" / "README.md"
    before, dummy, after = split_readme(readme.read_text())
    _add_option(roles_copy, "webhook", "main", "webhook_new_knob",
                {"type": "int", "default": 7, "description": "A new knob, see O(webhook_api_url)."})

    check = generator("--check", "--roles-dir", roles_copy)
    assert check.returncode == 1
    assert "webhook/README.md: out of date" in check.stderr
    assert "webhook_new_knob" in check.stderr  # the diff shows what is missing
    assert "site_cache" not in check.stderr    # the other READMEs are still up to date

    write = generator("--roles-dir", roles_copy)
    assert write.returncode == 0, write.stderr
    assert "webhook/README.md: rewritten" in write.stdout
    text = readme.read_text()
    assert "| `webhook_new_knob` | int |  | `7` | A new knob, see `webhook_api_url`. |" in text
    new_before, dummy, new_after = split_readme(text)
    assert (new_before, new_after) == (before, after)
    assert generator("--check", "--roles-dir", roles_copy).returncode == 0


def test_a_new_entry_point_gets_its_own_section(roles_copy):
    path = roles_copy / "model_deploy" / "meta" / "argument_specs.yml"
    data = yaml.safe_load(path.read_text())
    data["argument_specs"]["drain"] = {
        "short_description": "Stop sending traffic to the device",
        "version_added": "0.2.0",
        "description": ["Marks the device C(draining) for O(model_deploy_drain_seconds)."],
        "options": {"model_deploy_drain_seconds": {"type": "int", "required": True, "description": "How long."}},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert generator("--check", "--roles-dir", roles_copy).returncode == 1
    assert generator("--roles-dir", roles_copy).returncode == 0
    text = (roles_copy / "model_deploy" / "README.md").read_text()
    assert "- [`drain`](#entry-point-drain): Stop sending traffic to the device" in text
    assert "### Entry point `drain`\n\nStop sending traffic to the device. Added in version 0.2.0." in text
    assert "Marks the device `draining` for `model_deploy_drain_seconds`." in text
    assert "`tasks_from: drain`" in text
    assert "| `model_deploy_drain_seconds` | int | yes |  | How long. |" in text


def test_nested_options_secrets_choices_and_pipes_are_rendered(roles_copy):
    _add_option(roles_copy, "site_cache", "client", "site_cache_extra", {
        "type": "list", "elements": "dict", "description": "Extra caches.",
        "options": {
            "mode": {"type": "str", "choices": ["a", "b"], "default": "a", "description": "Mode."},
            "token": {"type": "str", "no_log": True, "description": "Token, I(never) logged."},
            "expr": {"type": "str", "default": "{{ x | default(1) }}", "description": "V(<a|b>) *literal*."},
        }})
    assert generator("--roles-dir", roles_copy).returncode == 0
    text = (roles_copy / "site_cache" / "README.md").read_text()
    assert "| `site_cache_extra` | list of dict |  |  | Extra caches. |" in text
    assert "| `site_cache_extra[].mode` | str |  | `a` | Mode.<br>Choices: `a`, `b`. |" in text
    assert "| `site_cache_extra[].token` | str, secret (no_log) |  |  | Token, *never* logged. |" in text
    assert r"| `site_cache_extra[].expr` | str |  | `{{ x \| default(1) }}` | `<a\|b>` \*literal\*. |" in text


def test_a_missing_readme_fails_the_check_and_gets_a_skeleton(roles_copy):
    (roles_copy / "coral" / "README.md").unlink()
    check = generator("--check", "--roles-dir", roles_copy, "coral")
    assert check.returncode == 1
    assert "coral/README.md: missing" in check.stderr
    assert generator("--roles-dir", roles_copy, "coral").returncode == 0
    text = (roles_copy / "coral" / "README.md").read_text()
    assert text.startswith("# edgeai.fleet.coral\n")
    split_readme(text)
    assert "## Example playbook" in text
    assert generator("--check", "--roles-dir", roles_copy, "coral").returncode == 0


def test_a_readme_without_markers_is_refused_and_left_alone(roles_copy):
    readme = roles_copy / "jetpack" / "README.md"
    readme.write_text("# edgeai.fleet.jetpack\n\nHand-written only.\n")
    for args in (("--check",), ()):
        result = generator(*args, "--roles-dir", roles_copy, "jetpack")
        assert result.returncode == 1
        assert "needs exactly one line '<!-- BEGIN role-readmes -->'" in result.stderr
    assert readme.read_text() == "# edgeai.fleet.jetpack\n\nHand-written only.\n"


def test_broken_markup_is_reported_with_its_place(roles_copy):
    _add_option(roles_copy, "coral", "main", "coral_broken", {"type": "str", "description": "See O(coral_variant."})
    result = generator("--check", "--roles-dir", roles_copy, "coral")
    assert result.returncode == 1
    assert "coral/meta/argument_specs.yml: main.options.coral_broken: markup error" in result.stderr


# --- the example playbooks -----------------------------------------------------------------


def example_playbook(role):
    text = (REPO / "roles" / role / "README.md").read_text(encoding="utf-8")
    after = split_readme(text)[2]
    match = re.search(r"^## Example playbook\n+```yaml\n(.*?)^```$", after, re.M | re.S)
    assert match, f"roles/{role}/README.md: no '## Example playbook' with a yaml block after the generated part"
    return match.group(1)


def _role_calls(plays):
    """(role name, entry point, vars) for every use of a role in the plays."""
    for play in plays:
        for item in play.get("roles", []):
            item = {"role": item} if isinstance(item, str) else item
            yield item["role"], item.get("tasks_from", "main"), item.get("vars", {}), play.get("vars", {})
        for task in play.get("tasks", []):
            for key in ("ansible.builtin.include_role", "ansible.builtin.import_role"):
                if key in task:
                    entry_point = PurePosixPath(task[key].get("tasks_from", "main")).stem
                    yield task[key]["name"], entry_point, task.get("vars", {}), play.get("vars", {})


@pytest.mark.parametrize("role", ROLES)
def test_example_playbook_uses_the_role_with_its_own_variables(role):
    plays = yaml.safe_load(example_playbook(role))
    assert isinstance(plays, list) and plays
    calls = [c for c in _role_calls(plays) if c[0] == f"{FQCN}.{role}"]
    assert calls, f"the example playbook of {role} does not use {FQCN}.{role}"
    entry_points = specs(role)
    for _role_name, entry_point, role_vars, play_vars in calls:
        options = entry_points[entry_point].get("options") or {}
        unknown = set(role_vars) - set(options)
        assert not unknown, f"{role}:{entry_point}: the example sets variables the role does not take: {unknown}"
        required = {name for name, spec in options.items() if spec.get("required")}
        assert required <= set(role_vars) | set(play_vars), \
            f"{role}:{entry_point}: the example leaves out required variables {required - set(role_vars)}"


def test_example_playbooks_pass_syntax_check(tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    north-orin-01: {}\n")
    for role in ROLES:
        playbook = tmp_path / f"{role}.yml"
        playbook.write_text(example_playbook(role))
        result = subprocess.run([BIN / "ansible-playbook", "--syntax-check", "-i", str(inventory), str(playbook)],
                                capture_output=True, text=True, cwd=REPO, env=loopback.ansible_env(), check=False)
        assert result.returncode == 0, f"{role}: {result.stdout}{result.stderr}"


# --- the built tarball ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    path = loopback.build_collection(tmp_path_factory.mktemp("collection"))
    with tarfile.open(path) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    return files


def github_anchors(markdown):
    """The anchors GitHub gives the headings of a Markdown text."""
    anchors, counts = set(), {}
    text = re.sub(r"^```.*?^```", "", markdown, flags=re.M | re.S)
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = counts.get(slug, 0)
        counts[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    for name in re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", markdown):
        anchors.add(name)
    return anchors


LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)"  # [text](target)
                  r"|^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)"                              # [ref]: target
                  r"|<(?:img|a)\s[^>]*(?:src|href)=\"([^\"]+)\"", re.M)                   # <img src=...>


def relative_links(markdown):
    text = re.sub(r"^```.*?^```", "", markdown, flags=re.M | re.S)   # code blocks hold no links
    text = re.sub(r"`[^`\n]*`", "", text)                             # nor code spans
    for match in LINK.finditer(text):
        target = [g for g in match.groups() if g][0]
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("//"):
            continue  # a URL (https:, mailto:) is not resolved inside the tarball
        yield target


def broken_links(files):
    names = set(files)
    dirs = {str(parent) for name in names for parent in PurePosixPath(name).parents}
    problems = []
    for name in sorted(n for n in names if n.endswith(".md")):
        text = files[name].decode("utf-8")
        for target in relative_links(text):
            path, dummy, anchor = target.partition("#")
            resolved = os.path.normpath(str(PurePosixPath(name).parent / path)) if path else name
            if resolved.startswith("../") or (resolved not in names and resolved not in dirs):
                problems.append(f"{name}: {target} (not in the tarball)")
            elif anchor and resolved.endswith(".md") and anchor not in github_anchors(files[resolved].decode()):
                problems.append(f"{name}: {target} (no heading #{anchor} in {resolved})")
    return problems


def test_link_check_finds_what_a_tarball_leaves_out():
    files = {
        "README.md": b"# T\n\n## Two words\n\n[ok](docs/a.md) [dir](roles/x) [here](#two-words) [web](https://h/x)\n"
                     b"[gone](docs/b.md) ![pic](docs/pics/p.png) [up](../outside.md) [bad](docs/a.md#nope)\n"
                     b"`[code](not/a/link.md)`\n\n```\n[block](no/link.md)\n```\n",
        "docs/a.md": b"# A\n\n[back](../README.md#two-words)\n",
        "roles/x/README.md": b"# X\n<img src=\"pic.png\">\n",
    }
    assert broken_links(files) == [
        "README.md: docs/b.md (not in the tarball)",
        "README.md: docs/pics/p.png (not in the tarball)",
        "README.md: ../outside.md (not in the tarball)",
        "README.md: docs/a.md#nope (no heading #nope in docs/a.md)",
        "roles/x/README.md: pic.png (not in the tarball)",
    ]


def test_markdown_in_the_tarball_has_no_broken_relative_links(tarball):
    assert "docs/benchmarks.md" in tarball and "README.md" in tarball
    assert broken_links(tarball) == []


def test_tarball_has_the_license_the_role_readmes_and_real_project_urls(tarball):
    license_text = tarball["LICENSE"].decode()
    assert "GNU GENERAL PUBLIC LICENSE" in license_text and "Version 3, 29 June 2007" in license_text
    assert GALAXY["license"] == ["GPL-3.0-or-later"]
    for role in ROLES:
        assert f"roles/{role}/README.md" in tarball
    for key in ("repository", "documentation", "homepage", "issues"):
        url = GALAXY.get(key) or ""
        assert url.startswith("https://"), f"galaxy.yml {key}: {url!r}"
        assert ".invalid" not in url and "example" not in url, f"galaxy.yml {key} is a placeholder: {url}"


# --- dependencies --------------------------------------------------------------------------

FQCN_NAME = re.compile(r"^([a-z0-9_]+\.[a-z0-9_]+)\.[a-z0-9_]+$")
PLAY_TASK_LISTS = ("pre_tasks", "tasks", "post_tasks", "handlers")


def _task_collections(tasks):
    """Collections of the modules, action plugins and roles that a list of tasks calls."""
    used = set()
    for task in tasks or []:
        if not isinstance(task, dict):
            continue
        for key, value in task.items():
            if key in ("block", "rescue", "always"):
                used |= _task_collections(value)
            elif FQCN_NAME.match(key):
                used.add(FQCN_NAME.match(key).group(1))
                if key.endswith(("include_role", "import_role")) and FQCN_NAME.match(str(value.get("name", ""))):
                    used.add(FQCN_NAME.match(value["name"]).group(1))
    return used


def used_collections():
    used = set()
    for path in (REPO / "roles").glob("*/*/*.yml"):
        if path.parent.name in ("tasks", "handlers"):
            used |= _task_collections(yaml.safe_load(path.read_text(encoding="utf-8")))
    for path in (REPO / "playbooks").rglob("*.yml"):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        plays = [p for p in data or [] if isinstance(p, dict)]
        if plays and any("hosts" in p or "import_playbook" in p for p in plays):
            for play in plays:
                for key in PLAY_TASK_LISTS:
                    used |= _task_collections(play.get(key))
                for role in play.get("roles", []):
                    name = role if isinstance(role, str) else role.get("role", role.get("name", ""))
                    if FQCN_NAME.match(name):
                        used.add(FQCN_NAME.match(name).group(1))
        else:
            used |= _task_collections(plays)  # a tasks file under playbooks/
    for path in (REPO / "plugins").rglob("*.py"):
        used |= set(re.findall(r"ansible_collections\.([a-z0-9_]+\.[a-z0-9_]+)\.", path.read_text(encoding="utf-8")))
    return used - {"ansible.builtin", FQCN}


def test_dependencies_are_what_the_content_uses():
    required = yaml.safe_load((REPO / "requirements.yml").read_text(encoding="utf-8"))["collections"]
    from_requirements = {c["name"]: c.get("version", "*") for c in required}
    assert from_requirements == GALAXY["dependencies"], "requirements.yml and galaxy.yml dependencies differ"
    assert used_collections() == set(GALAXY["dependencies"])


def test_ee_python_requirements_are_lower_bounds():
    for line in (REPO / "meta" / "ee-requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            operators = {spec.operator for spec in Requirement(line).specifier}
            assert operators == {">="}, f"meta/ee-requirements.txt: {line} (use a lower bound, >=)"


# --- release notes -------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_every_role_entry_point_has_version_added(role):
    for entry_point, spec in specs(role).items():
        assert spec.get("version_added"), f"{role}:{entry_point} has no version_added (a release would not list it)"


NOT_FOR_USERS = re.compile(r"^(benchmarks?|tests?|lab|ci)\b", re.I)


def test_changelog_fragments_keep_benchmarks_tests_and_the_lab_trivial():
    problems = []
    for path in sorted((REPO / "changelogs" / "fragments").glob("*.y*ml")):
        fragment = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for section, entries in fragment.items():
            if section in ("trivial", "release_summary"):
                continue
            for entry in entries:
                if NOT_FOR_USERS.match(entry):
                    problems.append(f"{path.name}: {section}: {entry[:60]}")
    assert not problems, "entries users do not see belong under trivial:\n" + "\n".join(problems)
