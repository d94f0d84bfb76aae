# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
"""The engine of edgeai.fleet.inference_model: make a staged model version the one a
running inference server serves, gated by a smoke test, with automatic rollback.

The model's folder in the repository holds exactly one version folder once a deployment
finished. A deployment places the new version folder (copied under a non-numeric name,
then renamed), moves the old one out to a snapshot in ``state_dir``, and asks the server
to load the model: the server loads the new version and only then unloads the old one,
so requests keep being answered. On any failure the snapshot goes back and is reloaded."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time

from ansible_collections.edgeai.fleet.plugins.module_utils._archive import copy_tree_checked, tree_digest
from ansible_collections.edgeai.fleet.plugins.module_utils._errors import ConfigError, EdgeAIError, ServerError
from ansible_collections.edgeai.fleet.plugins.module_utils._events import EVENTS_ARGS, EventPoster
from ansible_collections.edgeai.fleet.plugins.module_utils._inference_client import (
    InferenceClient,
    inference_server_argument_spec,
)
from ansible_collections.edgeai.fleet.plugins.module_utils._layout import CONFIG, MANIFEST, SMOKE, staged_versions
from ansible_collections.edgeai.fleet.plugins.module_utils._model_config import (
    config_from_dict,
    load_config_text,
    parse_config,
    synthesize_inputs,
)
from ansible_collections.edgeai.fleet.plugins.module_utils._waiter import Waiter

ARGUMENT_SPEC = inference_server_argument_spec(
    name=dict(type="str", required=True),
    version=dict(type="int"),
    state=dict(type="str", default="present", choices=["present", "absent", "rolled_back"]),
    repository=dict(type="path", default="/var/lib/edgeai/models"),
    artifacts=dict(type="path", default="/var/lib/edgeai/artifacts"),
    state_dir=dict(type="path", default="/var/lib/edgeai/inference_model"),
    config=dict(type="dict"),
    smoke_test=dict(type="dict", default={}, options=dict(
        enabled=dict(type="bool", default=True),
        inputs=dict(type="list", elements="dict"),
        expected_outputs=dict(type="list", elements="dict"),
        tolerance=dict(type="float", default=1e-5),
        relative_tolerance=dict(type="float", default=0.0),
        requests=dict(type="int", default=1),
        from_artifact=dict(type="bool", default=False),
    )),
    soak=dict(type="dict", options=dict(
        seconds=dict(type="int", default=0),
        interval=dict(type="float", default=5.0),
    )),
    from_version=dict(type="int"),
    reason=dict(type="str"),
    events=EVENTS_ARGS,
    load_timeout=dict(type="float", default=300.0),
    poll_interval=dict(type="float", default=1.0),
)
REQUIRED_IF = [("state", "present", ("version",))]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class DeployFailed(EdgeAIError):
    """A step of a deployment failed (load, readiness, smoke test)."""


def compare_outputs(response, expected, atol, rtol):
    """Return the mismatches between an inference response and expected outputs."""
    problems = []
    got = dict((o.get("name"), o) for o in response.get("outputs", []))
    for want in expected:
        name = want.get("name")
        if name not in got:
            problems.append(f"output {name} missing")
            continue
        actual = got[name].get("data", [])
        wanted = want.get("data", [])
        if "shape" in want and list(want["shape"]) != list(got[name].get("shape", [])):
            problems.append("output {} shape {}, expected {}".format(name, got[name].get("shape"), want["shape"]))
        if len(actual) != len(wanted):
            problems.append(f"output {name} has {len(actual)} values, expected {len(wanted)}")
            continue
        tol = float(want.get("tolerance", atol))
        for index, (a, b) in enumerate(zip(actual, wanted)):
            if isinstance(b, (int, float)) and not isinstance(b, bool) and isinstance(a, (int, float)):
                if not (math.isfinite(a) and abs(a - b) <= tol + rtol * abs(b)):
                    problems.append(f"output {name}[{index}] = {a!r}, expected {b!r} (tolerance {tol:g})")
                    break
            elif a != b:
                problems.append(f"output {name}[{index}] = {a!r}, expected {b!r}")
                break
    return problems


def _read(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return None


def _write_atomic(path, text):
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.rename(tmp, path)


class InferenceModel:
    def __init__(self, params, check_mode=False, client=None, sleep=time.sleep):
        self.p = params
        self.check_mode = check_mode
        self.client = client or InferenceClient.from_params(params)
        self._sleep = sleep
        name = params["name"]
        if not _NAME.match(name):
            raise EdgeAIError(f"name {name!r} is not a valid model name")
        self.model_dir = os.path.join(params["repository"], name)
        self.state_file = os.path.join(params["state_dir"], name + ".json")
        self.snapshot = os.path.join(params["state_dir"], name + ".previous")
        self.result = {"changed": False, "rolled_back": False, "name": name}
        self.events = EventPoster(params.get("events"), name, params.get("version"))

    # -- state ---------------------------------------------------------------------------
    def _load_state(self):
        text = _read(self.state_file)
        try:
            return json.loads(text) if text else {}
        except ValueError:
            return {}

    def _save_state(self, state):
        os.makedirs(self.p["state_dir"], mode=0o755, exist_ok=True)
        _write_atomic(self.state_file, json.dumps(state, indent=1, sort_keys=True))

    def _repo_versions(self):
        return staged_versions(self.model_dir)

    # -- inputs --------------------------------------------------------------------------
    def _staged(self, version):
        path = os.path.join(self.p["artifacts"], self.p["name"], str(version))
        if not os.path.isdir(path):
            raise EdgeAIError("version {} of {} is not staged in {}; stage it first with "
                              "edgeai.fleet.model_artifact".format(version, self.p["name"], path))
        return path

    def _config_text(self, staged, fallback=None):
        """config.pbtxt text to place: from the config dict, the artifact, the given
        fallback (rollback), or the one already in the repository; validated."""
        name = self.p["name"]
        if self.p.get("config"):
            text, dummy = config_from_dict(self.p["config"], name)
            return text, "dict"
        for source, text in (("artifact", _read(os.path.join(staged, CONFIG))), ("saved", fallback),
                             ("repository", _read(os.path.join(self.model_dir, CONFIG)))):
            if text:
                load_config_text(text, name)
                return text, source
        raise ConfigError(f"no configuration for {name}: give config, or ship config.pbtxt in the artifact")

    # -- server steps --------------------------------------------------------------------
    def _load_and_wait(self, version):
        start = time.monotonic()
        try:
            self.client.load(self.p["name"], timeout=self.p["load_timeout"])
        except ServerError as exc:
            raise DeployFailed("loading {} version {} failed: {}".format(self.p["name"], version, exc.msg)) from exc
        remaining = max(1.0, self.p["load_timeout"] - (time.monotonic() - start))
        waiter = Waiter(remaining, self.p["poll_interval"], sleep=self._sleep)

        def ready():
            return self.client.model_ready(self.p["name"], version), "not ready"
        try:
            waiter.wait(ready, "{} version {} to be READY".format(self.p["name"], version), retry_on=(ServerError,))
        except EdgeAIError as exc:
            raise DeployFailed(exc.msg) from exc
        return time.monotonic() - start

    def _smoke_spec(self, version, expect):
        """The smoke test to run against ``version``: the release's, or the one stored in the
        staged version (smoke_test.json, made by the release builder)."""
        smoke = dict(self.p.get("smoke_test") or {})
        stored = os.path.join(self.p["artifacts"], self.p["name"], str(version), SMOKE)
        inline = smoke.get("inputs") or smoke.get("expected_outputs")
        if smoke.get("from_artifact") or ((not expect or not inline) and os.path.isfile(stored)):
            text = _read(stored)
            if text is None:
                if smoke.get("from_artifact") and expect:
                    raise DeployFailed("smoke test of {} version {}: from_artifact is set and the staged version "
                                       "has no {}".format(self.p["name"], version, SMOKE))
            else:
                try:
                    data = json.loads(text)
                except ValueError as exc:
                    raise DeployFailed(f"smoke test of {self.p['name']} version {version}: {SMOKE} is not "
                                       f"valid JSON: {exc}") from exc
                if not isinstance(data, dict) or not isinstance(data.get("inputs"), list):
                    raise DeployFailed(f"smoke test of {self.p['name']} version {version}: {SMOKE} has no inputs")
                smoke.update({k: data[k] for k in ("inputs", "expected_outputs", "tolerance", "relative_tolerance")
                              if k in data})
                # the version's own expected outputs hold for it, also when going back to it
                return smoke, True
        return smoke, expect

    def _smoke(self, version, expect=True):
        """Run the smoke test against ``version``; return the mean latency in ms."""
        smoke, expect = self._smoke_spec(version, expect)
        if smoke.get("enabled") is False:
            return None
        name = self.p["name"]
        try:
            inputs = smoke.get("inputs")
            if not inputs:
                inputs = synthesize_inputs(self.client.model_metadata(name, version))
            latencies = []
            for _dummy in range(max(1, smoke.get("requests") or 1)):
                response, latency = self.client.infer(name, inputs, version=version)
                latencies.append(latency)
                if expect and smoke.get("expected_outputs"):
                    tolerance = smoke.get("tolerance")
                    problems = compare_outputs(response, smoke["expected_outputs"],
                                               1e-5 if tolerance is None else tolerance,
                                               smoke.get("relative_tolerance") or 0.0)
                    if problems:
                        raise DeployFailed(f"smoke test of {name} version {version} failed: " + "; ".join(problems))
        except (ServerError, ConfigError) as exc:
            raise DeployFailed(f"smoke test of {name} version {version} failed: {exc.msg}") from exc
        return round(sum(latencies) / len(latencies), 3)

    def _failures(self):
        """Failed inferences of the model over all versions; None where the server has no statistics."""
        try:
            data = self.client.model_stats(self.p["name"])
        except ServerError:
            return None
        if data is None:
            return None
        total = 0
        for entry in data.get("model_stats", []):
            fail = (entry.get("inference_stats") or {}).get("fail") or {}
            total += int(fail.get("count") or 0)
        return total

    def _soak(self, version):
        """The canary's second gate: for soak.seconds the server stays ready, the version
        stays READY and the model's failed-inference count does not grow."""
        soak = self.p.get("soak") or {}
        seconds = soak.get("seconds") or 0
        if seconds <= 0:
            return None
        interval = max(0.2, min(float(soak.get("interval") or 5.0), float(seconds)))
        start = time.monotonic()
        failures = self._failures()
        checks = 0
        while True:
            checks += 1
            ready = self.client.ready() and self.client.model_ready(self.p["name"], version)
            now = self._failures()
            if not ready or (failures is not None and now is not None and now > failures):
                waited = time.monotonic() - start
                raise DeployFailed(f"canary soak failed after {waited:.0f}s: ready={bool(ready)}, "
                                   f"failed inferences {failures} -> {now}")
            left = seconds - (time.monotonic() - start)
            if left <= 0:
                return {"seconds": round(time.monotonic() - start, 1), "checks": checks}
            self._sleep(min(interval, left))

    # -- repository steps ----------------------------------------------------------------
    def _place(self, staged, version, config_text):
        """Put ``version`` alone into the model folder; move what was there to the snapshot."""
        os.makedirs(self.model_dir, mode=0o755, exist_ok=True)
        incoming = tempfile.mkdtemp(prefix=f".incoming-{version}-", dir=self.model_dir)
        try:
            copy_tree_checked(staged, incoming)
            for extra in (CONFIG, MANIFEST, SMOKE):
                if os.path.exists(os.path.join(incoming, extra)):
                    os.unlink(os.path.join(incoming, extra))
            os.chmod(incoming, 0o755)
            if os.path.exists(self.snapshot):
                shutil.rmtree(self.snapshot)
            os.makedirs(self.snapshot, mode=0o700)
            old_config = os.path.join(self.model_dir, CONFIG)
            if os.path.exists(old_config):
                shutil.copy2(old_config, os.path.join(self.snapshot, CONFIG))
            for old in self._repo_versions():
                shutil.move(os.path.join(self.model_dir, str(old)), os.path.join(self.snapshot, str(old)))
            os.rename(incoming, os.path.join(self.model_dir, str(version)))
        finally:
            if os.path.exists(incoming):
                shutil.rmtree(incoming)
        _write_atomic(os.path.join(self.model_dir, CONFIG), config_text)

    def _restore(self):
        """Put the snapshot back in the model folder. Returns the restored version or None."""
        for current in self._repo_versions():
            shutil.rmtree(os.path.join(self.model_dir, str(current)))
        restored = staged_versions(self.snapshot)
        if not restored:
            return None
        for old in restored:
            shutil.move(os.path.join(self.snapshot, str(old)), os.path.join(self.model_dir, str(old)))
        config = os.path.join(self.snapshot, CONFIG)
        if os.path.exists(config):
            _write_atomic(os.path.join(self.model_dir, CONFIG), _read(config))
        shutil.rmtree(self.snapshot)
        return max(restored)

    def _remove_model(self):
        if os.path.isdir(self.model_dir):
            shutil.rmtree(self.model_dir)

    # -- states --------------------------------------------------------------------------
    def _in_place(self, staged, version, config_text):
        versions = self._repo_versions()
        if versions != [version]:
            return False
        if _read(os.path.join(self.model_dir, CONFIG)) != config_text:
            return False
        placed = tree_digest(os.path.join(self.model_dir, str(version)))
        return placed == tree_digest(staged, exclude=(CONFIG, MANIFEST, SMOKE))

    def deploy(self, version, config_fallback=None, why="present"):
        name = self.p["name"]
        staged = self._staged(version)
        config_text, config_source = self._config_text(staged, config_fallback)
        policy = parse_config(config_text).get("version_policy") or {}
        specific = (policy.get("specific") or {}).get("versions") if isinstance(policy, dict) else None
        if specific is not None and version not in (specific if isinstance(specific, list) else [specific]):
            raise ConfigError(f"the configuration's version_policy serves versions {specific}, not {version}")
        state = self._load_state()
        active = (state.get("active") or {}).get("version")
        before_versions = self._repo_versions()
        in_place = self._in_place(staged, version, config_text)
        served = False
        try:
            served = self.client.model_ready(name, version)
        except ServerError:
            served = False
        self.result.update({"active_version": version, "config_source": config_source,
                            "previous_version": (state.get("previous") or {}).get("version") if in_place else active})
        self.result["diff"] = {
            "before": f"versions in repository: {before_versions}\nserved: {active}\n",
            "after": f"versions in repository: [{version}]\nserved: {version}\n",
        }
        if in_place and served:
            self.result["changed"] = False
            self.result.pop("diff")
            return self.result
        self.result["changed"] = True
        if self.check_mode:
            return self.result
        # before anything changes, check that the server answers at all
        if not self.client.live():
            raise EdgeAIError("the inference server at {} is not live".format(self.p["url"]))
        event = "rolled_back" if why == "rolled_back" else "deploy"
        if event == "deploy":
            self.events.post("deploy_started", previous_version=active)
        if not in_place:
            self._place(staged, version, config_text)
        try:
            load_time = self._load_and_wait(version)
            latency = self._smoke(version, expect=why != "rolled_back")
            soaked = self._soak(version) if why != "rolled_back" else None
        except DeployFailed as exc:
            if event == "deploy":
                self.events.post("deploy_failed", previous_version=active, reason=exc.msg)
            if in_place:
                # the files were already right (the server lost the model, e.g. after a
                # restart): nothing was changed on disk, so there is nothing to restore
                raise EdgeAIError(exc.msg, failed_version=version, rolled_back=False) from exc
            self._rollback_after_failure(exc, version, active)
            raise  # not reached: _rollback_after_failure raises
        old = state.get("active") if (state.get("active") or {}).get("version") != version else state.get("previous")
        new_state = {"active": {"version": version, "config": config_text}, "previous": old,
                     "updated": int(time.time()), "how": why}
        self._save_state(new_state)
        if os.path.exists(self.snapshot):
            shutil.rmtree(self.snapshot)
        self.result.update({"previous_version": (old or {}).get("version"),
                            "load_time_s": round(load_time, 3), "smoke_latency_ms": latency})
        if soaked:
            self.result["soak"] = soaked
        if event == "deploy":
            self.events.post("deploy_succeeded", previous_version=active)
        else:
            self.events.post("rolled_back", previous_version=active, reason=self.p.get("reason"), version=version)
        return self.result

    def _rollback_after_failure(self, exc, version, active=None):
        name = self.p["name"]
        restored = self._restore()
        details = {"failed_version": version, "rolled_back": False, "reason": exc.msg}
        if restored is None:
            # first deployment: nothing to go back to; leave no broken model behind
            try:
                self.client.unload(name)
            except ServerError:
                pass
            self._remove_model()
            details["active_version"] = None
            raise EdgeAIError(f"{exc.msg}; nothing to roll back to, the model was removed",
                              **self._with_events(details))
        try:
            self._load_and_wait(restored)
            self._smoke(restored, expect=False)
        except DeployFailed as second:
            details["active_version"] = None
            raise EdgeAIError(f"{exc.msg}; rollback to version {restored} failed too: {second.msg}",
                              **self._with_events(details)) from second
        details.update({"rolled_back": True, "changed": True, "active_version": restored, "previous_version": version})
        self.events.post("rolled_back", previous_version=version, reason=exc.msg, version=restored)
        raise EdgeAIError(f"{exc.msg}; rolled back to version {restored}, which serves", **self._with_events(details))

    def _with_events(self, details):
        details["events_undelivered"] = list(self.events.undelivered)
        details["events_errors"] = list(self.events.errors)
        return details

    def rolled_back(self):
        state = self._load_state()
        active = (state.get("active") or {}).get("version")
        wanted = self.p.get("from_version")
        if wanted is not None and active != wanted:
            # only a device that serves from_version goes back: anything else did not change
            self.result.update({"changed": False, "active_version": active,
                                "msg": f"{self.p['name']} is at version {active}, not {wanted}: nothing to roll back"})
            return self.result
        previous = state.get("previous")
        if not previous:
            raise EdgeAIError(f"no previous version of {self.p['name']} recorded in {self.state_file}: "
                              "nothing to roll back to")
        self.deploy(previous["version"], config_fallback=previous.get("config"), why="rolled_back")
        return self.result

    def absent(self):
        name = self.p["name"]
        exists = os.path.isdir(self.model_dir)
        try:
            loaded = any(state for state in self.client.model_versions(name).values() if state == "READY")
        except ServerError:
            loaded = False
        self.result["changed"] = exists or loaded
        self.result["active_version"] = None
        if self.result["changed"]:
            self.result["diff"] = {"before": f"versions in repository: {self._repo_versions()}\nloaded: {loaded}\n",
                                   "after": "versions in repository: []\nloaded: False\n"}
        if self.check_mode or not self.result["changed"]:
            return self.result
        if loaded:
            self.client.unload(name, timeout=self.p["load_timeout"])
        self._remove_model()
        for path in (self.state_file,):
            if os.path.exists(path):
                os.unlink(path)
        if os.path.isdir(self.snapshot):
            shutil.rmtree(self.snapshot)
        return self.result

    def run(self):
        state = self.p["state"]
        if state == "absent":
            result = self.absent()
        elif state == "rolled_back":
            result = self.rolled_back()
        else:
            result = self.deploy(self.p["version"])
        result["events_undelivered"] = list(self.events.undelivered)
        result["events_errors"] = list(self.events.errors)
        return result


def run_module(module_cls):
    module = module_cls(argument_spec=ARGUMENT_SPEC, required_if=REQUIRED_IF, supports_check_mode=True)
    try:
        result = InferenceModel(module.params, check_mode=module.check_mode).run()
    except EdgeAIError as exc:
        details = dict(exc.details)
        details.setdefault("rolled_back", False)
        module.fail_json(msg=exc.msg, **details)
    except OSError as exc:
        module.fail_json(msg=f"inference_model failed: {exc}", rolled_back=False)
    module.exit_json(**result)
