#!/usr/bin/python
# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

# The release builder is an action plugin (plugins/action/release_build.py) that runs on the
# controller; its work is in plugins/plugin_utils/_release_build. This file holds its documentation.

DOCUMENTATION = r"""
---
module: release_build
short_description: Build a model release (artifacts, config, golden smoke test) on the controller
version_added: 0.1.0
description:
  - Turns a trained model into what C(playbooks/deploy_model.yml) deploys. For each target platform
    (C(coral), C(jetson)) or inventory group it writes a C(tar.gz) holding Triton's model layout,
    C(<name>/config.pbtxt), C(<name>/smoke_test.json) and C(<name>/<version>/model.tflite) (Coral,
    the LiteRT server), C(model.onnx) (Jetson, Triton's C(onnxruntime) backend), C(model.plan)
    (Jetson, C(tensorrt_plan)) or C(model.py) and its files (Jetson, the C(python) backend), and a
    release file (C(edgeai_release)) naming each artifact with its sha256 and its requirements.
  - C(config.pbtxt) is generated from the model's own signature (names, types, dims with -1 for open
    dimensions). A C(.tflite) is read through the flatbuffer schema ai-edge-litert ships (subgraph 0, quantized
    types included; an Edge TPU-compiled model is recognised by its C(edgetpu-custom-op)), an C(.onnx)
    through the C(onnx) package. A TensorRT plan cannot be read here, give O(signature) or O(config).
    A python model folder brings its own C(config.pbtxt).
  - The smoke test is computed by running the model on the controller (ai-edge-litert's Interpreter,
    onnxruntime's CPU provider) on O(inputs) or on seeded random inputs, and stored in the artifact as
    C(smoke_test.json); the release takes it from there (C(from_artifact=true)). Models that cannot run on
    the controller (Edge TPU-compiled, TensorRT plans, python models) need O(expected_outputs), or
    O(allow_unchecked_outputs).
  - The tarballs are reproducible (same inputs, same bytes); a second run with the same inputs changes
    nothing. Optionally publishes them (O(publish)) to an https artifact store (PUT) or as OCI images
    pinned by digest, so devices download them instead of getting them pushed from the controller.
  - Needs on the controller the Python packages of C(requirements/builder.txt) (numpy, onnx, onnxruntime,
    ai-edge-litert; pillow for image inputs); a missing one is named with the command that installs it.
  - Also callable without Ansible, from an ML pipeline, see docs/models.md "Bring your own model".
author:
  - edgeai.fleet contributors (@edgeai)
extends_documentation_fragment:
  - edgeai.fleet._attributes
  - edgeai.fleet._attributes.action
attributes:
  action:
    details: Runs on the controller as an action plugin; needs no connection.
  check_mode:
    support: full
    details: Builds in a temporary folder, reports whether anything would change, writes and uploads nothing.
  diff_mode:
    support: none
    details: Reports the artifacts and the release file written, not a diff.
  idempotent:
    support: full
    details: The same model and options give the same bytes; files and uploads already holding them are left alone.
  platform:
    details: Runs on the controller.
options:
  model:
    description:
      - The model on the controller, a C(.tflite) (plain or Edge TPU-compiled), an C(.onnx) (its external
        data files next to it are shipped too), a TensorRT C(.plan)/C(.engine), or a Triton python model
        folder (C(model.py) and C(config.pbtxt), or C(config.pbtxt) and one C(<n>/model.py)).
      - Or a mapping with one per platform or group (C(coral) to a C(.tflite), C(jetson) to an C(.onnx)).
    type: raw
    required: true
  name:
    description: The model's name (its folder in the servers' model repository).
    type: str
    required: true
  version:
    description: The version, a positive whole number.
    type: int
    required: true
  out:
    description:
      - Folder for the tarballs (C(<name>-<key>-<version>.tar.gz)) and the release file.
    type: path
    required: true
  platforms:
    description:
      - The artifact keys, a list of C(coral), C(jetson) or inventory groups whose devices all have
        one platform (read from the inventory's C(edge_platform)), or a mapping of groups to platforms
        (C(hardware_agx_orin=jetson)). Defaults to the keys of O(model) when that is a mapping.
    type: raw
  inputs:
    description:
      - The smoke test's inputs, a C(.npy) (one-input models), a C(.npz) keyed by input name, an image
        (resized to the input's height and width, RGB or grayscale by its channels, laid out as the
        input, uint8 as is, int8 minus 128, floats divided by 255; needs pillow)
        or a mapping of input names to such files.
      - Without it, seeded random inputs (floats in [0, 1), uint8/int8 across their range, other integers
        in [0, 100)).
      - Like every option below, may be given per artifact key (a mapping of keys to values).
    type: raw
  input_shapes:
    description:
      - A mapping of input names to the shapes (lists of dims) to test with, for inputs with open
        dimensions (other than an open first dimension, which
        is 1 unless given).
    type: dict
  seed:
    description: Seed of numpy's default_rng for random inputs.
    type: int
    default: 0
  expected_outputs:
    description:
      - The model's answer to O(inputs) (a C(.npz) keyed by output name, a C(.npy) for one output, or
        a mapping of output names to C(.npy) files), for a model the builder cannot run,
        or to pin outputs computed elsewhere.
    type: raw
  allow_unchecked_outputs:
    description:
      - For a model the builder cannot run and without O(expected_outputs), ship the inputs only, the device
        then checks that the model answers, not what it answers.
    type: bool
    default: false
  tolerance:
    description:
      - Absolute tolerance of every output, or a mapping of output names to numbers. Default by output type
        FP32 0.001, FP16 0.01, FP64 1e-6, INT8/UINT8/INT16/UINT16 2 (quantization steps), other integers
        and BOOL 0.
    type: raw
  relative_tolerance:
    description:
      - Relative tolerance (of the expected value) added to the absolute one. Default the largest of the
        outputs' types, FP32 0.001, FP16 0.01, integers 0.
    type: float
  max_batch_size:
    description:
      - Triton's C(max_batch_size). 0 (no batching) unless given; more needs every input and output to have
        an open first dimension, which becomes the batch dimension.
    type: raw
    default: 0
  config:
    description:
      - A configuration to start from, a dict (Triton's JSON form) or the path of a C(config.pbtxt). Its
        fields other than name, backend/platform and the tensors are kept (C(instance_group),
        C(dynamic_batching), C(parameters) ...); tensors it lists must be the model's.
      - The source of the inputs and outputs of a TensorRT plan.
    type: raw
  signature:
    description:
      - The inputs and outputs of a model that cannot be read here (a TensorRT plan),
        a mapping with C(inputs) and C(outputs), lists of C(name), C(datatype), C(shape),
        with KServe datatypes (FP32, UINT8 ...) and
        full shapes (-1 for open dimensions).
    type: dict
  requires:
    description:
      - Requirements of the artifact, checked against each device before it is tried (C(tensorrt),
        C(jetpack), C(compute_capability), C(backends), C(edgetpu_runtime), C(platform)). A TensorRT plan
        needs C(tensorrt) and C(compute_capability). C(backends) always holds the Triton backend the model
        needs on Jetson.
    type: dict
  edgetpu_runtime:
    description:
      - The Edge TPU runtime (libedgetpu) an Edge TPU-compiled model needs at least, written to the release
        as C(requires.edgetpu_runtime). Default C("14"), what C(edgetpu_compiler) 16 targets unless run with
        C(--min_runtime_version).
    type: raw
  urls:
    description:
      - A mapping of artifact keys to https URLs, for files you upload yourself (a presigned S3 or Azure Blob URL); the
        release names them by C(url) with the sha256 of the built tarball, instead of C(src).
    type: dict
  publish:
    description:
      - Upload the artifacts and name them in the release by C(url) (type C(https)) or C(image) pinned by
        digest (type C(oci)).
    type: dict
    suboptions:
      type:
        description: C(https) (PUT to an artifact store) or C(oci) (push an OCI image to a registry).
        type: str
        required: true
        choices: [https, oci]
      url:
        description: C(https) only, the folder URL the files are PUT into (C(<url>/<file>)).
        type: str
      release_url:
        description:
          - C(https) only, the folder URL devices download from when it is not O(publish.url) (a CDN, or a
            template such as C({{ edge_artifacts_url }}/) that deploy_model.yml renders per device).
        type: str
      registry:
        description: C(oci) only, the registry's C(host[:port]).
        type: str
      repository:
        description: C(oci) only, the repository (C(models/<name>)).
        type: str
      tag:
        description:
          - C(oci) only, the tag, with C({version}), C({key}), C({name}), C({platform}) filled in.
            Default C({version}-{key}).
        type: str
      username:
        description: User for basic auth (for registries also to get a bearer token from the registry's realm).
        type: str
      password:
        description: Its password.
        type: str
      token:
        description: A bearer token instead of O(publish.username)/O(publish.password).
        type: str
      ca_path:
        description: CA file to verify the server's certificate with.
        type: path
      validate_certs:
        description: Verify the server's TLS certificate.
        type: bool
        default: true
      timeout:
        description: Seconds per HTTP request.
        type: float
        default: 120.0
      retries:
        description: Retries of a failed request (connection errors, 408, 429, 5xx).
        type: int
        default: 3
      auth_hosts:
        description: C(oci) only, other hosts trusted to issue the registry's bearer tokens.
        type: list
        elements: str
        default: []
  max_smoke_test_mb:
    description:
      - Largest C(smoke_test.json) (MiB) to write; a larger one is refused with a hint to test smaller inputs
        (the device sends the inputs in one request). A 224x224x3 uint8 input is about 0.6 MiB.
    type: float
    default: 32.0
  release_file:
    description: Where to write the release file. Default C(<out>/release-<name>-<version>.yml).
    type: path
notes:
  - Run it on C(localhost) (C(playbooks/build_release.yml) does).
  - Models that cannot run on the controller are not guessed at; the builder stops and names the option to give.
"""

