# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollout engine's steps (documented in plugins/modules/rollout.py). Every decision is in
plugins/plugin_utils/_rollout.py; this file only reads Ansible's variables, runs the device
modules (one call per device for a preflight, at most two for a device's wave) and returns
facts. A step never lets an exception escape for a device: a failure becomes the device's
result, so the run always reaches its report."""

from __future__ import annotations

import json
import os
import time
import traceback
from urllib.parse import urlsplit, urlunsplit

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleUndefinedVariable
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase
from ansible.template import trust_as_template
from ansible_collections.edgeai.fleet.plugins.plugin_utils import _rollout as engine

SERVER_OPTIONS = ("url", "token", "ca_path", "validate_certs", "timeout")
CONTROLLER_STEPS = ("start", "targets", "plan", "verdict", "report", "failed")
DEVICE_STEPS = ("preflight", "wave", "deploy", "stage", "rollback")
# Module options of model_artifact that a device's settings may give.
ARTIFACT_SETTINGS = ("keep_versions", "min_free_space_mb", "rate_limit", "require_staged")


def _now():
    return time.time()


def redact_url(url):
    """A source for the report: no credentials and no query (presigned URLs carry signatures)."""
    if not url or "://" not in str(url):
        return url
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class ActionModule(ActionBase):
    # A device step makes a remote temporary folder only when it pushes an artifact (_stage).
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("step", "release", "options", "targets", "device", "settings", "wave", "rollout",
                             "name", "version", "artifact", "config", "smoke_test", "soak_seconds", "reason",
                             "from_version", "error", "during") + SERVER_OPTIONS)

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = dict(self._task.args)
        step = args.get("step")
        if step not in CONTROLLER_STEPS + DEVICE_STEPS:
            return dict(result, failed=True, msg=f"step must be one of {', '.join(CONTROLLER_STEPS + DEVICE_STEPS)}")
        try:
            out = getattr(self, f"_step_{step}")(args, task_vars)
        except engine.RolloutPlanError as exc:
            return dict(result, failed=True, msg=str(exc))
        except Exception as exc:  # pylint: disable=broad-except
            if step != "verdict":
                raise
            # a verdict that cannot be reached stops the rollout rather than the run
            out = {"changed": False, "ansible_facts": {"edgeai_abort": {
                "wave": args.get("wave"), "failed": [], "rollback": [],
                "reason": f"controller error while checking the failure budget: {to_text(exc)}"}}}
        finally:
            tmpdir = getattr(self._connection._shell, "tmpdir", None)
            if step in DEVICE_STEPS and tmpdir:
                try:
                    self._remove_tmp_path(tmpdir)
                except Exception:  # pylint: disable=broad-except
                    pass
        row = (out.get("ansible_facts") or {}).get("model_deploy_result")
        if row is not None:
            rollout = self._rollout(args, task_vars) or {}
            if rollout:
                good = engine.successes(rollout["action"], rollout["phase"])
            else:
                good = engine.successes("rollback", "all") if step == "rollback" else \
                    engine.successes("deploy", "stage" if step == "stage" else "all")
            row["ok"] = row.get("result") in good
        result.update(out)
        return result

    # -- helpers ---------------------------------------------------------------------------
    def _hostvar(self, task_vars, host, name, default=None):
        try:
            value = task_vars["hostvars"][host].get(name, default)
        except (KeyError, AnsibleError):
            return default
        return default if value is None else value

    def _rollout(self, args, task_vars):
        rollout = args.get("rollout")
        if rollout is None:
            rollout = self._hostvar(task_vars, "localhost", "edgeai_rollout")
        return rollout

    def _server_args(self, args):
        return {k: args[k] for k in SERVER_OPTIONS if args.get(k) not in (None, "")}

    def _module(self, name, module_args, task_vars):
        """Run a device module; a connection failure is returned as an unreachable result."""
        try:
            return self._execute_module(module_name=name, module_args=module_args, task_vars=task_vars)
        except AnsibleConnectionFailure as exc:
            return {"failed": True, "unreachable": True, "msg": to_text(exc)}

    def _render(self, value, per_device=False):
        """Template the release's strings. On the controller (start), a string that needs a
        device's variables (an artifact URL naming each device's store) stays a template; on a
        device (preflight) it is rendered with that device's variables."""
        if isinstance(value, dict):
            return {k: self._render(v, per_device) for k, v in value.items()}
        if isinstance(value, list):
            return [self._render(v, per_device) for v in value]
        if not isinstance(value, str) or not self._templar.is_possibly_template(value):
            return value
        try:
            return self._templar.template(trust_as_template(value) if per_device else value)
        except AnsibleUndefinedVariable:
            if per_device:
                raise
            return str(value)

    # -- controller steps --------------------------------------------------------------------
    def _step_start(self, args, task_vars):
        """Check the release and normalise the options once, before any device is touched."""
        options = dict(args.get("options") or {})
        playbook_dir = task_vars.get("playbook_dir") or os.getcwd()
        opts = engine.normalise_options(options, os.path.join(os.path.dirname(playbook_dir), "reports"))
        # read as given (-e @release.yml): parts that name a device's own variables are
        # rendered per device in its preflight
        raw = args["release"] if args.get("release") is not None else task_vars.get("edgeai_release")
        release = engine.validate_release(self._render(raw), opts["action"], base_dir=playbook_dir, sha_cache={})
        started = _now()
        run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
        if task_vars.get("awx_job_id") is not None:
            # AWX runs slices of one job at the same time: the job id keeps their reports apart
            run_id += f"-job{task_vars['awx_job_id']}"
        rollout = dict(opts, run_id=run_id, started=started, release=release)
        summary = f"{release['model_name']} {release.get('model_version') or ''}".strip()
        return {"changed": False, "ansible_facts": {"edgeai_rollout": rollout},
                "msg": f"{opts['action']} {summary}, phase {opts['phase']}"}

    def _step_targets(self, args, task_vars):
        """Every targeted device takes an artifact and a smoke test from the release."""
        rollout = self._rollout(args, task_vars)
        if not rollout:
            raise engine.RolloutPlanError(
                "The rollout's controller plays (planning, report) run on localhost, which --limit left out. "
                "Choose devices with -e edgeai_targets=<pattern> instead, or add localhost to the limit "
                "(--limit '<pattern>,localhost').")
        targets = list(args.get("targets") or [])
        devices = {h: {"platform": self._hostvar(task_vars, h, "edge_platform"),
                       "groups": list(self._hostvar(task_vars, h, "group_names", []))} for h in targets}
        if rollout["action"] == "deploy":
            problems = engine.coverage_problems(rollout["release"], devices, rollout["allow_no_smoke_test"])
            if problems:
                raise engine.ReleaseError(
                    "the release does not cover every targeted device: " + "; ".join(problems)
                    + ". Add the missing artifacts or smoke tests (playbooks/build_release.yml computes one), "
                    "narrow edgeai_targets, or set edgeai_allow_no_smoke_test=true to accept devices without one.")
        rollout = dict(rollout, targets=targets)
        return {"changed": False, "ansible_facts": {"edgeai_rollout": rollout}}

    def _records(self, rollout, task_vars):
        """Each target's preflight record of this run (None: it was not reached)."""
        out = {}
        for host in rollout.get("targets", []):
            record = self._hostvar(task_vars, host, "model_deploy_device")
            out[host] = record if record and record.get("run_id") == rollout["run_id"] else None
        return out

    def _results(self, rollout, task_vars, hosts=None):
        """Each device's result of this run, of `hosts` (default: every target) that have one."""
        out = {}
        for host in rollout.get("targets", []) if hosts is None else hosts:
            row = self._hostvar(task_vars, host, "model_deploy_result")
            if row and row.get("run_id") == rollout["run_id"]:
                out[host] = row
        return out

    def _step_plan(self, args, task_vars):
        rollout = self._rollout(args, task_vars)
        plan = engine.make_plan(self._records(rollout, task_vars), rollout)
        if rollout["phase"] == "stage":
            msg = f"stage on {len(plan['order'])} device(s)"
        else:
            msg = f"{len(plan['waves'])} wave(s): " + " | ".join(", ".join(w) for w in plan["waves"])
        return {"changed": False, "ansible_facts": {"edgeai_plan": plan}, "msg": msg}

    def _step_verdict(self, args, task_vars):
        rollout = self._rollout(args, task_vars)
        plan = self._hostvar(task_vars, "localhost", "edgeai_plan") or {}
        wave = int(args.get("wave") or 0)
        outcomes, unread = engine.done_hosts_to_read(plan, wave, self._hostvar(task_vars, "localhost", "edgeai_tally"),
                                                     rollout["run_id"])
        outcomes.update({h: r.get("result") for h, r in self._results(rollout, task_vars, unread).items()})
        abort = engine.wave_verdict(plan, wave, outcomes, rollout)
        if abort:
            abort["rollback"] = engine.rollback_candidates(self._results(rollout, task_vars), rollout)
        return {"changed": False, "ansible_facts": {
            "edgeai_abort": abort, "edgeai_tally": {"run_id": rollout["run_id"], "outcomes": outcomes}}}

    def _step_failed(self, args, task_vars):
        """A device's task failed on the controller: record it (the rescue of a device play)."""
        rollout = self._rollout(args, task_vars) or {}
        host = task_vars.get("inventory_hostname")
        during = args.get("during") or "wave"
        if during == "preflight":
            record = {"status": "preflight_failed", "reason": f"controller error during the preflight: "
                      f"{args.get('error') or 'unknown'}", "run_id": rollout.get("run_id"),
                      "site": task_vars.get("edge_site"), "platform": task_vars.get("edge_platform")}
            return {"changed": False, "ansible_facts": {"model_deploy_device": record}}
        previous = self._hostvar(task_vars, host, "model_deploy_result")
        row = engine.controller_failure(previous, args.get("error"), during, rollout.get("run_id"))
        return {"changed": False, "ansible_facts": {"model_deploy_result": row}}

    def _step_report(self, args, task_vars):
        rollout = self._rollout(args, task_vars)
        if not rollout:
            raise engine.RolloutPlanError("the run did not start (see the first play's error)")
        plan = self._hostvar(task_vars, "localhost", "edgeai_plan") or {}
        abort = self._hostvar(task_vars, "localhost", "edgeai_abort") or {}
        targets = rollout.get("targets", [])
        rows = engine.report_rows(targets, self._records(rollout, task_vars), self._results(rollout, task_vars),
                                  plan, abort)
        release = rollout["release"]
        report = {
            "run_id": rollout["run_id"], "model": release["model_name"], "action": rollout["action"],
            "phase": rollout["phase"], "version": release.get("model_version"),
            "check_mode": bool(self._task.check_mode), "aborted": bool(abort), "abort": abort,
            "on_abort": rollout["on_abort"], "waves": plan.get("waves", []),
            "seconds": round(_now() - float(rollout["started"]), 1), "devices": rows,
            "summary": engine.report_summary(rows),
            # e.g. a site cache that did not answer, so its devices downloaded from the centre
            "warnings": sorted({w for row in rows for w in row.get("warnings") or []}),
        }
        directory = rollout["report_dir"]
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, f"{rollout['action']}-{rollout['run_id']}.json")
        report["file"] = path
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2, sort_keys=False, default=str)
            handle.write("\n")
        os.replace(tmp, path)
        lines = engine.report_table(rows) + ["", "summary: " + json.dumps(report["summary"]), f"report: {path}"]
        lines += [f"WARNING: {w}" for w in report["warnings"]]
        failure = engine.run_failure(report, rollout)
        # the report is a record of the run, not a change to the fleet
        return {"changed": False, "ansible_facts": {"edgeai_report": dict(report, failure=failure)},
                "report": lines}

    # -- device steps ------------------------------------------------------------------------
    def _release_for(self, args, task_vars):
        """The release this device works on: the run's (deploy_model.yml) or the role's own."""
        rollout = self._rollout(args, task_vars)
        if rollout:
            return rollout["release"], rollout
        release = engine.validate_release({k: v for k, v in {
            "model_name": args.get("name"), "model_version": args.get("version") or None,
            "artifacts": args.get("artifact") or None, "config": args.get("config") or None,
            "smoke_test": args.get("smoke_test") or None}.items() if v is not None},
            "deploy" if args.get("version") else "rollback", base_dir=task_vars.get("playbook_dir"), sha_cache={})
        return release, None

    def _step_preflight(self, args, task_vars):
        host = task_vars.get("inventory_hostname")
        release, rollout = self._release_for(args, task_vars)
        settings = engine.device_settings(args.get("settings"), rollout)
        action = rollout["action"] if rollout else "deploy"
        phase = rollout["phase"] if rollout else "all"
        module_args = dict(self._server_args(args), gather=["health", "index", "device", "staged"],
                           models=[release["model_name"]], wait=float(settings.get("server_wait", 0)),
                           root=settings.get("device_root") or "/",
                           artifacts=settings.get("artifacts_dir") or "/var/lib/edgeai/artifacts")
        site = {"site": task_vars.get("edge_site"), "ring": task_vars.get("edge_ring"),
                "order": task_vars.get("edge_rollout_order"), "platform": task_vars.get("edge_platform")}
        info = self._module("edgeai.fleet.inference_server_info", module_args, task_vars)
        if info.get("unreachable"):
            # no record: the report says deferred, and a later run converges the device
            return {"changed": False, "msg": info["msg"], "ansible_facts": {}}
        if info.get("failed"):
            record = {"status": "preflight_failed", "reason": info.get("msg") or "preflight failed",
                      "model": release["model_name"], "target": release.get("model_version"), **site,
                      "run_id": (rollout or {}).get("run_id")}
            return {"changed": False, "ansible_facts": {"model_deploy_device": record}, "msg": record["reason"]}
        require = bool(rollout) and action == "deploy" and not rollout.get("allow_no_smoke_test")
        record = engine.device_status(info, release, action, phase, task_vars.get("group_names") or [], site,
                                      require_smoke_test=require)
        try:
            for key in ("artifact", "config", "smoke_test"):
                if record.get(key):
                    record[key] = self._render(record[key], per_device=True)
        except AnsibleError as exc:
            record.update(status="preflight_failed", reason=f"the release names a variable this device lacks: {exc}")
        if rollout:
            record["run_id"] = rollout["run_id"]
        facts = {"model_deploy_device": record}
        if info.get("device"):
            facts["edge_device"] = info["device"]
        return {"changed": False, "ansible_facts": facts, "msg": f"{host}: {record['status']}"
                + (f" ({record['reason']})" if record.get("reason") else "")}

    def _row(self, record, rollout, **fields):
        row = {"model": record.get("model"), "before": record.get("before"), "target": record.get("target"),
               "run_id": (rollout or {}).get("run_id") or record.get("run_id")}
        row.update(fields)
        return row

    def _events(self, settings, rollout, task_vars):
        if not settings.get("emit_events", True):
            return None
        run_id = (rollout or {}).get("run_id") or settings.get("run_id") or time.strftime(
            "%Y%m%dT%H%M%SZ", time.gmtime())
        events = {"url": settings.get("relay_url") or "http://127.0.0.1:8780", "run_id": run_id,
                  "id_prefix": f"{run_id}.{task_vars.get('inventory_hostname')}"}
        if settings.get("relay_token_file"):
            events["token_file"] = settings["relay_token_file"]
        return events

    def _stage(self, record, release, settings, task_vars, rollout, events=None):
        """Bring the chosen artifact onto the device (a push from the controller goes to a
        temporary folder that Ansible removes afterwards). Returns (module result, warnings)."""
        artifact = dict(record.get("artifact") or {})
        src = artifact.pop("src", None)
        artifact.pop("requires", None)
        module_args = {"name": release["model_name"], "version": release["model_version"],
                       "dest": settings.get("artifacts_dir") or "/var/lib/edgeai/artifacts",
                       "protect_versions": [v for v in (record.get("before"),) if v is not None]}
        module_args.update({k: settings[k] for k in ARTIFACT_SETTINGS if settings.get(k) not in (None, "")})
        module_args.update({k: v for k, v in artifact.items() if v not in (None, "")})
        if events:
            module_args["events"] = events
        if "image" in artifact:
            for key in ("registry_username", "registry_password", "registry_ca_path"):
                if settings.get(key):
                    module_args[key.replace("registry_ca_path", "ca_path")] = settings[key]
        if "url" in artifact:
            for key, option in (("artifact_username", "url_username"), ("artifact_password", "url_password"),
                                ("artifact_ca_path", "ca_path")):
                if settings.get(key):
                    module_args[option] = settings[key]
        if src:
            if self._task.check_mode:
                return {"changed": True, "check_push": True}, []
            tmp = self._connection._shell.tmpdir or self._make_tmp_path()
            remote = self._connection._shell.join_path(tmp, os.path.basename(src))
            self._transfer_file(src, remote)
            self._fixup_perms2((tmp, remote))
            module_args["src"] = remote
        warnings = []
        mirror = engine.cache_sources(record.get("artifact") or {}, settings.get("site_cache"),
                                      settings.get("site_cache_upstream_registry") or "",
                                      settings.get("site_cache_upstream_artifact_url") or "")
        if mirror and not module_args.get("require_staged"):
            via = dict(module_args)
            via.pop("events", None)  # a cache that fails is not the deployment failing
            for key in ("url", "image"):
                if key in mirror:
                    via[key] = mirror[key]
            if mirror.get("ca_path"):
                via["ca_path"] = mirror["ca_path"]
            if "url" in mirror and mirror.get("username"):
                via.update(url_username=mirror["username"], url_password=mirror["password"])
                via.pop("url_token", None)
            if "image" in mirror and mirror.get("username"):
                via.update(registry_username=mirror["username"], registry_password=mirror["password"])
            staged = self._module("edgeai.fleet.model_artifact", via, task_vars)
            if not staged.get("failed") or staged.get("unreachable"):
                staged["fetched_from"] = mirror.get("url") or mirror.get("image")
                return staged, warnings
            source = mirror.get("url") or mirror.get("image")
            warnings.append(f"site cache did not deliver {source} ({to_text(staged.get('msg'))[:200]}): fetching "
                            "from the centre")
        staged = self._module("edgeai.fleet.model_artifact", module_args, task_vars)
        staged["fetched_from"] = "controller" if src else (artifact.get("url") or artifact.get("image"))
        return staged, warnings

    @staticmethod
    def _events_outcome(row, module_result):
        """Events the relay did not take are in the row, and why among its warnings."""
        row["events_undelivered"] = list(module_result.get("events_undelivered") or [])
        if row["events_undelivered"]:
            why = "; ".join(module_result.get("events_errors") or []) or "no answer"
            row["warnings"] = list(row.get("warnings") or []) + [
                f"the event relay did not take {', '.join(row['events_undelivered'])}: {why}"]

    def _step_stage(self, args, task_vars):
        release, rollout = self._release_for(args, task_vars)
        record = args.get("device") or task_vars.get("model_deploy_device")
        if not record:
            # staging on its own needs no running server: the device's platform is enough
            facts = task_vars.get("ansible_facts", {}).get("edge_device") or {}
            platform = facts.get("platform") or task_vars.get("edge_platform") or "generic"
            record = dict(engine.select_for_device(release, platform, task_vars.get("group_names") or []),
                          status="ready", staged=[], platform=platform, model=release["model_name"],
                          target=release.get("model_version"), before=None)
            if not record["artifact"]:
                record.update(status="preflight_failed", reason=f"the release has no artifact for platform {platform}")
        settings = engine.device_settings(args.get("settings"), rollout)
        t0 = _now()
        if record.get("status") != "ready":
            return {"changed": False, "ansible_facts": {"model_deploy_result": self._row(
                record, rollout, result=record.get("status") or "preflight_failed", reason=record.get("reason"))}}
        if release["model_version"] in record.get("staged", []):
            row = self._row(record, rollout, result="already_staged", after=record.get("before"))
            return {"changed": False, "ansible_facts": {"model_deploy_result": row}}
        staged, warnings = self._stage(record, release, settings, task_vars, rollout)
        if staged.get("unreachable"):
            row = self._row(record, rollout, result="deferred", reason=f"unreachable: {staged['msg']}")
        elif staged.get("failed"):
            row = self._row(record, rollout, result="stage_failed", after=record.get("before"),
                            reason=f"staging failed: {staged.get('msg')}")
        else:
            result = ("would_stage" if self._task.check_mode else "staged") if staged.get("changed") \
                else "already_staged"
            row = self._row(record, rollout, result=result, after=record.get("before"),
                            downloaded_bytes=staged.get("downloaded_bytes", 0),
                            fetched_from=redact_url(staged.get("fetched_from")))
        row.update(stage_s=round(_now() - t0, 2), warnings=warnings)
        return {"changed": row["result"] in engine.CHANGED, "ansible_facts": {"model_deploy_result": row}}

    def _step_wave(self, args, task_vars):
        """A run's work on one device in its wave: deploy, stage (stage phase) or for a rollback
        run go back; after an abort, a device on the rollback list goes back from the release."""
        rollout = self._rollout(args, task_vars)
        if not rollout:
            raise engine.RolloutPlanError("step wave does a run's work: it needs the run (rollout), as "
                                          "deploy_model.yml sets it; use step deploy or rollback on their own")
        undo = engine.abort_rollback(rollout, self._hostvar(task_vars, "localhost", "edgeai_abort"),
                                     task_vars.get("inventory_hostname"))
        if undo:
            return self._step_rollback(dict(args, **undo), task_vars)
        if rollout["action"] == "rollback":
            return self._step_rollback(args, task_vars)
        if rollout["phase"] == "stage":
            return self._step_stage(args, task_vars)
        soak = engine.soak_seconds(self._hostvar(task_vars, "localhost", "edgeai_plan"), rollout,
                                   task_vars.get("inventory_hostname"))
        return self._step_deploy(dict(args, soak_seconds=soak), task_vars)

    def _step_deploy(self, args, task_vars):
        """The wave's work on one device: stage unless staged, activate, smoke test, soak,
        roll back on failure. At most two module calls."""
        release, rollout = self._release_for(args, task_vars)
        record = args.get("device") or task_vars.get("model_deploy_device") or {}
        settings = engine.device_settings(args.get("settings"), rollout)
        try:
            row = self._deploy(release, rollout, record, settings, args, task_vars)
        except Exception as exc:  # pylint: disable=broad-except
            # a controller-side failure: the device may have changed, the abort rolls it back
            row = self._row(record, rollout, result="failed", maybe_changed=True,
                            reason=f"controller error: {to_text(exc)}")
            row["traceback"] = traceback.format_exc(limit=5)
        return {"changed": row["result"] in engine.CHANGED, "ansible_facts": {"model_deploy_result": row},
                "msg": f"{row['result']}" + (f": {row['reason']}" if row.get("reason") else "")}

    def _deploy(self, release, rollout, record, settings, args, task_vars):
        target = release["model_version"]
        if record.get("status") != "ready":
            return self._row(record, rollout, result=record.get("status") or "preflight_failed",
                             after=record.get("before"), reason=record.get("reason"))
        events = self._events(settings, rollout, task_vars)
        t0 = _now()
        row = self._row(record, rollout, downloaded_bytes=0, warnings=[])
        if target not in record.get("staged", []):
            if settings.get("require_staged"):
                return dict(row, result="failed", after=record.get("before"),
                            reason=f"{release['model_name']} {target} is not staged on this device (activate phase: "
                                   "the switch moves no bytes); run the stage phase first")
            staged, warnings = self._stage(record, release, settings, task_vars, rollout, events)
            row["warnings"] = warnings
            row["stage_s"] = round(_now() - t0, 2)
            if staged.get("unreachable"):
                return dict(row, result="deferred", reason=f"unreachable during the rollout: {staged['msg']}")
            if staged.get("failed"):
                self._events_outcome(row, staged)
                return dict(row, result="failed", after=record.get("before"),
                            reason=f"staging failed: {staged.get('msg')}")
            if staged.get("check_push") or (self._task.check_mode and staged.get("changed")):
                return dict(row, result=engine.switch_result(record.get("before"), target, True), after=target)
            row["downloaded_bytes"] = staged.get("downloaded_bytes", 0)
            row["fetched_from"] = redact_url(staged.get("fetched_from"))
        else:
            row["stage_s"] = 0.0
        t1 = _now()
        smoke = dict(record.get("smoke_test") or {})
        module_args = dict(self._server_args(args), name=release["model_name"], version=target, state="present",
                           repository=settings.get("repository") or "/var/lib/edgeai/models",
                           artifacts=settings.get("artifacts_dir") or "/var/lib/edgeai/artifacts",
                           smoke_test=smoke, load_timeout=float(settings.get("load_timeout") or 300))
        if record.get("config"):
            module_args["config"] = record["config"]
        soak = int(args.get("soak_seconds") or 0)
        if soak > 0:
            module_args["soak"] = {"seconds": soak}
        if events:
            module_args["events"] = events
        activated = self._module("edgeai.fleet.inference_model", module_args, task_vars)
        row["activate_s"] = round(_now() - t1, 2)
        self._events_outcome(row, activated)
        if activated.get("unreachable"):
            return dict(row, result="deferred", maybe_changed=True,
                        reason=f"unreachable during the rollout: {activated['msg']}")
        if activated.get("failed"):
            rolled = bool(activated.get("rolled_back"))
            return dict(row, result="rolled_back" if rolled else "failed",
                        after=activated.get("active_version", record.get("before")),
                        reason=activated.get("reason") or activated.get("msg"))
        row.update(load_time_s=activated.get("load_time_s"), smoke_latency_ms=activated.get("smoke_latency_ms"),
                   soak_s=(activated.get("soak") or {}).get("seconds"))
        if not activated.get("changed"):
            return dict(row, result="unchanged", after=target)
        result = engine.switch_result(record.get("before"), target, bool(self._task.check_mode))
        return dict(row, result=result, after=activated.get("active_version", target))

    def _step_rollback(self, args, task_vars):
        release, rollout = self._release_for(args, task_vars)
        record = args.get("device") or task_vars.get("model_deploy_device") or {}
        settings = engine.device_settings(args.get("settings"), rollout)
        previous = task_vars.get("model_deploy_result") or {}
        row = self._row(record, rollout, **{k: previous[k] for k in ("stage_s", "downloaded_bytes", "wave")
                                            if k in previous})
        module_args = dict(self._server_args(args), name=release["model_name"], state="rolled_back",
                           repository=settings.get("repository") or "/var/lib/edgeai/models",
                           artifacts=settings.get("artifacts_dir") or "/var/lib/edgeai/artifacts",
                           load_timeout=float(settings.get("load_timeout") or 300),
                           reason=args.get("reason") or "rollback requested")
        if args.get("from_version") not in (None, ""):
            module_args["from_version"] = int(args["from_version"])
        events = self._events(settings, rollout, task_vars)
        if events:
            module_args["events"] = events
        t0 = _now()
        done = self._module("edgeai.fleet.inference_model", module_args, task_vars)
        row["activate_s"] = round(_now() - t0, 2)
        self._events_outcome(row, done)
        if done.get("unreachable"):
            row.update(result="rollback_failed", reason=f"unreachable: {done['msg']}")
        elif done.get("failed"):
            row.update(result="rollback_failed", reason=done.get("msg"))
        elif not done.get("changed") and args.get("from_version") not in (None, "") and previous.get("result"):
            # after an abort, a device that never switched keeps its own result
            row = dict(previous, activate_s=row["activate_s"], after=done.get("active_version"),
                       reason="; ".join(x for x in (previous.get("reason"), done.get("msg")) if x))
        else:
            row.update(result="rolled_back" if done.get("changed") else "unchanged",
                       after=done.get("active_version"), reason=args.get("reason") or "rollback requested")
        return {"changed": row["result"] == "rolled_back", "ansible_facts": {"model_deploy_result": row},
                "msg": row["result"]}
