# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollout's decisions (plugins/plugin_utils/_rollout.py), on plain data."""

from __future__ import annotations

import hashlib

import pytest
from ansible_collections.edgeai.fleet.plugins.plugin_utils import _rollout as r

SHA = "a" * 64


def options(**over):
    return r.normalise_options(over, "/reports")


def release(**over):
    base = {"model_name": "detector", "model_version": 3,
            "artifacts": {"jetson": {"url": "https://store/j.tgz", "sha256": SHA},
                          "coral": {"url": "https://store/c.tgz", "sha256": SHA}},
            "smoke_test": {"jetson": {"inputs": [{"name": "x"}]}, "coral": {"from_artifact": True}}}
    base.update(over)
    return r.validate_release(base)


# -- options -------------------------------------------------------------------------------
def test_every_option_has_its_default_in_one_place():
    opts = options()
    assert opts == {"action": "deploy", "phase": "all", "max_unavailable_per_site": 1, "failure_budget_percent": 10,
                    "failure_budget_min_executed": 1, "on_abort": "rollback", "canary_soak_seconds": 30,
                    "canary_ring": "canary", "download_rate_limit": 0, "allow_no_smoke_test": False,
                    "report_dir": "/reports"}


def test_empty_values_take_the_default_and_strings_are_converted():
    opts = options(canary_soak_seconds="", failure_budget_percent="25", download_rate_limit="1000",
                   allow_no_smoke_test="yes", report_dir="/tmp/r")
    assert (opts["canary_soak_seconds"], opts["failure_budget_percent"], opts["download_rate_limit"],
            opts["allow_no_smoke_test"], opts["report_dir"]) == (30, 25, 1000, True, "/tmp/r")


@pytest.mark.parametrize("over, message", [
    ({"phase": "later"}, "edgeai_phase must be all, stage or activate"),
    ({"action": "undo"}, "edgeai_action must be deploy or rollback"),
    ({"action": "rollback", "phase": "stage"}, "a rollback has no phases"),
    ({"on_abort": "panic"}, "edgeai_on_abort must be rollback or keep"),
    ({"failure_budget_percent": 150}, "in \\[0, 100\\]"),
    ({"failure_budget_percent": "lots"}, "must be a number"),
    ({"failure_budget_min_executed": 0}, "at least 1"),
    ({"canary_soak_seconds": -1}, "at least 0"),
    ({"canary_soak_seconds": True}, "whole number"),
    ({"max_unavailable_per_site": "150%"}, "percentage"),
    ({"allow_no_smoke_test": "maybe"}, "true or false"),
    ({"canary_soak_secs": 3}, "did you mean edgeai_canary_soak_seconds"),
])
def test_bad_options_are_named(over, message):
    with pytest.raises(r.ReleaseError, match=message):
        options(**over)


# -- the release ---------------------------------------------------------------------------
def test_a_run_decides_require_staged_and_the_rate_limit_the_role_would():
    role = {"require_staged": True, "rate_limit": 500, "run_id": "", "artifacts_dir": "/a"}
    assert r.device_settings(role) == role
    assert r.device_settings(role, {}) == role
    stage = {"phase": "stage", "download_rate_limit": 0, "run_id": "R"}
    assert r.device_settings(role, stage) == dict(role, require_staged=False, rate_limit=0)
    activate = {"phase": "activate", "download_rate_limit": 1000, "run_id": "R"}
    assert r.device_settings(role, activate) == dict(role, require_staged=True, rate_limit=1000)
    assert r.device_settings(None, activate) == {"require_staged": True, "rate_limit": 1000}
    assert role["rate_limit"] == 500  # the given settings are left as they were


def test_a_release_is_normalised_to_keyed_entries():
    rel = r.validate_release({"model_name": "m", "model_version": "2",
                              "artifact": {"url": "https://x/m.tgz", "sha256": "SHA256:" + SHA.upper()},
                              "smoke_test": {"inputs": [{"name": "a"}]},
                              "config": {"backend": "python"}})
    assert rel["model_version"] == 2
    assert rel["artifacts"] == {"default": {"url": "https://x/m.tgz", "sha256": SHA}}
    assert rel["smoke_test"] == {"default": {"inputs": [{"name": "a"}]}}
    assert rel["config"] == {"default": {"backend": "python"}}


