# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
"""The attributes every module of the collection declares, described once.

Every module extends ``edgeai.fleet._attributes`` (what check_mode, diff_mode, idempotent and
platform mean, and the platform: POSIX). The module's own DOCUMENTATION then gives each
attribute's ``support`` and, where it has something specific to say, ``details``; or it also
extends one of the fragments below, which give the support of modules of one kind. A key the
module gives itself wins over the fragments' (Ansible merges each attribute's keys).
"""

from __future__ import annotations


class ModuleDocFragment:
    # Every module: the descriptions, and the platform.
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check mode and return a prediction of C(changed) without changing the target.
  diff_mode:
    description: Returns details on what changed (or would change in check mode) when run in diff mode.
  idempotent:
    description:
      - When run twice in a row outside check mode with the same arguments, the second run reports no change.
      - This assumes that what the module manages or queries did not change in between in a relevant way.
  platform:
    description: Target operating systems or families the module works on.
    support: full
    platforms: posix
"""

    # Modules that only read (information modules). Extend together with the standard fragment.
    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details:
      - The module changes nothing; it runs the same in check mode.
  diff_mode:
    support: N/A
    details:
      - The module changes nothing.
  idempotent:
    support: full
    details:
      - The module changes nothing.
"""

    # Modules that set facts. Extend together with the standard and the INFO_MODULE fragments.
    FACTS = r"""
options: {}
attributes:
  facts:
    description: Returns an C(ansible_facts) dictionary that updates the host's facts.
    support: full
"""

    # Modules run by an action plugin on the controller (rollout, release_build). Extend
    # together with the standard fragment.
    ACTION = r"""
options: {}
attributes:
  action:
    description: Has a corresponding action plugin, so some or all of the work runs on the controller.
    support: full
  async:
    description: Can be used with the C(async) keyword.
    support: none
  bypass_host_loop:
    description: Runs once for all hosts of the play instead of once per host.
    support: none
"""
