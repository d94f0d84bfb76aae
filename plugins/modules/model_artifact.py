#!/usr/bin/python
# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: model_artifact
short_description: Bring one version of a model's files onto a device, verified and staged
version_added: 0.1.0
description:
  - Fetches a model's files from an https URL (resumable download, sha256 required), from a path
    already on the device, or from an OCI image in a registry (the model repository is taken
    from the image's layers through the registry HTTP API v2; no container engine needed).
  - Verifies the bytes (sha256 of the download or file; every image blob against its digest),
    unpacks tar or zip archives refusing absolute paths, C(..) components, links that leave the
    destination, hard links to outside members and device nodes, and stages the result
    atomically (a temporary directory next to the target, then a rename) as
    C(<dest>/<name>/<version>/).
  - Unpacking never writes, changes a mode or copies through a link, whatever put the link there
    (an earlier member, an earlier image layer). After each archive and each layer every link is
    resolved against the files on disk, following chains of links; one that leads outside refuses
    the artifact. Archive bombs are refused by O(max_unpacked_mb) and O(max_members), a truncated or
    corrupt archive with a clear error. A refused artifact leaves nothing behind and the staged
    versions as they were.
  - An artifact that is a Triton model directory (C(config.pbtxt) plus numbered version folders)
    gives the folder of O(version) (or its only one) and its C(config.pbtxt); any other content
    is taken as the version's files. One folder that wraps the whole archive is looked into. A
    C(config.pbtxt) found this way is staged with the files for M(edgeai.fleet.inference_model) to use.
  - Keeps the last O(keep_versions) versions of the model for rollback.
  - Reports C(changed) only when the staged bytes change. A second run with the same source
    downloads nothing (the staged version's manifest records the source and a digest of the
    files, which is checked against the disk).
  - Refuses, before writing, when the filesystem of O(dest) lacks room for the download or the
    unpacked files plus O(min_free_space_mb).
author:
  - edgeai.fleet contributors (@edgeai)
extends_documentation_fragment:
  - edgeai.fleet._events
  - edgeai.fleet._attributes
options:
  name:
    description: Model name (the folder name in the model repository).
    type: str
    required: true
  version:
    description: Version number to stage the files as (a positive integer, as in Triton's layout).
    type: int
    required: true
  dest:
    description: Root of the staged artifacts on the device.
    type: path
    default: /var/lib/edgeai/artifacts
  url:
    description:
      - https URL of the artifact (a tar, tar.gz, zip or single model file). Needs O(sha256).
      - An interrupted download is resumed with an HTTP Range request, within the run (O(retries))
        and in the next run (the partial file is kept in C(<dest>/.downloads/)).
      - http URLs are accepted; then only O(sha256) protects the bytes, and no credential
        (O(url_token), O(url_username)/O(url_password), O(headers), C(user:pass@) in the URL) is
        sent over them to another machine unless O(allow_insecure_credentials) is set.
      - A redirect is followed; one to another scheme, host or port carries none of those
        credentials (a store that redirects to presigned storage URLs works unchanged).
      - Not logged, as it may be presigned or hold C(user:pass@). The result returns it as RV(url),
        with credentials redacted.
    type: str
  sha256:
    description:
      - Expected sha256 of the file at O(url) or O(src) (hex, optionally prefixed C(sha256:)).
        Required with O(url).
      - When O(src) is a directory, it is checked against the directory's tree digest (over names,
        contents and exec bits; the hex of the RV(source_id) C(tree:<hex>) that a run reports), and
        the copy is checked again after copying.
    type: str
  headers:
    description:
      - Extra HTTP headers for O(url) (not logged). They are treated as credentials (see O(url)).
    type: dict
    default: {}
  url_token:
    description: Bearer token for O(url) (not logged).
    type: str
  allow_insecure_credentials:
    description:
      - Send the credentials of O(url) (O(url_token), O(url_username)/O(url_password), O(headers),
        C(user:pass@) in the URL) over plain http to another machine, and the registry's
        credentials (O(registry_username)/O(registry_password), its tokens) to a registry or token
        realm over plain http. Anyone on the network can then read them.
      - Without it such a request fails before anything is sent (also in check mode). Plain http to
        the device's own loopback (C(127.0.0.1), C(::1), C(localhost)) never leaves the device and is
        allowed either way.
    type: bool
    default: false
    version_added: 0.1.0
  src:
    description:
      - Path ON THE DEVICE of an archive, a single model file or a directory. To ship a file from
        the controller (devices without internet), copy it first with M(ansible.builtin.copy);
        the role P(edgeai.fleet.inference_server#role) does so.
    type: path
  image:
    description:
      - OCI image holding the model repository, C(registry[:port]/repository[:tag|@sha256:digest]).
        Reached over https (O(validate_certs), O(ca_path)); an image index is resolved to the
        manifest of the device's architecture.
    type: str
  image_path:
    description: Folder inside the image that holds the model. Defaults to C(/models/<name>).
    type: str
  registry_username:
    description: User for the registry (basic auth, or to obtain a bearer token).
    type: str
  registry_password:
    description: Password for the registry (not logged).
    type: str
  registry_auth_hosts:
    description:
      - Hosts (C(host) or C(host:port)) besides the registry's own that may issue its bearer tokens.
        A registry answers a request with a token realm, a URL the client asks for a token with the
        registry's credentials; a realm on any other host is refused and nothing is sent there, so a
        hostile or compromised registry cannot collect the credentials elsewhere.
      - The realm must use https either way (plain http only on the device's loopback, or with
        O(allow_insecure_credentials)).
    type: list
    elements: str
    default: []
    version_added: 0.1.0
  format:
    description: What the file at O(url) or O(src) is; C(auto) detects zip, tar (any compression) or a single file.
    type: str
    choices: [auto, tar, zip, file]
    default: auto
  filename:
    description: Name to stage a single-file artifact as. Defaults to the last part of O(url) or O(src).
    type: str
  subdir:
    description: Only take this folder of the archive.
    type: str
  keep_versions:
    description: How many staged versions of the model to keep (the oldest numbers go first; O(version) always stays).
    type: int
    default: 3
  protect_versions:
    description:
      - Versions never removed by O(keep_versions), such as the one the server serves now, which
        a rollback returns to.
    type: list
    elements: int
    default: []
    version_added: 0.1.0
  min_free_space_mb:
    description: Free space that must remain on the filesystem of O(dest) after the download and after unpacking.
    type: int
    default: 100
  validate_certs:
    description: Verify TLS certificates of O(url) and the registry.
    type: bool
    default: true
  ca_path:
    description: PEM CA bundle on the device for O(url) and the registry.
    type: path
  timeout:
    description: Seconds to wait for one network read.
    type: float
    default: 60.0
  retries:
    description: Attempts after a failed or interrupted download before giving up.
    type: int
    default: 3
  rate_limit:
    description:
      - Most bytes per second this download may take, for O(url) and for the layers of O(image);
        V(0) means no limit.
      - Leaves the rest of a thin site link to the other devices and to live traffic. The limit
        is per download, not shared by a site's devices; with a site cache, one device's
        download is the site's only transfer from the centre.
    type: int
    default: 0
    version_added: 0.1.0
  require_staged:
    description:
      - Fail, fetching nothing, unless this version from this source is already staged and
        intact. The activate phase of a two-phase rollout sets it, so the switch never waits
        on a download.
    type: bool
    default: false
    version_added: 0.1.0
  url_username:
    description: User name for HTTP basic auth to O(url); mutually exclusive with O(url_token).
    type: str
    version_added: 0.1.0
  url_password:
    description: Password for O(url_username) (not logged).
    type: str
    version_added: 0.1.0
  max_unpacked_mb:
    description:
      - Most MiB an archive (O(url), O(src)) or the layers of O(image) together may unpack to,
        counted as the bytes are written (a sparse member by its apparent size, a zip member by what
        it decompresses to, whatever its headers say). More is refused as an archive bomb, before
        the first byte when the sizes the archive declares already exceed it, and nothing is staged.
      - The default, 8 GiB, holds what edge devices serve (TensorRT engines and ONNX or TFLite files
        of megabytes to a few GiB, a quantised language model of 4 to 7 GiB) while a small hostile
        archive cannot fill the disk (a 10 kB tar can declare a 1 GiB sparse file; a zip can expand
        1000 to 1). Raise it for a bigger model. Free space is checked too (O(min_free_space_mb)).
      - Single-file artifacts and directories given as O(src) are not archives and are not capped.
    type: int
    default: 8192
    version_added: 0.1.0
  max_members:
    description:
      - Most files, folders and links an archive or the layers of O(image) together (the members
        under O(image_path)) may unpack to; more is refused as an archive bomb and nothing is staged.
      - The default, 20000, is well above a Triton model repository (a handful of files, a few
        thousand with a python backend and its packages, ONNX external data of a few hundred tensor
        files) and stops a count bomb (100000 empty files fit in 620 kB) from exhausting inodes and
        time. Raise it for a model that genuinely has more files.
    type: int
    default: 20000
    version_added: 0.1.0
attributes:
  check_mode:
    support: full
    details: Nothing is fetched or written; the result says whether the staged version would change.
  diff_mode:
    support: full
    details: The diff lists the staged files (with the start of their sha256) before and after.
  idempotent:
    support: full
    details: Same source, same staged bytes, no change.
notes:
  - Runs on the device; needs only Python's standard library.
  - The OCI source reads uncompressed or gzip layers; zstd layers are not supported.
seealso:
  - module: edgeai.fleet.inference_model
"""

EXAMPLES = r"""
- name: Stage version 3 of the detector from the model store
  edgeai.fleet.model_artifact:
    name: detector
    version: 3
    url: https://models.example.internal/detector/3/detector.tar.gz
    sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    url_token: "{{ model_store_token }}"

- name: Push the file from the controller, then stage it (device without internet)
  block:
    - name: Copy the archive to the device
      ansible.builtin.copy:
        src: files/detector-3.tar.gz
        dest: /var/lib/edgeai/incoming/detector-3.tar.gz
        mode: "0600"
    - name: Stage it
      edgeai.fleet.model_artifact:
        name: detector
        version: 3
        src: /var/lib/edgeai/incoming/detector-3.tar.gz

- name: Take the model repository from an image in the site registry
  edgeai.fleet.model_artifact:
    name: detector
    version: 3
    image: registry.edgeai.lab:5443/edgeai/models-detector:3
    registry_username: "{{ registry_user }}"
    registry_password: "{{ registry_password }}"
    ca_path: /etc/edgeai/registry-ca.crt
"""

RETURN = r"""
url:
  description:
    - O(url) with its credentials redacted (C(user:pass@) and the values of signature, token and key
      query parameters become C(REDACTED)).
  returned: when O(url) is given
  type: str
  sample: https://models.example.internal/detector/3/detector.tar.gz?X-Amz-Signature=REDACTED
path:
  description: Folder the version is staged in.
  returned: always
  type: str
  sample: /var/lib/edgeai/artifacts/detector/3
version:
  description: The staged version.
  returned: always
  type: int
  sample: 3
source:
  description: Where the bytes came from, C(url), C(src) or C(image).
  returned: success
  type: str
  sample: url
source_id:
  description:
    - Identity of the source, C(sha256:<hex>) of a file, C(tree:<hex>) of a directory or the image manifest digest.
  returned: success
  type: str
  sample: sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
sha256:
  description: sha256 of the downloaded or given file; null for directories and images.
  returned: success
  type: str
  sample: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
digest:
  description:
    - sha256 over the staged files' names, contents and exec bits.
  returned: success and not check mode
  type: str
files:
  description: Staged files, relative to RV(path).
  returned: success and not check mode
  type: list
  elements: str
  sample: [config.pbtxt, model.tflite]
config:
  description: Whether a C(config.pbtxt) was staged with the files.
  returned: success and not check mode
  type: bool
downloaded_bytes:
  description: Bytes transferred in this run.
  returned: success and not check mode
  type: int
resumed:
  description: Whether the download continued a partial file.
  returned: success and not check mode
  type: bool
kept_versions:
  description: Versions staged after this run.
  returned: success
  type: list
  elements: int
removed_versions:
  description: Versions removed to keep O(keep_versions).
  returned: success
  type: list
  elements: int
events_undelivered:
  description:
    - With O(events) set, a failed staging hands a C(deploy_failed) event to the relay; the types the
      relay did not take.
  returned: failure
  type: list
  elements: str
events_errors:
  description: Why the relay did not take them (its answer, an unreadable token file).
  returned: failure
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.edgeai.fleet.plugins.module_utils._artifact import run_module


def main():
    run_module(AnsibleModule)


if __name__ == "__main__":
    main()
