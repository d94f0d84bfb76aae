#!/usr/bin/python
# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: device_facts
short_description: Detect an edge device's platform, accelerator stack and container engine
version_added: 0.1.0
description:
  - Sets C(ansible_facts.edge_device) with the platform (NVIDIA Jetson, Google Coral or generic),
    board model, SoC, container-image architecture, the Jetson L4T/JetPack/CUDA/TensorRT
    versions and power mode, the Coral variant, Edge TPU nodes, USB ids and runtime package,
    the container engine's state, free space where models are stored and total memory.
  - Reads files (device tree, C(/etc/nv_tegra_release), the dpkg database,
    C(/etc/docker/daemon.json) ...) under O(root) rather than running commands. The only command
    it may run is C(docker version), when the docker client exists and O(query_engine=true).
  - An unknown board is reported as C(generic) with what was seen; unreadable or truncated
    files give a result plus entries in C(warnings), never a failure.
author:
  - edgeai.fleet contributors (@edgeai)
extends_documentation_fragment:
  - edgeai.fleet._attributes
  - edgeai.fleet._attributes.info_module
  - edgeai.fleet._attributes.facts
options:
  root:
    description:
      - Filesystem root to inspect. C(/) on a real device; a lab device sets it to the tree that
        holds the parts a container cannot make real (C(/opt/edgeai-lab/root)); tests point it at
        a profile tree.
    type: path
    default: /
  models_path:
    description:
      - Directory where models are stored; its free bytes are reported (the nearest existing
        parent is measured when it does not exist yet). Relative to O(root).
    type: path
    default: /var/lib/edgeai/models
  query_engine:
    description:
      - Run C(docker version) to learn the running engine's version. When false, or when no
        docker client exists, the version comes from the dpkg database.
    type: bool
    default: true
attributes:
  facts:
    details: Sets C(ansible_facts.edge_device).
notes:
  - Architecture is the running kernel's (C(uname -m)) mapped to container-image names.
  - The JetPack release is taken from a map of published L4T releases; an L4T release the map
    does not know is reported as C(unknown).
"""

EXAMPLES = r"""
- name: Learn what the device is
  edgeai.fleet.device_facts:

- name: Inspect a lab device, whose device tree lives under another root
  edgeai.fleet.device_facts:
    root: "{{ edge_device_root | default('/') }}"
    models_path: /srv/models

- name: Refuse to go on without a JetPack 6 device
  ansible.builtin.assert:
    that:
      - ansible_facts.edge_device.platform == 'jetson'
      - ansible_facts.edge_device.jetson.l4t_major == '36'
