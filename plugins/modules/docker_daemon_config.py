#!/usr/bin/python
# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: docker_daemon_config
short_description: Merge settings into Docker's daemon.json (or another Docker JSON config file)
version_added: 0.1.0
description:
  - Merges O(settings) into a JSON configuration file of Docker, by default
    C(/etc/docker/daemon.json), keeping every key already there that O(settings) does not name.
    Objects merge recursively (a new entry under C(runtimes) keeps the other runtimes); other
    values are replaced.
  - Refuses to touch a file that is not a JSON object, so a user's broken file is never lost.
  - Reports C(changed) only when the content (or file attributes) differ, so a handler that
    restarts the engine runs only on a real change.
  - Also fits the client's C(~/.docker/config.json) (registry C(auths)); use C(no_log) on such a task.
author:
  - edgeai.fleet contributors (@edgeai)
options:
  path:
    description: The JSON file. Created (with its directory) when missing.
    type: path
    default: /etc/docker/daemon.json
  settings:
    description: Keys to merge in.
    type: dict
    default: {}
  remove_keys:
    description:
      - Keys to remove after merging; a dotted key (C(runtimes.nvidia)) removes a nested one.
    type: list
    elements: str
    default: []
  backup:
    description: Keep a timestamped copy of the previous file when it changes.
    type: bool
    default: false
extends_documentation_fragment:
  - ansible.builtin.files
  - edgeai.fleet._attributes
attributes:
  check_mode:
    support: full
    details: Reports what would change and writes nothing.
  diff_mode:
    support: full
    details: The diff shows the whole file before and after, keys sorted.
  idempotent:
    support: full
    details:
      - The file is written only when the merged content differs, and its file attributes (owner,
        group, mode, SELinux context) are set only when they differ, so a second run reports no change.
"""

EXAMPLES = r"""
- name: Register the nvidia runtime and make it the default
  edgeai.fleet.docker_daemon_config:
    settings:
      runtimes:
        nvidia:
          path: nvidia-container-runtime
          args: []
      default-runtime: nvidia
  notify: Restart docker

- name: Store registry credentials for root's docker client
  edgeai.fleet.docker_daemon_config:
    path: /root/.docker/config.json
    mode: "0600"
    settings:
      auths:
        registry.example.com:5443:
          auth: "{{ (user ~ ':' ~ password) | b64encode }}"
  no_log: true
"""

RETURN = r"""
path:
  description: The file.
  returned: always
  type: str
  sample: /etc/docker/daemon.json
config:
  description: The configuration after the merge.
  returned: always
  type: dict
  sample: {"default-runtime": "nvidia", "log-driver": "json-file"}
backup_file:
  description: Path of the backup, when O(backup=true) and the file changed.
  returned: changed and backup
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.edgeai.fleet.plugins.module_utils._docker_daemon_config import run_module


def main():
    run_module(AnsibleModule)


if __name__ == "__main__":
    main()