@pytest.mark.parametrize("bad, message", [
    ({"model_nmae": "x"}, "unknown key in edgeai_release: model_nmae; did you mean model_name"),
    ({"model_name": "../x"}, "model_name must be a model name"),
    ({"model_version": 0}, "positive whole number"),
    ({"model_version": "two"}, "positive whole number"),
    ({"model_version": True}, "positive whole number"),
    ({"artifacts": {}}, "artifacts is missing"),
    ({"artifacts": {"jetson": {"url": "https://x"}}}, "needs its sha256"),
    ({"artifacts": {"jetson": {"url": "https://x", "sha256": "abc"}}}, "64 hexadecimal digits"),
    ({"artifacts": {"jetson": {"url": "https://x", "image": "r/m:1", "sha256": SHA}}}, "exactly one of url, src"),
    ({"artifacts": {"jetson": {"url": "https://x", "sha265": SHA}}}, "did you mean sha256"),
    ({"artifacts": {"jetson": {"image": "r/m:1", "requires": {"tensorrt_version": "8"}}}}, "did you mean tensorrt"),
    ({"artifacts": {"jetson": "https://x"}}, "must be a mapping"),
    ({"smoke_test": {"inputs": [{"name": "x"}], "expected_output": []}}, "did you mean expected_outputs"),
    ({"smoke_test": {"inputs": "zeros"}}, "must be a list of tensors"),
    ({"smoke_test": {"from_artifact": True, "inputs": [{"name": "x"}]}}, "do not give them inline too"),
    ({"artifact": {"url": "https://x", "sha256": SHA}}, "both artifacts and artifact"),
])
def test_every_release_error_names_the_problem(bad, message):
    base = {"model_name": "detector", "model_version": 3,
            "artifacts": {"jetson": {"url": "https://x", "sha256": SHA}}}
    base.update(bad)
    with pytest.raises(r.ReleaseError, match=message):
        r.validate_release(base)


def test_not_a_mapping_points_to_the_example():
    with pytest.raises(r.ReleaseError, match="playbooks/examples/release.yml"):
        r.validate_release(None)


def test_a_rollback_needs_only_the_name():
    rel = r.validate_release({"model_name": "detector"}, action="rollback")
    assert rel["model_version"] is None and rel["artifacts"] == {}


def test_local_src_is_checked_against_its_sha256_once(tmp_path):
    blob = tmp_path / "m.tgz"
    blob.write_bytes(b"model bytes")
    good = hashlib.sha256(b"model bytes").hexdigest()
    cache = {}
    rel = r.validate_release({"model_name": "m", "model_version": 1, "artifacts": {"src": "m.tgz"}},
                             base_dir=str(tmp_path), sha_cache=cache)
    assert rel["artifacts"]["default"] == {"src": str(blob), "sha256": good}
    assert list(cache.values()) == [good]
    with pytest.raises(r.ReleaseError, match="has sha256 .* the release says"):
        r.validate_release({"model_name": "m", "model_version": 1, "artifacts": {"src": str(blob), "sha256": SHA}})
    with pytest.raises(r.ReleaseError, match="does not exist on the controller"):
        r.validate_release({"model_name": "m", "model_version": 1, "artifacts": {"src": str(tmp_path / "nope")}})
    with pytest.raises(r.ReleaseError, match="is a folder, which has no sha256"):
        r.validate_release({"model_name": "m", "model_version": 1,
                            "artifacts": {"src": str(tmp_path), "sha256": good}})


def test_the_sha256_cache_is_used_for_an_unchanged_file(tmp_path):
    blob = tmp_path / "m.tgz"
    blob.write_bytes(b"x")
    cache = {}
    first = r.file_sha256(str(blob), cache)
    key = next(iter(cache))
    cache[key] = "cached"
    assert r.file_sha256(str(blob), cache) == "cached" and first != "cached"


