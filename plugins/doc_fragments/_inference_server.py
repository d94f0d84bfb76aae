# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.

from __future__ import annotations


class ModuleDocFragment:
    # Connection options of every module that talks to an inference server (Triton or
    # the project's LiteRT server). The argument spec lives once in
    # plugins/module_utils/_inference_client.py (INFERENCE_SERVER_ARGS).
    DOCUMENTATION = r"""
options:
  url:
    description:
      - Base URL of the inference server's HTTP endpoint (KServe v2 / Open Inference Protocol),
        as seen from the device. Triton and the LiteRT server listen on port 8000 inside the device.
    type: str
    default: http://127.0.0.1:8000
  timeout:
    description:
      - Seconds to wait for one HTTP answer. A model load request waits for the server to finish
        loading, so O(edgeai.fleet.inference_model#module:load_timeout) applies to that call instead.
    type: float
    default: 30.0
  validate_certs:
    description:
      - Verify the server's TLS certificate when O(url) is https.
    type: bool
    default: true
  ca_path:
    description:
      - PEM file of the CA that signed the server's certificate, on the device.
    type: path
  token:
    description:
      - Bearer token sent as C(Authorization) header, for servers that require one.
      - Sent only over https, or over plain http to a loopback address of the device (the
        default O(url)), unless O(allow_insecure_credentials) is set.
    type: str
  allow_insecure_credentials:
    description:
      - Send O(token) over plain http to a server that is not on the device's loopback.
        Anyone on the network between the device and the server can then read the token.
      - Without it such a request fails before anything is sent.
    type: bool
    default: false
    version_added: 0.1.0
"""
