#!/usr/bin/python
# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

# The rollout engine is an action plugin (plugins/action/rollout.py): its controller steps run
# on the controller, its device steps run the device modules. This file holds its documentation.

DOCUMENTATION = r"""
---
module: rollout
short_description: The steps of a staged model rollout (the engine of deploy_model.yml)
version_added: 0.1.0
description:
  - The engine behind C(playbooks/deploy_model.yml), C(playbooks/rollback.yml) and the role
    P(edgeai.fleet.model_deploy#role). Each task runs one O(step); the decisions (defaults,
    the release's schema, which artifact a device takes, the waves, the failure budget, the
    report) are plain Python in the collection's plugin_utils, with unit tests.
  - Controller steps (run on C(localhost)) C(start), C(targets), C(plan), C(verdict) and
    C(report) read and set facts of C(localhost) (C(edgeai_rollout), C(edgeai_plan),
    C(edgeai_abort), C(edgeai_report)) and never touch a device.
  - Device steps cost one module call for C(preflight) (M(edgeai.fleet.inference_server_info)
    with the device's facts and its staged versions), at most two for C(deploy)
    (M(edgeai.fleet.model_artifact) unless the version is staged, then M(edgeai.fleet.inference_model),
    which activates, runs the smoke test, soaks a canary, rolls back on failure and posts the events),
    one for C(stage) and for C(rollback). An artifact pushed from the controller goes to Ansible's
    temporary folder on the device, which is removed afterwards.
  - A device step never fails the host; what happened (including an error on the controller) is the
    device's C(model_deploy_result), so a rollout always reaches its report.
author:
  - edgeai.fleet contributors (@edgeai)
extends_documentation_fragment:
  - edgeai.fleet._inference_server
  - edgeai.fleet._attributes
  - edgeai.fleet._attributes.action
options:
  step:
    description:
      - C(start) checks O(release) and O(options) on the controller and sets C(edgeai_rollout).
      - C(targets) checks that the release covers every device of O(targets) (an artifact and a smoke
        test for each one's platform or groups) before any device is touched.
      - C(preflight) reads the device and its server, and sets C(model_deploy_device) (its status
        C(ready), C(unchanged), C(incompatible) or C(preflight_failed), the served version, the
        staged versions, and the artifact, config and smoke test it takes).
      - C(plan) cuts the ready devices into a canary wave and per-site waves (C(edgeai_plan)); in the stage
        phase, one wave of every ready device.
      - C(deploy), C(stage), C(rollback) do a device's work and set C(model_deploy_result); C(wave) is the
        one the run (O(rollout)) calls for - C(deploy) with the canary's soak in the canary wave, C(stage) in
        the stage phase, C(rollback) for a rollback run and, after an abort, for each device on its list.
      - C(verdict) decides after wave O(wave) whether the rollout goes on (C(edgeai_abort)); C(edgeai_tally)
        keeps the results it has read, so each verdict reads only the devices it has none for yet.
      - C(report) writes the JSON report and sets C(edgeai_report).
      - C(failed) records, in the rescue of a device play, a task of the device that failed on the
        controller (O(error)) during O(during).
    type: str
    required: true
    choices: [start, targets, preflight, plan, wave, deploy, stage, verdict, rollback, report, failed]
  release:
    description:
      - The release for O(step=start); see C(playbooks/examples/release.yml). Defaults to the variable
        C(edgeai_release), read as given, so that a part naming a device's own variables (an artifact URL
        under each site's store) is rendered for each device in its preflight.
    type: dict
  options:
    description:
      - For O(step=start), the rollout's options as set by the user, without the C(edgeai_) prefix
        (C(phase), C(max_unavailable_per_site), C(failure_budget_percent), C(failure_budget_min_executed),
        C(on_abort), C(canary_soak_seconds), C(canary_ring), C(download_rate_limit),
        C(allow_no_smoke_test), C(report_dir), C(action)). Unset or empty ones take their defaults.
    type: dict
  targets:
    description: For O(step=targets), every targeted device (C(ansible_play_hosts_all)).
    type: list
    elements: str
  rollout:
    description: The run (C(edgeai_rollout) of C(localhost)); read from C(hostvars) when not given.
    type: dict
  device:
    description:
      - For the device steps, the device's preflight record (its C(model_deploy_device)); read from
        its facts when not given.
    type: dict
  settings:
    description:
      - For the device steps, the device's settings, from the role P(edgeai.fleet.model_deploy#role)'s
        variables (artifacts_dir, repository, device_root, server_wait, keep_versions,
        min_free_space_mb, rate_limit, require_staged, load_timeout, registry and artifact
        credentials and CA, relay_url, relay_token_file, emit_events, run_id, site cache).
    type: dict
  wave:
    description: For O(step=verdict), the wave that just finished (0 is the canary).
    type: int
  name:
    description:
      - The model, when the role is used on its own (outside C(deploy_model.yml)); with it, O(version),
        O(artifact), O(config) and O(smoke_test) make the release. With a run (O(rollout)) the five are
        ignored, as the run's release decides.
    type: str
  version:
    description: The version to serve, with O(name).
    type: int
  artifact:
    description: The artifact (or one per platform or group), with O(name).
    type: dict
  config:
    description: The model configuration (or one per platform or group), with O(name).
    type: dict
  smoke_test:
    description: The smoke test (or one per platform or group), with O(name).
    type: dict
  soak_seconds:
    description:
      - For O(step=deploy), how long the new version must stay healthy (a canary's soak). O(step=wave) takes
        it from the run and the plan.
    type: int
  reason:
    description: For O(step=rollback), why (it goes into the C(rolled_back) event).
    type: str
  from_version:
    description: For O(step=rollback), go back only from this version (see M(edgeai.fleet.inference_model)).
    type: int
  error:
    description: For O(step=failed), what failed (C(ansible_failed_result.msg)).
    type: str
  during:
    description: For O(step=failed), the play it failed in.
    type: str
    choices: [preflight, wave, rollback]
    default: wave
attributes:
  action:
    details: The engine runs on the controller and calls the device modules itself.
  async:
    details: The steps run in the task, never in the background.
  bypass_host_loop:
    details: Each host runs its own step; controller steps run on C(localhost).
  check_mode:
    support: full
    details:
      - Device steps run the device modules in check mode and report C(would_update) or C(would_stage);
        an artifact pushed from the controller is not pushed. The report is written in check mode too.
  diff_mode:
    support: none
    details: The report says what changed or would change.
  idempotent:
    support: full
    details: A device that already serves the release costs its preflight and is reported C(unchanged).
  platform:
    details: The device steps run on POSIX devices.
notes:
  - Use it through C(playbooks/deploy_model.yml) or the role P(edgeai.fleet.model_deploy#role); its steps
    depend on each other's facts.
seealso:
  - module: edgeai.fleet.inference_model
  - module: edgeai.fleet.model_artifact
  - module: edgeai.fleet.inference_server_info
"""

EXAMPLES = r"""
- name: Check a release before anything else
  edgeai.fleet.rollout:
    step: start
    release: "{{ edgeai_release }}"
    options:
      canary_soak_seconds: 60
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
ansible_facts:
  description: The facts the step sets (see O(step)).
  returned: always
  type: dict
report:
  description: For O(step=report), the report as text lines (a table, a summary, the file).
  returned: when step is report
  type: list
  elements: str
"""