# -- selection -----------------------------------------------------------------------------
def test_hardware_groups_first_then_other_groups_then_platform_then_default():
    entries = {"default": {"d": 1}, "jetson": {"p": 1}, "site_a": {"s": 1}, "hardware_agx_orin": {"h": 1}}
    assert r.select(entries, "jetson", ["site_a", "hardware_agx_orin"]) == ("hardware_agx_orin", {"h": 1})
    assert r.select(entries, "jetson", ["site_a"]) == ("site_a", {"s": 1})
    assert r.select(entries, "jetson", []) == ("jetson", {"p": 1})
    assert r.select(entries, "coral", []) == ("default", {"d": 1})
    assert r.select({"jetson": {}}, "coral", []) == (None, {})


def test_a_device_takes_artifact_config_and_smoke_test_for_its_platform():
    chosen = r.select_for_device(release(config={"coral": {"backend": "litert"}}), "coral", ["site_x"])
    assert chosen["artifact_key"] == "coral"
    assert chosen["config"] == {"backend": "litert"}
    assert chosen["smoke_test"] == {"from_artifact": True}


def test_coverage_names_platforms_without_artifact_or_smoke_test():
    rel = release(smoke_test={"jetson": {"inputs": [{"name": "x"}]}})
    devices = {"j1": {"platform": "jetson"}, "c1": {"platform": "coral"}, "g1": {"platform": "generic"}}
    assert r.coverage_problems(rel, devices) == [
        "no artifact for platform generic (devices: g1)", "no smoke test for platform coral (devices: c1)"]
    assert r.coverage_problems(rel, devices, allow_no_smoke_test=True) == [
        "no artifact for platform generic (devices: g1)"]
    disabled = release(smoke_test={"default": {"enabled": False}})
    assert r.coverage_problems(disabled, {"j1": {"platform": "jetson"}}) == [
        "no smoke test for platform jetson (devices: j1)"]


# -- compatibility -------------------------------------------------------------------------
ORIN = {"platform": "jetson", "soc": "tegra234", "jetson": {"jetpack": "6.0", "tensorrt": "8.6.2.3-1+cuda12.2"}}
NANO = {"platform": "jetson", "soc": "tegra210", "jetson": {"jetpack": "4.6.4", "tensorrt": "8.2.1.9-1+cuda10.2"}}
CORAL = {"platform": "coral", "coral": {"edgetpu_runtime": {"package": "libedgetpu1-std", "version": "16.0"}}}
CORAL_NO_RUNTIME = {"platform": "coral", "coral": {"edgetpu_runtime": None}}


@pytest.mark.parametrize("requires, device, why", [
    ({}, ORIN, None),
    ({"tensorrt": "8.6", "jetpack": "6.0", "compute_capability": "8.7"}, ORIN, None),
    ({"tensorrt": "8.6"}, NANO, "built for TensorRT 8.6, the device has 8.2.1.9"),
    ({"jetpack": "6.0"}, NANO, "built for JetPack 6.0, the device has 4.6.4"),
    ({"compute_capability": "8.7"}, NANO, "compute capability 8.7, the device's GPU has 5.3"),
    ({"tensorrt": "8.6"}, CORAL, "not a Jetson"),
    ({"tensorrt": "8.6"}, {"platform": "jetson", "jetson": {"tensorrt": None}}, "the device has none"),
    ({"edgetpu_runtime": "14"}, CORAL, None),
    ({"edgetpu_runtime": "16.1"}, CORAL, "runtime is 16.0, the artifact needs 16.1 or newer"),
    ({"edgetpu_runtime": "14"}, CORAL_NO_RUNTIME, "has no Edge TPU runtime"),
    ({"edgetpu_runtime": "14"}, ORIN, "has no Edge TPU runtime"),
    ({"platform": "coral"}, ORIN, "is for coral, the device is jetson"),
])
def test_compatibility_against_device_facts_profiles(requires, device, why):
    found = r.incompatibility(requires, device)
    assert (found is None) if why is None else (why in found), found


def test_backends_are_checked_only_where_the_device_says_which_it_has():
    assert r.incompatibility({"backends": ["onnxruntime"]}, ORIN, None) is None
    assert r.incompatibility({"backends": ["onnxruntime"]}, ORIN, ["python", "onnxruntime"]) is None
    assert "lacks the backend(s) tensorrt" in r.incompatibility({"backends": ["tensorrt"]}, ORIN, ["python"])


