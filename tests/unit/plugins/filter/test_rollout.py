from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.edgeai.fleet.plugins.filter.rollout import rollout_budget_exceeded, rollout_waves
from ansible_collections.edgeai.fleet.plugins.plugin_utils._rollout import parse_limit


def fleet(per_site, sites=("a", "b", "c"), canary=()):
    return [
        {"host": f"{s}{i}", "site": s, "order": i, "ring": "canary" if f"{s}{i}" in canary else "broad"}
        for s in sites
        for i in range(per_site)
    ]


def site_of(host):
    return host[0]


def test_canary_ring_goes_first_then_sites_move_together():
    waves = rollout_waves(fleet(3, canary={"b1"}), max_unavailable_per_site=1)
    assert waves[0] == ["b1"]
    assert waves[1] == ["a0", "b0", "c0"]
    assert sorted(h for w in waves for h in w) == sorted(d["host"] for d in fleet(3))


def test_without_a_canary_ring_one_device_per_site_is_the_canary():
    waves = rollout_waves(fleet(2), max_unavailable_per_site=1)
    assert waves == [["a0", "b0", "c0"], ["a1", "b1", "c1"]]


@pytest.mark.parametrize("limit, per_site_max", [(1, 1), (2, 2), ("50%", 5), ("10%", 1)])
def test_no_site_ever_exceeds_its_limit(limit, per_site_max):
    devices = fleet(10) + [{"host": f"d{i}", "site": "d", "order": i} for i in range(3)]
    waves = rollout_waves(devices, max_unavailable_per_site=limit)
    for wave in waves[1:]:
        counts = {}
        for host in wave:
            counts[site_of(host)] = counts.get(site_of(host), 0) + 1
        assert max(counts.values()) <= per_site_max
        # the small site d is capped by its own size for percentages
        if isinstance(limit, str):
            assert counts.get("d", 0) <= parse_limit(limit, 3)
    assert len([h for w in waves for h in w]) == len(devices)


def test_each_device_once_and_order_respected_within_site():
    devices = fleet(4)
    waves = rollout_waves(devices, max_unavailable_per_site=1)
    flat = [h for w in waves for h in w]
    assert len(flat) == len(set(flat)) == 12
    for site in "abc":
        assert [h for h in flat if site_of(h) == site] == [f"{site}{i}" for i in range(4)]


def test_bad_input_is_named():
    with pytest.raises(AnsibleFilterError, match="percentage"):
        rollout_waves(fleet(1), max_unavailable_per_site="150%")
    with pytest.raises(AnsibleFilterError, match="at least 1"):
        rollout_waves(fleet(1), max_unavailable_per_site=0)
    with pytest.raises(AnsibleFilterError, match="listed twice"):
        rollout_waves(fleet(1) + fleet(1), max_unavailable_per_site=1)
    with pytest.raises(AnsibleFilterError, match="'host' and 'site'"):
        rollout_waves([{"host": "x"}])


@pytest.mark.parametrize(
    "failed, executed, percent, min_executed, expected",
    [
        (0, 10, 10, 1, False),
        (1, 10, 10, 1, True),
        (1, 11, 10, 1, False),
        (3, 4, 10, 5, False),  # not enough devices finished to judge
        (3, 5, 10, 5, True),
        (1, 1, 0, 1, True),  # a zero budget stops at the first failure
        (0, 0, 10, 1, False),
    ],
)
def test_failure_budget(failed, executed, percent, min_executed, expected):
    assert rollout_budget_exceeded(failed, executed, percent, min_executed) is expected


def test_failure_budget_rejects_inconsistent_counts():
    with pytest.raises(AnsibleFilterError, match="inconsistent"):
        rollout_budget_exceeded(3, 2, 10)


def test_report_table_is_aligned_sorted_and_shows_missing_values():
    from ansible_collections.edgeai.fleet.plugins.filter.rollout import rollout_report_summary, rollout_report_table

    rows = [
        {"device": "b-coral", "site": "b", "platform": "coral", "wave": 1, "before": "1", "after": "2",
         "result": "updated", "stage_s": 12.345, "activate_s": 2},
        {"device": "a-orin", "site": "a", "platform": "jetson", "wave": 0, "before": "1", "after": None,
         "result": "deferred"},
    ]
    lines = rollout_report_table(rows)
    assert lines[0].split() == ["device", "site", "platform", "wave", "before", "after", "result", "stage_s",
                                "activate_s"]
    assert lines[2].split() == ["a-orin", "a", "jetson", "0", "1", "-", "deferred", "-", "-"]
    assert lines[3].split() == ["b-coral", "b", "coral", "1", "1", "2", "updated", "12.3", "2"]
    assert lines[0].index("result") == lines[2].index("deferred") == lines[3].index("updated")
    assert rollout_report_summary(rows) == {"deferred": 1, "updated": 1}


def test_inference_failures_sums_versions_and_tolerates_missing_stats():
    from ansible_collections.edgeai.fleet.plugins.filter.rollout import inference_failures

    info = {"stats": {"m": [{"failure_count": 2}, {"failure_count": 3}], "other": [{"failure_count": 9}]}}
    assert inference_failures(info, "m") == 5
    assert inference_failures({"stats": None}, "m") == 0
    assert inference_failures({"stats": {"m": None}}, "m") == 0