EXAMPLES = r"""
- name: Build a release of a detector for Coral (.tflite) and Jetson (.onnx)
  edgeai.fleet.release_build:
    model:
      coral: /srv/models/detector_edgetpu.tflite
      jetson: /srv/models/detector.onnx
    name: detector
    version: 3
    out: /srv/releases/detector/3
    inputs: /srv/models/sample.jpg
    expected_outputs:
      coral: /srv/models/sample-coral-outputs.npz   # an Edge TPU model cannot run on the controller
  register: built

- name: A TensorRT engine per Jetson module, published as OCI images pinned by digest
  edgeai.fleet.release_build:
    model:
      hardware_agx_orin: /srv/engines/detector-orin.plan
    name: detector
    version: 3
    out: /srv/releases/detector/3
    platforms: {hardware_agx_orin: jetson}
    signature:
      inputs: [{name: images, datatype: FP32, shape: [1, 3, 640, 640]}]
      outputs: [{name: output0, datatype: FP32, shape: [1, 84, 8400]}]
    inputs: /srv/models/sample.npz
    expected_outputs: /srv/models/sample-orin-outputs.npz
    requires: {tensorrt: "8.6", jetpack: "6.0", compute_capability: "8.7"}
    publish:
      type: oci
      registry: registry.example:5000
      repository: models/detector
      username: "{{ registry_user }}"
      password: "{{ registry_password }}"
"""

