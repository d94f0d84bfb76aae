"""The lab's basics, checked the way the collection meets them: over SSH, as root, with the lab key."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from edgeai_lab.access import REPO as ROOT
from edgeai_lab.access import devices_by, lab_cli

pytestmark = [pytest.mark.lab, pytest.mark.docker]
PROFILES = ROOT / "tests" / "lab" / "profiles"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_every_device_answers_over_ssh_with_its_name(lab, lab_ssh):
    assert devices_by(lab), "the lab has no devices"
    for name in devices_by(lab):
        dev = lab["devices"][name]
        assert dev["ssh"]["host"] == "127.0.0.1"
        out = lab_ssh(name, "hostname && id -u && python3 -c 'import sys; print(sys.version_info[0])'").stdout.split()
        assert out == [name, "0", "3"], f"{name}: {out}"


def test_every_device_runs_systemd_and_its_own_docker_engine(lab, lab_ssh):
    for name in devices_by(lab):
        out = lab_ssh(name, "ps -p 1 -o comm= && systemctl is-active docker ssh && docker info --format '{{.Driver}}'")
        assert out.stdout.split() == ["systemd", "active", "active", "overlay2"], f"{name}: {out.stdout}"


def test_default_fleet_shape(lab):
    fleet = [lab["devices"][n] for n in devices_by(lab)]
    sites = {d["site"] for d in fleet}
    assert len(sites) >= 2
    for site in sites:
        platforms = {d["platform"] for d in fleet if d["site"] == site}
        assert {"jetson", "coral"} <= platforms, f"{site} has {platforms}"


def test_jetson_profile_is_what_detection_sees(lab, lab_ssh):
    jetsons = devices_by(lab, platform="jetson")
    assert jetsons
    for name in jetsons:
        profile = lab["devices"][name]["profile"]
        prof = yaml.safe_load((PROFILES / profile / "profile.yml").read_text())
        root = PROFILES / profile / "root"
        out = lab_ssh(name, "base64 -w0 /etc/nv_tegra_release; echo; "
                            "base64 -w0 /opt/edgeai-lab/root/etc/nv_tegra_release; echo; "
                            "base64 -w0 /opt/edgeai-lab/root/proc/device-tree/model; echo; "
                            "base64 -w0 /opt/edgeai-lab/root/proc/device-tree/compatible; echo").stdout.split()
        expected = [_b64(root / "etc/nv_tegra_release")] * 2 + [
            _b64(root / "proc/device-tree/model"), _b64(root / "proc/device-tree/compatible")]
        assert out == expected, name
        # the stand-in packages are really installed: dpkg's own database says so
        for pkg in prof["packages"]:
            ver = lab_ssh(name, f"dpkg-query -W -f '${{Status}} ${{Version}}' {pkg['name']}").stdout
            assert ver == f"install ok installed {pkg['version']}", f"{name}: {pkg['name']}: {ver}"
        cuda = lab_ssh(name, "cat /opt/edgeai-lab/root/usr/local/cuda/version.json /usr/local/cuda/version.txt "
                             "2>/dev/null", check=False).stdout
        assert prof["cuda_version"] in cuda


def test_nvidia_runtime_stand_in_hands_over_to_runc(lab, lab_ssh):
    name = devices_by(lab, platform="jetson")[0]
    out = lab_ssh(name, "nvidia-container-runtime --version").stdout
    assert "runc version" in out
    conf = lab_ssh(name, "d=$(mktemp -d) && nvidia-ctk runtime configure --runtime=docker "
                         "--config=$d/daemon.json >/dev/null && cat $d/daemon.json && rm -r $d").stdout
    assert json.loads(conf)["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"


def test_coral_profiles(lab, lab_ssh):
    boards = devices_by(lab, hardware="coral-dev-board")
    usbs = devices_by(lab, hardware="coral-usb")
    assert boards and usbs
    for name in boards:
        out = lab_ssh(name, "test -c /dev/apex_0 && test -c /opt/edgeai-lab/root/dev/apex_0 && "
                            "tr -d '\\0' < /opt/edgeai-lab/root/proc/device-tree/model && echo && "
                            "dpkg-query -W -f '${Version}' libedgetpu1-std").stdout.splitlines()
        assert out == ["Freescale i.MX8MQ Phanbell", "16.0"], name
    for name in usbs:
        out = lab_ssh(name, "cd /opt/edgeai-lab/root/sys/bus/usb/devices && cat */idVendor */idProduct | sort").stdout
        assert "1a6e" in out.split() and "089a" in out.split(), name
        assert lab_ssh(name, "test -e /dev/apex_0", check=False).returncode != 0
        assert lab_ssh(name, "test -e /proc/device-tree/model || test -e /opt/edgeai-lab/root/proc/device-tree",
                       check=False).returncode != 0


def test_registry_refuses_anonymous_and_serves_with_auth(lab, lab_ssh, registry_credentials):
    ctx = ssl.create_default_context(cafile=lab["ca_cert"])
    url = f"https://{lab['registry']['host_address']}/v2/_catalog"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url, context=ctx, timeout=10)
    assert err.value.code == 401
    req = urllib.request.Request(url)
    token = base64.b64encode(f"{registry_credentials['username']}:{registry_credentials['password']}".encode())
    req.add_header("Authorization", "Basic " + token.decode())
    with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
        catalog = json.load(resp)["repositories"]
    assert "edgeai/tritonserver" in catalog
    # from a device: TLS verified against the lab CA by name; anonymous pull refused
    name = devices_by(lab)[0]
    ref = lab["images"]["tritonserver"]["ref"]
    code = lab_ssh(name, "curl -s -o /dev/null -w '%{http_code}' https://registry.edgeai.lab:5443/v2/").stdout
    assert code == "401"
    # an empty client config: no login (the engine keeps the one bootstrap.yml gave it)
    pull = lab_ssh(name, f"d=$(mktemp -d); DOCKER_CONFIG=$d docker pull {ref}; rc=$?; rm -rf $d; exit $rc", check=False)
    assert pull.returncode != 0 and "no basic auth credentials" in pull.stderr


def test_apt_repo_is_signed_and_checked(lab, lab_ssh):
    name = devices_by(lab, platform="jetson")[0]
    suite = lab["devices"][name]["profile"]
    listfile = lab_ssh(name, "ls /etc/apt/sources.list.d/edgeai-lab-*.list").stdout.strip()
    ok = lab_ssh(name, f"apt-get -o Dir::Etc::sourcelist={listfile} -o Dir::Etc::sourceparts=- update")
    assert "InRelease" in ok.stdout and ok.returncode == 0, suite
    # the same source with a key that did not sign it: apt refuses the repository
    bad = lab_ssh(name, "set -e; d=$(mktemp -d); export GNUPGHOME=$d; "
                        "gpg -q --batch --passphrase '' "
                        "--quick-gen-key 'other <o@example.invalid>' ed25519 sign never; "
                        "gpg -q --export > $d/other.gpg; "
                        f"sed \"s#signed-by=[^]]*#signed-by=$d/other.gpg#\" {listfile} > $d/bad.list; "
                        "mkdir -p $d/lists/partial; "
                        "apt-get -o Dir::Etc::sourcelist=$d/bad.list -o Dir::Etc::sourceparts=- "
                        "-o Dir::State::Lists=$d/lists update 2>&1 || true; "
                        "rm -rf $d", check=False)
    assert "NO_PUBKEY" in bad.stdout or "not signed" in bad.stdout, bad.stdout


@pytest.fixture
def scratch_device(lab):
    """scratch_device(profile) -> (name, ssh endpoint): a device of the test's own, removed after it."""
    made = []

    def make(profile: str) -> tuple[str, dict]:
        name = f"labtest-{uuid.uuid4().hex[:6]}"
        proc = lab_cli("device", "add", name, "--profile", profile, "--site", "site-t", "--no-inventory",
                       timeout=600)
        assert proc.returncode == 0, proc.stderr
        made.append(name)
        return name, json.loads(proc.stdout)

    yield make
    for name in made:
        lab_cli("device", "rm", name, timeout=300)