# -- the site cache ------------------------------------------------------------------------
CACHE = {"host": "cache.site-a", "username": "device", "password": "pw", "registry_port": 5443, "artifact_port": 8767}


def test_central_sources_are_rewritten_to_the_site_cache():
    url = r.cache_sources({"url": "https://artifacts.centre:8767/files/m-1.tgz"}, CACHE,
                          upstream_artifact_url="https://artifacts.centre:8767/files/")
    assert url == {"url": "https://cache.site-a:8767/files/m-1.tgz", "username": "device", "password": "pw",
                   "ca_path": "/etc/docker/certs.d/cache.site-a:5443/ca.crt"}
    image = r.cache_sources({"image": "registry.centre:5443/models/m:1"}, CACHE,
                            upstream_registry="registry.centre:5443")
    assert image["image"] == "cache.site-a:5443/models/m:1"


def test_other_sources_and_sites_without_a_cache_are_left_alone():
    assert r.cache_sources({"url": "https://elsewhere/m.tgz"}, CACHE, upstream_artifact_url="https://centre/") is None
    assert r.cache_sources({"image": "other.registry/m:1"}, CACHE, upstream_registry="registry.centre:5443") is None
    assert r.cache_sources({"src": "/m.tgz"}, CACHE, "registry.centre:5443", "https://centre/") is None
    assert r.cache_sources({"url": "https://centre/m.tgz"}, {}, upstream_artifact_url="https://centre/") is None


# -- preflight -----------------------------------------------------------------------------
INDEX = [{"name": "detector", "version": "2", "state": "READY"},
         {"name": "detector", "version": "1", "state": "UNAVAILABLE"},
         {"name": "face", "version": "5", "state": "READY"}, {"name": "broken", "version": "1", "state": "UNAVAILABLE"}]


def info(**over):
    base = {"live": True, "ready": True, "models": INDEX, "device": dict(ORIN), "staged": {"detector": [2, 3]}}
    base.update(over)
    return base


def test_served_version_and_other_models_come_from_the_index():
    assert r.served_version(INDEX, "detector") == 2
    assert r.served_version(INDEX, "broken") is None
    assert r.other_models(INDEX, "detector") == {"face": 5}


def test_a_device_behind_the_release_is_ready():
    record = r.device_status(info(), release(), "deploy", "all", ["site_a"], {"site": "a", "ring": "canary"})
    assert (record["status"], record["before"], record["staged"], record["platform"]) == ("ready", 2, [2, 3], "jetson")
    assert record["other_models"] == {"face": 5} and record["artifact_key"] == "jetson" and record["smoke"] == "release"


def test_a_device_at_the_release_is_unchanged():
    rel = release(model_version=2)
    assert r.device_status(info(), rel, "deploy", "all", [])["status"] == "unchanged"
    assert r.device_status(info(), rel, "deploy", "stage", [])["status"] == "unchanged"


def test_an_unhealthy_server_fails_the_preflight():
    record = r.device_status(info(ready=False), release(), "deploy", "all", [])
    assert record["status"] == "preflight_failed" and "live=True, ready=False" in record["reason"]


def test_a_device_the_release_has_nothing_for_fails_the_preflight():
    record = r.device_status(info(device={"platform": "generic"}), release(), "deploy", "all", [])
    assert record["status"] == "preflight_failed" and "no artifact for platform generic" in record["reason"]


def test_an_incompatible_device_is_reported_not_tried():
    rel = release(artifacts={"jetson": {"url": "https://x/p.tgz", "sha256": SHA, "requires": {"tensorrt": "10.0"}}})
    record = r.device_status(info(), rel, "deploy", "all", [])
    assert record["status"] == "incompatible" and "TensorRT 10.0" in record["reason"]


def test_a_rollback_needs_a_served_version():
    rel = r.validate_release({"model_name": "detector"}, action="rollback")
    assert r.device_status(info(), rel, "rollback", "all", [])["status"] == "ready"
    idle = r.device_status(info(models=[]), rel, "rollback", "all", [])
    assert idle["status"] == "unchanged" and "nothing to roll back" in idle["reason"]


