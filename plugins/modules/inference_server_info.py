#!/usr/bin/python
# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: inference_server_info
short_description: Health, metadata, model index and statistics of an inference server
version_added: 0.1.0
description:
  - Reads what a KServe v2 inference server (Triton, the project's LiteRT server) says about
    itself, for reports and rollout gates. Changes nothing.
  - Per-model statistics come from Triton's statistics extension (C(GET /v2/models/<m>/stats));
    servers without it give C(null) statistics and RV(stats_supported=false), not a failure.
author:
  - edgeai.fleet contributors (@edgeai)
extends_documentation_fragment:
  - edgeai.fleet._inference_server
  - edgeai.fleet._attributes
  - edgeai.fleet._attributes.info_module
options:
  gather:
    description:
      - What to read. C(device) adds what M(edgeai.fleet.device_facts) detects (RV(device)) and the
        backends the role P(edgeai.fleet.inference_server#role) recorded for the running server (RV(backends));
        C(staged) adds the versions of O(models) staged on the device (RV(staged)). With both, one call
        is a rollout's whole preflight of a device.
    type: list
    elements: str
    choices: [health, metadata, index, stats, device, staged]
    default: [health, metadata, index, stats]
  models:
    description:
      - Models to read statistics of (defaults to every READY model in the index) and whose staged
        versions to list.
    type: list
    elements: str
  wait:
    description:
      - Seconds to wait for the server to be live (and ready, when C(health) is gathered) before
        answering. A device that just came back from a power cut may still be starting its server.
    type: float
    default: 0
    version_added: 0.1.0
  root:
    description:
      - Filesystem root for C(device), as O(edgeai.fleet.device_facts#module:root).
    type: path
    default: /
    version_added: 0.1.0
  artifacts:
    description:
      - Where staged versions are kept, as O(edgeai.fleet.model_artifact#module:dest).
    type: path
    default: /var/lib/edgeai/artifacts
    version_added: 0.1.0
  fail_unreachable:
    description: Fail when the server is not live. When false, RV(live=false) is returned.
    type: bool
    default: false
notes:
  - Runs on the device; needs only Python's standard library.
seealso:
  - module: edgeai.fleet.inference_model
"""

EXAMPLES = r"""
- name: Read the server's state
  edgeai.fleet.inference_server_info:
    url: http://127.0.0.1:8000
  register: server

- name: Gate on the model being served
  ansible.builtin.assert:
    that:
      - server.ready
      - "'detector' in server.ready_models"
"""

RETURN = r"""
url:
  description: The server asked.
  returned: always
  type: str
live:
  description: Whether C(/v2/health/live) answered 200.
  returned: always
  type: bool
ready:
  description: Whether C(/v2/health/ready) answered 200.
  returned: when health is gathered
  type: bool
server:
  description: Server metadata (C(name), C(version), C(extensions)).
  returned: when metadata is gathered and the server is live
  type: dict
  sample: {name: triton, version: 2.51.0, extensions: [model_repository, statistics]}
models:
  description: The repository index, one entry per model version (C(name), C(version), C(state), C(reason)).
  returned: when index is gathered
  type: list
  elements: dict
ready_models:
  description: Names of the models with a READY version.
  returned: when index is gathered and the server is live
  type: list
  elements: str
stats:
  description:
    - Per model, a list per version with C(inference_count), C(execution_count), C(success_count),
      C(failure_count), C(mean_latency_ms), C(last_inference_ms) and the server's C(raw) entry;
      null where the server has no statistics.
  returned: when stats are gathered
  type: dict
device:
  description: What M(edgeai.fleet.device_facts) returns as C(ansible_facts.edge_device).
  returned: when device is gathered
  type: dict
backends:
  description:
    - The backends of the running server's image, as the role P(edgeai.fleet.inference_server#role) recorded
      them in C(/etc/edgeai/inference-server.json); null when the device has no such record.
  returned: when device is gathered
  type: list
  elements: str
staged:
  description: Per model of O(models), the versions staged on the device (complete ones, with their manifest).
  returned: when staged is gathered
  type: dict
  sample: {detector: [3, 4]}
stats_supported:
  description: Whether the server answered every statistics request (null when no model was asked about).
  returned: when stats are gathered and the server is live
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.edgeai.fleet.plugins.module_utils._server_info import run_module


def main():
    run_module(AnsibleModule)


if __name__ == "__main__":
    main()
