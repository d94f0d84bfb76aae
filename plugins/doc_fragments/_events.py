# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.

from __future__ import annotations


class ModuleDocFragment:
    # The events option of the modules that change what a device serves. The argument spec
    # lives once in plugins/module_utils/_events.py (EVENTS_ARGS).
    DOCUMENTATION = r"""
options:
  events:
    description:
      - Hand this deployment's events to the device's event relay (role P(edgeai.fleet.webhook#role)),
        which signs them, queues them on disk and delivers them in order. Unset, no event is sent.
      - An event the relay does not take is listed in RV(events_undelivered); it never fails the module.
    type: dict
    version_added: 0.1.0
    suboptions:
      url:
        description: The relay's local API, on the device's loopback.
        type: str
        default: http://127.0.0.1:8780
      token_file:
        description: File on the device holding the relay's local API token, sent as a bearer token.
        type: path
      id_prefix:
        description: Event ids are C(<id_prefix>.<type>), so a retried event is recognised as the same one.
        type: str
        required: true
      run_id:
        description: The rollout run, in every event's C(data.run_id).
        type: str
        required: true
      source:
        description: The events' C(source).
        type: str
        default: ansible
      timeout:
        description: Seconds to wait for the relay to answer.
        type: float
        default: 10.0
"""