def test_a_release_without_smoke_test_is_marked():
    record = r.device_status(info(), release(smoke_test={}), "deploy", "all", [])
    assert record["smoke"] == "none"


# -- the plan --------------------------------------------------------------------------------
def fleet(per_site, sites=("a", "b", "c"), canary=()):
    return [{"host": f"{s}{i}", "site": s, "order": i, "ring": "canary" if f"{s}{i}" in canary else "broad"}
            for s in sites for i in range(per_site)]


def test_canary_ring_goes_first_then_sites_move_together():
    waves = r.plan_waves(fleet(3, canary={"b1"}), max_unavailable_per_site=1)
    assert waves[0] == ["b1"]
    assert waves[1] == ["a0", "b0", "c0"]
    assert sorted(h for w in waves for h in w) == sorted(d["host"] for d in fleet(3))


def test_without_a_canary_ring_one_device_per_site_is_the_canary():
    assert r.plan_waves(fleet(2)) == [["a0", "b0", "c0"], ["a1", "b1", "c1"]]


@pytest.mark.parametrize("limit, per_site_max", [(1, 1), (2, 2), ("50%", 5), ("10%", 1)])
def test_no_site_ever_exceeds_its_limit(limit, per_site_max):
    devices = fleet(10) + [{"host": f"d{i}", "site": "d", "order": i} for i in range(3)]
    waves = r.plan_waves(devices, max_unavailable_per_site=limit)
    for wave in waves[1:]:
        counts = {}
        for host in wave:
            counts[host[0]] = counts.get(host[0], 0) + 1
        assert max(counts.values()) <= per_site_max
        if isinstance(limit, str):
            assert counts.get("d", 0) <= r.parse_limit(limit, 3)
    assert len([h for w in waves for h in w]) == len(devices)


def test_each_device_once_and_order_respected_within_site():
    flat = [h for w in r.plan_waves(fleet(4)) for h in w]
    assert len(flat) == len(set(flat)) == 12
    for site in "abc":
        assert [h for h in flat if h[0] == site] == [f"{site}{i}" for i in range(4)]


def test_bad_plan_input_is_named():
    with pytest.raises(r.RolloutPlanError, match="at least 1"):
        r.plan_waves(fleet(1), max_unavailable_per_site=0)
    with pytest.raises(r.RolloutPlanError, match="listed twice"):
        r.plan_waves(fleet(1) + fleet(1))
    with pytest.raises(r.RolloutPlanError, match="'host' and 'site'"):
        r.plan_waves([{"host": "x"}])
    with pytest.raises(r.RolloutPlanError, match="count or a percentage"):
        r.parse_limit(True, 3)
    with pytest.raises(r.RolloutPlanError, match="count or a percentage"):
        r.parse_limit("lots", 3)


def test_the_plan_takes_ready_devices_only():
    records = {"a0": {"status": "ready", "site": "a"}, "a1": {"status": "unchanged", "site": "a"},
               "b0": {"status": "ready", "site": "b", "ring": "canary"}, "b1": {"status": "ready", "site": "b"},
               "c0": {"status": "incompatible", "site": "c"}, "gone": None}
    plan = r.make_plan(records, options())
    assert plan["waves"] == [["b0"], ["a0", "b1"]]
    assert plan["order"] == ["b0", "a0", "b1"] and plan["serial"] == [1, 2] and plan["canary"] == ["b0"]
    assert plan["wave_of"] == {"b0": 0, "a0": 1, "b1": 1}
    staged = r.make_plan(records, options(phase="stage"))  # one wave of every ready device, no canary soak
    assert staged["waves"] == [["a0", "b0", "b1"]] and staged["serial"] == [3] and staged["canary"] == []
    assert staged["wave_of"] == {"a0": 0, "b0": 0, "b1": 0}
    assert r.make_plan({"a1": {"status": "unchanged"}}, options())["serial"] == [1]


# -- the verdict -----------------------------------------------------------------------------
@pytest.mark.parametrize("failed, executed, percent, min_executed, expected", [
    (0, 10, 10, 1, False), (1, 10, 10, 1, True), (1, 11, 10, 1, False),
    (3, 4, 10, 5, False),  # not enough devices finished to judge
    (3, 5, 10, 5, True), (1, 1, 0, 1, True), (0, 0, 10, 1, False),
])
def test_failure_budget(failed, executed, percent, min_executed, expected):
    assert r.budget_exceeded(failed, executed, percent, min_executed) is expected


