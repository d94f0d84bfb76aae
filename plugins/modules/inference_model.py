#!/usr/bin/python
# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: inference_model
short_description: Make a staged model version the one a running inference server serves
version_added: 0.1.0
description:
  - Works with any server that speaks the KServe v2 / Open Inference Protocol with Triton's model
    repository extension and explicit model control (Triton Inference Server, the project's
    LiteRT server).
  - With O(state=present), places the version staged by M(edgeai.fleet.model_artifact) into the
    server's model repository on the device (the model folder then holds that version alone,
    plus C(config.pbtxt)), asks the server to load the model, waits until the version is READY,
    runs a smoke test, and only then reports success.
  - The configuration is generated from O(config), or taken from the artifact's C(config.pbtxt),
    or kept from the repository; it is parsed and validated before it is placed.
  - The server loads the new version before it unloads the old one, so a swap never makes a
    request fail and the container is never restarted.
  - On any failure (load refused, not READY within O(load_timeout), smoke test failed) the
    previous version and configuration are put back and reloaded, the module checks that they
    serve, and fails with the reason and RV(rolled_back=true).
  - O(state=rolled_back) goes back to the version that was active before the current one (it
    must still be staged); O(state=absent) unloads the model and removes its folder.
  - With O(soak), a new version must also stay healthy for a while before it counts (a canary's
    second gate); with O(events), the module hands C(deploy_started), C(deploy_succeeded),
    C(deploy_failed) and C(rolled_back) to the device's event relay itself.
author:
  - edgeai.fleet contributors (@edgeai)
extends_documentation_fragment:
  - edgeai.fleet._inference_server
  - edgeai.fleet._events
  - edgeai.fleet._attributes
