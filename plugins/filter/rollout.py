# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.edgeai.fleet.plugins.plugin_utils._rollout import (
    RolloutPlanError,
    budget_exceeded,
    inference_failures,
    plan_waves,
    report_summary,
    report_table,
)


def rollout_waves(devices, max_unavailable_per_site=1, canary_ring="canary"):
    try:
        return plan_waves(list(devices), max_unavailable_per_site, canary_ring)
    except RolloutPlanError as exc:
        raise AnsibleFilterError(f"rollout_waves: {exc}") from exc


def rollout_budget_exceeded(failed, executed, percent, min_executed=1):
    try:
        return budget_exceeded(int(failed), int(executed), percent, min_executed)
    except (RolloutPlanError, TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"rollout_budget_exceeded: {exc}") from exc


def rollout_report_table(rows):
    return report_table(list(rows))


def rollout_report_summary(rows):
    return report_summary(list(rows))


class FilterModule:
    def filters(self):
        return {
            "rollout_waves": rollout_waves,
            "rollout_budget_exceeded": rollout_budget_exceeded,
            "rollout_report_table": rollout_report_table,
            "rollout_report_summary": rollout_report_summary,
            "inference_failures": inference_failures,
        }