def test_failure_budget_rejects_inconsistent_counts():
    with pytest.raises(r.RolloutPlanError, match="inconsistent"):
        r.budget_exceeded(3, 2, 10)
    with pytest.raises(r.RolloutPlanError, match="percent"):
        r.budget_exceeded(0, 2, 120)


PLAN = {"waves": [["c"], ["a1", "b1"], ["a2", "b2"]]}


def test_a_failed_canary_aborts():
    abort = r.wave_verdict(PLAN, 0, {"c": "rolled_back"}, options())
    assert abort == {"wave": 0, "failed": ["c"], "reason": "the canary failed on c"}


def test_a_device_without_a_result_counts_as_failed():
    assert r.wave_verdict(PLAN, 0, {}, options())["failed"] == ["c"]


def test_the_budget_decides_after_later_waves():
    results = {"c": "updated", "a1": "updated", "b1": "failed"}
    abort = r.wave_verdict(PLAN, 1, results, options(failure_budget_percent=30))
    assert abort["failed"] == ["b1"] and "1 of 3 devices failed, budget 30%" in abort["reason"]
    assert r.wave_verdict(PLAN, 1, results, options(failure_budget_percent=50)) == {}


def test_a_failed_stage_is_reported_not_an_abort():
    stage = r.make_plan({"c": {"status": "ready", "site": "a"}}, options(phase="stage"))
    assert r.wave_verdict(stage, 0, {"c": "stage_failed"}, options(phase="stage")) == {}
    assert r.wave_verdict(stage, 0, {"c": "stage_failed"}, options())["failed"] == ["c"]


def test_what_counts_as_success_depends_on_action_and_phase():
    assert r.wave_verdict(PLAN, 0, {"c": "would_update"}, options()) == {}
    assert r.wave_verdict(PLAN, 0, {"c": "downgraded"}, options()) == {}
    assert r.wave_verdict(PLAN, 0, {"c": "rolled_back"}, options(action="rollback")) == {}
    assert r.wave_verdict(PLAN, 0, {"c": "updated"}, options(action="rollback"))["failed"] == ["c"]
    assert r.successes("deploy", "stage") >= {"staged", "already_staged"}
    with pytest.raises(r.RolloutPlanError):
        r.successes("rollback", "stage")


def test_rollback_after_an_abort_takes_what_changed():
    results = {"c": {"result": "updated"}, "a1": {"result": "failed", "maybe_changed": True},
               "b1": {"result": "rolled_back"}, "a2": {"result": "downgraded"}}
    assert r.rollback_candidates(results, options()) == ["a1", "a2", "c"]
    assert r.rollback_candidates(results, options(on_abort="keep")) == []
    assert r.rollback_candidates(results, options(action="rollback")) == []
    assert r.rollback_candidates(results, options(phase="stage")) == []


def test_only_the_canary_wave_soaks():
    run = options(canary_soak_seconds=45)
    assert r.soak_seconds({"canary": ["c"]}, run, "c") == 45
    assert r.soak_seconds({"canary": ["c"]}, run, "a1") == 0
    assert r.soak_seconds({}, run, "c") == 0  # no plan (the role on its own): no soak


def test_after_an_abort_a_listed_device_goes_back_from_the_release():
    run = {"release": release()}
    abort = {"wave": 1, "rollback": ["a1", "c"], "reason": "the canary failed on c"}
    assert r.abort_rollback(run, abort, "c") == {"from_version": 3,
                                                 "reason": "rollout aborted: the canary failed on c"}
    assert r.abort_rollback(run, abort, "b1") is None  # not on the list: it keeps what it serves
    assert r.abort_rollback(run, {}, "c") is None  # no abort: the wave deploys
    assert r.abort_rollback(run, {"rollback": ["c"]}, "c")["reason"] == "rollout aborted: unknown"


