# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
#
# Controller-side rollout arithmetic, kept free of Ansible so it is easy to test: how a
# fleet is cut into a canary wave and per-site waves, and when the failure budget is spent.

from __future__ import annotations

import math
import re

DEFAULT_RING_ORDER = ("canary", "early", "broad")


class RolloutPlanError(ValueError):
    """A rollout cannot be planned from the given input."""


def parse_limit(value, total):
    """Turn a limit given as a count (3, "3") or a percentage ("25%") of ``total`` into a count.

    A percentage is rounded up and never gives less than one device, so a small site still
    moves forward.
    """
    if isinstance(value, bool):
        raise RolloutPlanError(f"limit must be a count or a percentage such as '25%', got {value!r}")
    if isinstance(value, int):
        count = value
    else:
        text = str(value).strip()
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*%", text)
        if match:
            percent = float(match.group(1))
            if not 0 < percent <= 100:
                raise RolloutPlanError(f"percentage must be in (0, 100], got {value!r}")
            return max(1, math.ceil(total * percent / 100.0))
        if not text.isdigit():
            raise RolloutPlanError(f"limit must be a count or a percentage such as '25%', got {value!r}")
        count = int(text)
    if count < 1:
        raise RolloutPlanError(f"limit must be at least 1, got {value!r}")
    return count


def _sort_key(device):
    order = device.get("order")
    return (order if isinstance(order, int) else math.inf, str(device["host"]))


def plan_waves(devices, max_unavailable_per_site=1, canary_ring="canary"):
    """Cut ``devices`` into waves.

    ``devices`` is a list of dicts with ``host``, ``site``, optionally ``ring`` and ``order``
    (the inventory's rollout order). The first wave is the canary: every device of the canary
    ring or, where no device has that ring, the first device of each site. Every later wave
    takes at most ``max_unavailable_per_site`` devices (a count or a percentage of the site's
    devices) from each site, so sites move forward together and no site ever has more than
    that many devices updating at once. Returns a list of waves, each a list of host names.
    """
    seen = set()
    for device in devices:
        if "host" not in device or "site" not in device:
            raise RolloutPlanError(f"each device needs 'host' and 'site', got {device!r}")
        if device["host"] in seen:
            raise RolloutPlanError(f"device {device['host']!r} is listed twice")
        seen.add(device["host"])

    by_site = {}
    for device in sorted(devices, key=_sort_key):
        by_site.setdefault(str(device["site"]), []).append(device)

    canary = [d for d in devices if d.get("ring") == canary_ring]
    if not canary:
        canary = [site_devices[0] for site_devices in by_site.values()]
    canary_hosts = {d["host"] for d in canary}

    waves = []
    if canary:
        waves.append([d["host"] for d in sorted(canary, key=_sort_key)])

    limits = {site: parse_limit(max_unavailable_per_site, len(members)) for site, members in by_site.items()}
    queues = {site: [d for d in members if d["host"] not in canary_hosts] for site, members in by_site.items()}
    # Within a wave, a later ring never goes before an earlier one of the same site.
    for queue in queues.values():
        queue.sort(key=lambda d: (_ring_rank(d.get("ring")), _sort_key(d)))

    while any(queues.values()):
        wave = []
        for site in sorted(queues):
            take, queues[site] = queues[site][: limits[site]], queues[site][limits[site]:]
            wave.extend(d["host"] for d in take)
        waves.append(wave)
    return waves


def _ring_rank(ring):
    if ring in DEFAULT_RING_ORDER:
        return (DEFAULT_RING_ORDER.index(ring), "")
    return (len(DEFAULT_RING_ORDER), str(ring or ""))


def budget_exceeded(failed, executed, percent, min_executed=1):
    """Return True once the global failure budget is spent.

    Like Greengrass's abort criteria: the rollout aborts when at least ``min_executed``
    devices have finished (succeeded or failed) and ``failed`` is at least ``percent`` per
    cent of them. Unreachable devices count as failed.
    """
    if failed < 0 or executed < 0 or failed > executed:
        raise RolloutPlanError(f"inconsistent counts: failed={failed}, executed={executed}")
    if not 0 <= float(percent) <= 100:
        raise RolloutPlanError(f"failure budget percent must be in [0, 100], got {percent!r}")
    if executed == 0 or executed < int(min_executed):
        return False
    return failed * 100.0 >= float(percent) * executed and failed > 0


REPORT_COLUMNS = ("device", "site", "platform", "wave", "before", "after", "result", "stage_s", "activate_s")


def report_table(rows):
    """Render per-device report rows (dicts) as a fixed-width text table, one line a device.

    Missing fields show as ``-``. Rows are sorted by site, then device, so a reader scans a
    site at a time.
    """
    def cell(row, column):
        value = row.get(column)
        if value is None or value == "":
            return "-"
        if isinstance(value, float):
            return f"{value:.1f}"
        return str(value)

    ordered = sorted(rows, key=lambda r: (str(r.get("site", "")), str(r.get("device", ""))))
    cells = [[cell(row, c) for c in REPORT_COLUMNS] for row in ordered]
    widths = [max([len(c)] + [len(line[i]) for line in cells]) for i, c in enumerate(REPORT_COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(REPORT_COLUMNS, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in cells)
    return lines


def report_summary(rows):
    """Count report rows by result."""
    summary = {}
    for row in rows:
        result = str(row.get("result") or "unknown")
        summary[result] = summary.get(result, 0) + 1
    return dict(sorted(summary.items()))


def inference_failures(server_info, model):
    """Failed inferences of ``model`` summed over its versions, from inference_server_info's result.

    A server without the statistics extension reports none, which counts as zero.
    """
    stats = (server_info or {}).get("stats") or {}
    total = 0
    for version in stats.get(model) or []:
        total += int((version or {}).get("failure_count") or 0)
    return total