def _ssh(ep: dict, script: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    ssh = ["ssh", "-i", ep["identity_file"], "-p", str(ep["port"]), "-o", "BatchMode=yes", "-o",
           "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
    return subprocess.run([*ssh, f"root@{ep['address']}", script], capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_libedgetpu_max_asks_for_the_eula(lab, scratch_device):
    """On a Coral USB host of the test's own (nothing preinstalled): -max refuses without the
    debconf answer, installs with it, and takes the place of -std."""
    ep = scratch_device("coral-usb")[1]
    setup = ("set -e; "
             f"curl -fsS -o /usr/share/keyrings/coral.gpg {lab['apt']['key_url']}; "
             "echo \"deb [signed-by=/usr/share/keyrings/coral.gpg] "
             f"{lab['apt']['url']} coral-edgetpu-stable main\" > /etc/apt/sources.list.d/coral.list; "
             "apt-get -qq -o Dir::Etc::sourcelist=sources.list.d/coral.list -o Dir::Etc::sourceparts=- update; "
             "export DEBIAN_FRONTEND=noninteractive; ")
    refused = _ssh(ep, setup + "apt-get -y install libedgetpu1-max 2>&1; echo rc=$?")
    assert "rc=0" not in refused.stdout and "accepted-eula" in refused.stdout, refused.stdout + refused.stderr
    accepted = _ssh(ep, setup + "dpkg --purge libedgetpu1-max >/dev/null 2>&1 || true; "
                                "echo 'libedgetpu1-max libedgetpu/accepted-eula boolean true' "
                                "| debconf-set-selections; "
                                "apt-get -y install libedgetpu1-max >/dev/null 2>&1; echo rc=$?; "
                                "dpkg-query -W -f '${Status}' libedgetpu1-max; echo; "
                                "apt-get -y install libedgetpu1-std >/dev/null 2>&1; "
                                "dpkg-query -W -f '${Status}|' libedgetpu1-max libedgetpu1-std")
    lines = accepted.stdout.splitlines()
    assert lines[:2] == ["rc=0", "install ok installed"], accepted.stdout + accepted.stderr
    assert lines[2].split("|")[:2] == ["unknown ok not-installed", "install ok installed"], lines[2]


def test_inventories_describe_the_running_lab(lab):
    lab = json.loads(lab_cli("status", "--json").stdout)  # now: others may have added devices
    listed = {n for n, d in lab["devices"].items() if d["origin"] != "molecule"}  # molecule has its own
    assert set(devices_by(lab)) <= listed
    hosts = yaml.safe_load(Path(lab["inventory"]["hosts"]).read_text())
    assert set(hosts["all"]["hosts"]) == listed
    for name, hv in hosts["all"]["hosts"].items():
        dev = lab["devices"][name]
        assert (hv["ansible_port"], hv["edge_site"], hv["edge_platform"]) == (dev["port"], dev["site"], dev["platform"])
    text = Path(lab["inventory"]["hosts"]).read_text() + Path(lab["inventory"]["devices"]).read_text()
    password = json.loads(Path(lab["registry"]["credentials_file"]).read_text())["password"]
    assert password not in text
    assert oct(Path(lab["registry"]["credentials_file"]).stat().st_mode & 0o777) == "0o600"
    reg = yaml.safe_load(Path(lab["inventory"]["devices"]).read_text())
    assert {d["id"] for d in reg["devices"]} == listed
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "ansible-inventory"), "-i", lab["inventory"]["hosts"], "--list"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120, check=True)
    groups = json.loads(out.stdout)
    assert set(groups["platform_jetson"]["hosts"]) == set(devices_by(lab, platform="jetson", origin=None)) & listed


def _container_ids(names: list[str]) -> dict[str, str]:
    out = subprocess.run(["docker", "inspect", "--format", "{{.Name}} {{.Id}}",
                          *[f"edgeai-lab-{n}" for n in names]], capture_output=True, text=True, check=True).stdout
    return dict(line.split() for line in out.splitlines())


def test_second_lab_up_reuses_everything(lab):
    fleet = devices_by(lab)
    before = {n: lab["devices"][n]["port"] for n in fleet}
    ids = _container_ids(fleet)
    proc = lab_cli("up")
    assert proc.returncode == 0, proc.stderr
    after = json.loads(lab_cli("status", "--json").stdout)
    assert {n: after["devices"][n]["port"] for n in fleet} == before
    assert _container_ids(fleet) == ids


def test_a_device_added_again_elsewhere_is_made_again(lab):
    """A container the lab finds under a device's name is kept only if this lab made it so: the same
    name added again at another site is made again (as one left by another checkout's lab is, whose
    SSH key this lab's would not open)."""
    name = f"labtest-{uuid.uuid4().hex[:6]}"
    try:
        for site in ("site-t", "site-u"):
            proc = lab_cli("device", "add", name, "--profile", "generic", "--site", site, "--no-inventory",
                           timeout=600)
            assert proc.returncode == 0, proc.stderr
            ep = json.loads(proc.stdout)
            said = _ssh(ep, "cat /etc/edgeai-lab/device.json")
            assert said.returncode == 0, said.stderr
            assert json.loads(said.stdout)["site"] == site
        assert "made by another lab" in proc.stderr
    finally:
        lab_cli("device", "rm", name, timeout=300)


def test_a_device_that_refuses_the_lab_key_fails_the_bring_up(lab):
    """What the label cannot see (a device whose root no longer takes the lab key) still stops
    `device add` / `lab up`, with the device and the SSH answer named."""
    name = f"labtest-{uuid.uuid4().hex[:6]}"
    args = ("device", "add", name, "--profile", "generic", "--site", "site-t", "--no-inventory")
    try:
        assert lab_cli(*args, timeout=600).returncode == 0
        subprocess.run(["docker", "exec", f"edgeai-lab-{name}", "sh", "-c",
                        "echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKeyOtherKeyOtherKeyOtherKeyOtherKey0 other' "
                        "> /root/.ssh/authorized_keys"], check=True, timeout=60)
        proc = lab_cli(*args, timeout=600)
        assert proc.returncode != 0
        assert f"{name}: root cannot log in over SSH" in proc.stderr and "Permission denied" in proc.stderr
    finally:
        lab_cli("device", "rm", name, timeout=300)


def test_webhook_receiver_answers_devices_over_tls(lab, lab_ssh):
    """The lab starts the events engineer's receiver when tests/lab/webhook_receiver exists."""
    if not (ROOT / "tests/lab/webhook_receiver/webhook_receiver/__main__.py").exists():
        pytest.fail("tests/lab/webhook_receiver is missing")
    assert lab["webhook"], "the lab did not start the webhook receiver (see .lab/logs/webhook.log)"
    name = devices_by(lab)[0]
    code = lab_ssh(name, f"curl -s -o /dev/null -w '%{{http_code}}' {lab['webhook']['url']}/").stdout
    assert code.isdigit() and 200 <= int(code) < 500, code


def test_nvidia_runtime_runs_containers_through_runc(lab, scratch_device):
    ep = scratch_device("orin-nano")[1]  # the test restarts this device's engine
    script = (
        "set -e; nvidia-ctk runtime configure --runtime=docker >/dev/null; systemctl restart docker; "
        "r=$(mktemp -d); cp --parents /usr/bin/dash /usr/lib/x86_64-linux-gnu/libc.so.6 "
        "/usr/lib64/ld-linux-x86-64.so.2 $r; ln -s usr/bin $r/bin; ln -s usr/lib64 $r/lib64; ln -s usr/lib $r/lib; "
        "tar -C $r -c . | docker import - lab-mini >/dev/null; "
        "docker info --format '{{json .Runtimes}}'; "
        "docker run --rm --runtime nvidia lab-mini /bin/dash -c 'echo via-nvidia-runtime'"
    )
    out = _ssh(ep, script)
    assert out.returncode == 0, out.stderr
    runtimes, said = out.stdout.splitlines()[-2:]
    assert json.loads(runtimes)["nvidia"]["path"] == "nvidia-container-runtime"
    assert said == "via-nvidia-runtime"