# -- the report ----------------------------------------------------------------------------
def test_every_target_gets_a_row():
    records = {"up": {"status": "ready", "site": "a", "platform": "jetson", "model": "detector", "before": 2,
                      "target": 3, "other_models": {"face": 5}, "smoke": "release"},
               "same": {"status": "unchanged", "before": 3, "target": 3},
               "sick": {"status": "preflight_failed", "reason": "server down", "before": None},
               "old": {"status": "incompatible", "reason": "TensorRT", "before": 1},
               "late": {"status": "ready", "before": 2}, "lost": {"status": "ready", "before": 2}}
    results = {"up": {"result": "updated", "after": 3, "maybe_changed": False}}
    plan = {"wave_of": {"up": 0, "late": 1, "lost": 1}}
    rows = {row["device"]: row for row in r.report_rows(
        ["up", "same", "sick", "old", "late", "lost", "gone"], records, results, plan, abort={"wave": 0})}
    assert rows["up"]["result"] == "updated" and rows["up"]["other_models"] == {"face": 5}
    assert rows["up"]["model"] == "detector" and "maybe_changed" not in rows["up"]
    assert rows["same"]["result"] == "unchanged"
    assert rows["sick"]["result"] == "preflight_failed" and rows["sick"]["reason"] == "server down"
    assert rows["old"]["result"] == "incompatible"
    assert rows["late"]["result"] == "not_reached"
    assert rows["gone"]["result"] == "deferred" and rows["gone"]["reason"] == "unreachable during preflight"
    unreached = r.report_rows(["lost"], records, {}, plan, abort={})
    assert unreached[0]["result"] == "deferred" and "during the rollout" in unreached[0]["reason"]


def test_a_release_accepted_without_smoke_test_says_so():
    rows = r.report_rows(["d"], {"d": {"status": "ready", "smoke": "none"}}, {"d": {"result": "updated"}}, {}, {})
    assert rows[0]["warnings"] == ["no smoke test: the release was accepted without one"]


def report(rows, **over):
    base = {"devices": rows, "aborted": False, "abort": {}, "model": "detector", "version": 3, "file": "/r.json"}
    base.update(over)
    return base


def test_a_run_that_went_well_does_not_fail():
    assert r.run_failure(report([{"device": "a", "result": "updated"}, {"device": "b", "result": "unchanged"}]),
                         options()) is None


def test_only_unreachable_devices_are_said_to_converge_later():
    text = r.run_failure(report([{"device": "a", "result": "deferred"}, {"device": "b", "result": "failed"},
                                 {"device": "c", "result": "not_reached"}, {"device": "d", "result": "incompatible"}]),
                         options())
    assert "1 device(s) deferred (a); a later run converges them." in text
    assert "1 device(s) failed (b); the release failed on them" in text and "converges them" not in text.split("(b)")[1]
    assert "not tried because the rollout aborted" in text
    assert "cannot run this artifact" in text
    assert text.startswith("Devices not at detector 3:") and text.endswith("Report: /r.json")


def test_an_abort_leads_the_message():
    text = r.run_failure(report([{"device": "a", "result": "rolled_back"}], aborted=True,
                                abort={"wave": 0, "reason": "the canary failed on a"}), options())
    assert text.startswith("Rollout aborted in wave 0: the canary failed on a (on_abort=rollback). Devices not at")


def test_the_stage_phase_has_its_own_goal():
    assert r.run_failure(report([{"device": "a", "result": "staged"}]), options(phase="stage")) is None
    text = r.run_failure(report([{"device": "a", "result": "stage_failed"}]), options(phase="stage"))
    assert "Devices not staged with detector 3" in text


def test_report_table_is_aligned_sorted_and_shows_missing_values():
    rows = [
        {"device": "b-coral", "site": "b", "platform": "coral", "model": "m", "wave": 1, "before": 1, "after": 2,
         "result": "updated", "stage_s": 12.345, "activate_s": 2, "other_models": {"face": 5, "aa": 1}},
        {"device": "a-orin", "site": "a", "platform": "jetson", "model": "m", "wave": 0, "before": 1, "after": None,
         "result": "deferred", "reason": "unreachable during the rollout"},
    ]
    lines = r.report_table(rows)
    assert lines[0].split() == ["device", "site", "platform", "model", "wave", "before", "after", "result",
                                "stage_s", "activate_s", "other_models", "note"]
    assert lines[2].split()[:10] == ["a-orin", "a", "jetson", "m", "0", "1", "-", "deferred", "-", "-"]
    assert lines[2].endswith("unreachable during the rollout")
    assert lines[3].split() == ["b-coral", "b", "coral", "m", "1", "1", "2", "updated", "12.3", "2", "aa:1,face:5", "-"]
    assert lines[0].index("result") == lines[2].index("deferred") == lines[3].index("updated")
    assert r.report_summary(rows) == {"deferred": 1, "updated": 1}