options:
  name:
    description: Model name.
    type: str
    required: true
  version:
    description: Version to make active. Required with O(state=present).
    type: int
  state:
    description:
      - C(present) serves O(version); C(absent) unloads the model and removes it from the
        repository; C(rolled_back) goes back one version.
    type: str
    choices: [present, absent, rolled_back]
    default: present
  repository:
    description: The server's model repository on the device (a host folder mounted into the server's container).
    type: path
    default: /var/lib/edgeai/models
  artifacts:
    description:
      - Where M(edgeai.fleet.model_artifact) staged the versions (its O(edgeai.fleet.model_artifact#module:dest)).
    type: path
    default: /var/lib/edgeai/artifacts
  state_dir:
    description: Where the module records the active and previous versions and keeps the snapshot it restores from.
    type: path
    default: /var/lib/edgeai/inference_model
  config:
    description:
      - The model configuration as a dict in the JSON form of Triton's ModelConfig
        (C(backend) or C(platform), C(max_batch_size), C(input), C(output) ...). Rendered as
        C(config.pbtxt) in the form Triton reads. Strings are quoted, values of enum fields (C(data_type),
        C(format), C(kind), C(priority), C(timeout_action)) are written bare (C(TYPE_FP32), C(KIND_CPU)),
        and maps (C(parameters), C(cc_model_filenames), C(metric_tags) ...), given as dicts from
        keys to values, are written as key/value entries.
      - C(name) defaults to O(name) and C(version_policy) to the latest one version.
    type: dict
  smoke_test:
    description:
      - The inference that must succeed before a version counts as deployed. Without O(smoke_test.inputs),
        inputs of zeros are made from the model's metadata and any successful answer passes.
    type: dict
    default: {}
    suboptions:
      enabled:
        description: Run the smoke test.
        type: bool
        default: true
      inputs:
        description: KServe v2 JSON input tensors (C(name), C(datatype), C(shape), C(data)).
        type: list
        elements: dict
      expected_outputs:
        description:
          - Outputs to compare (C(name), C(data), optional C(shape) and per-output C(tolerance)).
            Numbers match when C(|actual - expected| <= tolerance + relative_tolerance * |expected|).
        type: list
        elements: dict
      tolerance:
        description: Absolute tolerance for numeric outputs.
        type: float
        default: 1.0e-05
      relative_tolerance:
        description: Relative tolerance for numeric outputs.
        type: float
        default: 0.0
      requests:
        description: Number of inferences to run; RV(smoke_latency_ms) is their mean.
        type: int
        default: 1
      from_artifact:
        description:
          - Read the inputs and expected outputs from C(smoke_test.json) in the staged version (the
            release builder, C(edgeai.fleet.release_build), computes them by running the model on the
            controller). Without it, that file is still used when no O(smoke_test.inputs) are given.
          - Going back to a version (a rollback) always uses that version's own C(smoke_test.json)
            when it has one; otherwise its answer is not compared, since the release's expected outputs
            belong to the new version.
        type: bool
        default: false
        version_added: 0.1.0
  soak:
    description:
      - After the smoke test, watch the new version for O(soak.seconds) before it counts; the server must
        stay ready, the version READY, and the model's failed-inference count (Triton's statistics
        extension, where the server has it) must not grow. A version that fails is rolled back as after
        a failed smoke test.
    type: dict
    version_added: 0.1.0
    suboptions:
      seconds:
        description: How long to watch; 0 skips the soak.
        type: int
        default: 0
      interval:
        description: Seconds between checks (at most O(soak.seconds)).
        type: float
        default: 5.0
  from_version:
    description:
      - With O(state=rolled_back), go back only when the active version is this one; any other active
        version is left alone (the result has C(changed=false)). A rollout uses it after an abort, so a
        device whose switch never happened is not moved further back.
    type: int
    version_added: 0.1.0
  reason:
    description: Why a rollback happens, for the C(rolled_back) event.
    type: str
    version_added: 0.1.0
  load_timeout:
    description: Seconds the load request and the wait for READY may take together.
    type: float
    default: 300.0
  poll_interval:
    description: Seconds between readiness checks.
    type: float
    default: 1.0
attributes:
  check_mode:
    support: full
    details: Reports whether the repository or the server would change; changes nothing.
  diff_mode:
    support: full
    details: Shows the versions in the repository and the served version before and after.
  idempotent:
    support: partial
    details:
      - With O(state=present), a version already in place and READY is left alone (no reload, no smoke
        test); with O(state=absent), a model that is neither in the repository nor loaded is left alone.
      - With O(state=rolled_back), each run goes back one more version unless O(from_version) names the
        version to go back from (a device no longer at that version is left alone).
notes:
  - Runs on the device; needs only Python's standard library.
  - A version's C(smoke_test.json) is never copied into the server's repository.
  - The server must run with explicit model control (Triton C(--model-control-mode=explicit)).
  - With Triton, a model whose folder holds one version is served by any version policy; the
    module keeps one version folder per model, older versions stay staged by M(edgeai.fleet.model_artifact).
seealso:
  - module: edgeai.fleet.model_artifact
  - module: edgeai.fleet.inference_server_info
"""

EXAMPLES = r"""
- name: Serve version 3 of the detector, gated by a known answer
  edgeai.fleet.inference_model:
    name: detector
    version: 3
    url: http://127.0.0.1:8000
    smoke_test:
      inputs:
        - {name: INPUT0, datatype: FP32, shape: [3], data: [1, 2, 3]}
      expected_outputs:
        - {name: OUTPUT0, data: [3, 6, 9]}
      tolerance: 0.001

- name: Serve a model whose configuration is given here
  edgeai.fleet.inference_model:
    name: scale
    version: 2
    config:
      backend: python
      max_batch_size: 0
      input: [{name: INPUT0, data_type: TYPE_FP32, dims: [-1]}]
      output: [{name: OUTPUT0, data_type: TYPE_FP32, dims: [-1]}]

- name: Serve version 4 as a canary, with the smoke test the release builder stored in it
  edgeai.fleet.inference_model:
    name: detector
    version: 4
    smoke_test:
      from_artifact: true
    soak:
      seconds: 30
    events:
      id_prefix: 20261201T120000Z.farm-north-orin-01
      run_id: 20261201T120000Z

- name: Go back one version
  edgeai.fleet.inference_model:
    name: detector
    state: rolled_back

- name: Remove the model
  edgeai.fleet.inference_model:
    name: detector
    state: absent
"""

RETURN = r"""
name:
  description: The model.
  returned: always
  type: str
active_version:
  description: The version the server serves after the run (null when none).
  returned: always
  type: int
  sample: 3
previous_version:
  description:
    - The version that was active before it (null when none).
    - After a failed deployment that was rolled back, the version that failed.
  returned: when state is present or rolled_back
  type: int
  sample: 2
failed_version:
  description: The version whose deployment failed.
  returned: failure
  type: int
rolled_back:
  description: Whether a failure made the module restore the previous version (which then serves).
  returned: always
  type: bool
reason:
  description: Why the deployment failed.
  returned: failure
  type: str
load_time_s:
  description: Seconds from the load request until the version was READY.
  returned: when the model was (re)loaded
  type: float
  sample: 1.42
smoke_latency_ms:
  description: Mean latency of the smoke-test inferences (null when disabled).
  returned: when the model was (re)loaded
  type: float
  sample: 3.1
config_source:
  description: Where the configuration came from, C(dict), C(artifact), C(saved) or C(repository).
  returned: when state is present or rolled_back
  type: str
soak:
  description: How long the new version was watched (C(seconds)) and how many checks it passed (C(checks)).
  returned: when O(soak.seconds) is positive and the version passed
  type: dict
events_undelivered:
  description: Types of the events the relay did not take (empty when all were taken or O(events) is not set).
  returned: always
  type: list
  elements: str
events_errors:
  description: Why the relay did not take them (its answer, an unreadable token file).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.edgeai.fleet.plugins.module_utils._inference_model import run_module


def main():
    run_module(AnsibleModule)


if __name__ == "__main__":
    main()