"""

RETURN = r"""
ansible_facts:
  description: Facts to add to ansible_facts.
  returned: always
  type: complex
  contains:
    edge_device:
      description: What was detected.
      returned: always
      type: complex
      contains:
        platform:
          description: C(jetson), C(coral) or C(generic).
          type: str
          returned: always
          sample: jetson
        model:
          description: Board or module model string (device tree, else DMI product name); null if none.
          type: str
          returned: always
          sample: NVIDIA Jetson AGX Orin Developer Kit
        soc:
          description:
            - SoC from the device tree's compatible list (tegra210, tegra194, tegra234, imx8mq ...); null if unknown.
          type: str
          returned: always
          sample: tegra234
        compatible:
          description: The device tree's compatible strings.
          type: list
          elements: str
          returned: always
        machine:
          description: Kernel machine name (C(uname -m)).
          type: str
          returned: always
          sample: aarch64
        arch:
          description: Container image architecture (aarch64 -> arm64, x86_64 -> amd64, armv7l -> arm).
          type: str
          returned: always
          sample: arm64
        kernel:
          description: Running kernel release.
          type: str
          returned: always
        root:
          description: The root that was inspected.
          type: str
          returned: always
          sample: /
        usb_ids:
          description: All USB C(vendor:product) ids seen under /sys/bus/usb/devices.
          type: list
          elements: str
          returned: always
        dpkg_available:
          description: Whether a dpkg database was found (package versions depend on it).
          type: bool
          returned: always
        memory_total_bytes:
          description: MemTotal from /proc/meminfo, in bytes; null when unreadable.
          type: int
          returned: always
        warnings:
          description: What could not be read or made sense of.
          type: list
          elements: str
          returned: always
        storage:
          description: Space where models are stored.
          type: dict
          returned: always
          contains:
            path:
              description: The O(models_path) asked for.
              type: str
            checked_path:
              description: The existing directory that was measured (O(models_path) or its nearest parent).
              type: str
            exists:
              description: Whether O(models_path) exists.
              type: bool
            free_bytes:
              description: Bytes available to unprivileged users.
              type: int
            total_bytes:
              description: Size of that file system.
              type: int
        jetson:
          description: Jetson details; null on other platforms.
          type: dict
          returned: always
          contains:
            l4t:
              description: L4T release (C(36.3.0)); null when neither nv_tegra_release nor nvidia-l4t-core tells it.
              type: str
            l4t_major:
              description: L4T major release (C(32), C(35), C(36)).
              type: str
            l4t_source:
              description: Where the L4T release came from.
              type: str
            board:
              description: BOARD field of nv_tegra_release (t210ref, t186ref, generic).
              type: str
            jetpack:
              description: JetPack release mapped from the L4T release, or C(unknown).
              type: str
              sample: "6.0"
            cuda:
              description: CUDA version (usr/local/cuda/version.json, version.txt or the cuda packages); null if none.
              type: str
            tensorrt:
              description: TensorRT version from the dpkg database; null if none.
              type: str
            power_mode:
              description: nvpmodel state; null where nvpmodel is not installed.
              type: dict
              contains:
                id:
                  description: Current mode id (from /var/lib/nvpmodel/status, else the configured default).
                  type: int
                name:
                  description: Name of the current mode.
                  type: str
                default_id:
                  description: Default mode id in /etc/nvpmodel.conf.
                  type: int
                source:
                  description: Where the current mode was read.
                  type: str
                modes:
                  description: Mode id (as a string) -> name.
                  type: dict
        coral:
          description: Coral details; null on other platforms.
          type: dict
          returned: always
          contains:
            variant:
              description: C(dev_board), C(usb) or C(pcie).
              type: str
            apex_nodes:
              description: /dev/apex_N nodes present.
              type: list
              elements: str
            usb_ids:
              description: Coral USB Accelerator ids seen (1a6e:089a before firmware load, 18d1:9302 after).
              type: list
              elements: str
            usb_firmware_loaded:
              description: Whether the USB Accelerator shows its post-firmware id 18d1:9302.
              type: bool
            edgetpu_runtime:
              description: Installed Edge TPU runtime (package and version); null if none.
              type: dict
              contains:
                package:
                  description: libedgetpu1-std or libedgetpu1-max.
                  type: str
                version:
                  description: Package version.
                  type: str
            gasket_dkms:
              description: Installed gasket-dkms version; null if none.
              type: str
            apex_module:
              description: The apex kernel driver.
              type: dict
              contains:
                loaded:
                  description: Whether /sys/module/apex exists.
                  type: bool
                built_for_kernel:
                  description: Whether an apex.ko exists under /lib/modules/<running kernel>.
                  type: bool
        container_engine:
          description: The Docker engine.
          type: dict
          returned: always
          contains:
            installed:
              description: Whether dockerd or a Docker engine package is present.
              type: bool
            package:
              description: Installed engine package (docker.io, docker-ce, moby-engine); null if none.
              type: str
            package_version:
              description: Its dpkg version.
              type: str
            version:
              description: Engine version (from the running daemon when it answered, else the package).
              type: str
            client_version:
              description: Docker client version, when C(docker version) ran.
              type: str
            running:
              description: Whether the daemon answered C(docker version); null when not asked.
              type: bool
            daemon_config:
              description: Path of daemon.json when it exists.
              type: str
            runtimes:
              description: Registered runtimes (runc plus those in daemon.json).
              type: list
              elements: str
            default_runtime:
              description: The default runtime.
              type: str
            nvidia_runtime:
              description: Whether an C(nvidia) runtime is registered.
              type: bool
            nvidia_default:
              description: Whether C(nvidia) is the default runtime.
              type: bool
            cdi_specs:
              description: CDI spec files in /etc/cdi and /var/run/cdi.
              type: list
              elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.edgeai.fleet.plugins.module_utils._device_facts import run_module


def main():
    run_module(AnsibleModule)


if __name__ == "__main__":
    main()