def test_long_notes_are_cut():
    row = {"device": "d", "result": "failed", "reason": "x" * 200}
    assert r.report_table([row])[2].endswith("x" * 77 + "...")


def test_every_outcome_is_in_the_vocabulary():
    named = set(r.OUTCOMES)
    used = set().union(*r.SUCCESS.values()) | r.CONVERGE_LATER | r.CHANGED
    assert used <= named


@pytest.mark.parametrize("before, target, check, result", [
    (None, 3, False, "updated"), (2, 3, False, "updated"), (4, 3, False, "downgraded"),
    (2, 3, True, "would_update"), (4, 3, True, "would_downgrade"),
])
def test_a_downgrade_is_reported_as_one(before, target, check, result):
    assert r.switch_result(before, target, check) == result


def test_a_controller_failure_in_a_wave_may_have_changed_the_device():
    row = r.controller_failure({"run_id": "R", "result": "updated", "before": 1}, "'x' is undefined", "wave", "R")
    assert row == {"run_id": "R", "result": "failed", "before": 1, "maybe_changed": True,
                   "reason": "controller error during the wave: 'x' is undefined"}
    stale = r.controller_failure({"run_id": "OLD", "result": "updated"}, "boom", "wave", "R")
    assert stale == {"run_id": "R", "result": "failed", "maybe_changed": True,
                     "reason": "controller error during the wave: boom"}


def test_a_controller_failure_while_rolling_back():
    switched = r.controller_failure({"run_id": "R", "result": "updated"}, "boom", "rollback", "R")
    assert switched["result"] == "rollback_failed" and not switched["maybe_changed"]
    never = r.controller_failure({"run_id": "R", "result": "failed", "reason": "first", "maybe_changed": True},
                                 "boom", "rollback", "R")
    assert never["result"] == "failed" and never["reason"] == "first; controller error during the rollback: boom"


def test_a_device_whose_inventory_does_not_say_its_platform_is_checked_in_its_preflight():
    rel = release(smoke_test={"jetson": {"inputs": [{"name": "x"}]}})
    assert r.coverage_problems(rel, {"m1": {"platform": None}, "m2": {}}) == []
    record = r.device_status(info(device={"platform": "coral"}), rel, "deploy", "all", [], require_smoke_test=True)
    assert record["status"] == "preflight_failed" and "no smoke test for platform coral" in record["reason"]
    accepted = r.device_status(info(device={"platform": "coral"}), rel, "deploy", "all", [])
    assert accepted["status"] == "ready" and accepted["smoke"] == "none"


def test_each_verdict_reads_only_the_devices_it_has_no_result_for():
    plan = {"waves": [["c1"], ["a1", "b1"], ["a2", "b2"]]}
    assert r.done_hosts_to_read(plan, 0, None, "R") == ({}, ["c1"])
    tally = {"run_id": "R", "outcomes": {"c1": "updated"}}
    assert r.done_hosts_to_read(plan, 1, tally, "R") == ({"c1": "updated"}, ["a1", "b1"])
    # a1 had no result yet (unreachable): it is read again after the next wave
    tally = {"run_id": "R", "outcomes": {"c1": "updated", "b1": "failed"}}
    assert r.done_hosts_to_read(plan, 2, tally, "R") == ({"c1": "updated", "b1": "failed"}, ["a1", "a2", "b2"])
    # another run's tally (deploy_model.yml imported twice in one playbook) is not this run's
    assert r.done_hosts_to_read(plan, 1, tally, "S") == ({}, ["c1", "a1", "b1"])
    assert tally["outcomes"] == {"c1": "updated", "b1": "failed"}  # the given tally is left as it was