RETURN = r"""
release_file:
  description: The release file, for C(ansible-playbook playbooks/deploy_model.yml -e @<release_file>).
  returned: success
  type: str
release:
  description: The C(edgeai_release) mapping written there.
  returned: success
  type: dict
  sample:
    model_name: detector
    model_version: 3
    artifacts:
      jetson:
        src: /srv/releases/detector/3/detector-jetson-3.tar.gz
        sha256: 5f2b...
        requires: {backends: [onnxruntime]}
    smoke_test:
      jetson: {from_artifact: true}
artifacts:
  description: Per artifact key, what was built.
  returned: success
  type: dict
  contains:
    path:
      description: The tarball.
      type: str
    sha256:
      description: Its sha256.
      type: str
    platform:
      description: C(coral) or C(jetson).
      type: str
    kind:
      description: C(tflite), C(onnx), C(plan) or C(python).
      type: str
    edgetpu:
      description: Whether the model is compiled for the Edge TPU.
      type: bool
    config:
      description: The generated C(config.pbtxt).
      type: str
    model:
      description: The model's inputs and outputs (name, datatype, shape, quantization).
      type: dict
    smoke_test:
      description:
        - Where the expected outputs came from (C(computed), C(given), C(unchecked)), the seed, the
          tolerances, the size.
      type: dict
    requires:
      description: The requirements written to the release.
      type: dict
    published:
      description:
        - Where it was published (C(url) or C(image)), and whether that changed anything; null when not
          published.
      type: dict
out:
  description: The output folder.
  returned: success
  type: str
"""
