# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice, EXCEPT
# the two entry points below, which ML pipelines may call (docs/models.md, "Bring your own model"):
#
#   from ansible_collections.edgeai.fleet.plugins.plugin_utils._release_build import build_release
#   python -m ansible_collections.edgeai.fleet.plugins.plugin_utils._release_build --help
#
"""The release builder behind edgeai.fleet.release_build and playbooks/build_release.yml:
a trained model in, per platform an artifact laid out as its inference server needs it
(Triton's model layout: config.pbtxt, smoke_test.json, <version>/model.*), its sha256, a golden
smoke test computed by running the model on the controller, and a release file in the format
playbooks/deploy_model.yml takes; optionally published to an https artifact store or as an OCI
image in a registry.

Parts: _inspect (a model's signature), _config (config.pbtxt), _smoke (inputs, running the
model, tolerances, smoke_test.json), _pack (the reproducible tarball), _publish (https PUT,
OCI push), _build (the orchestration), _cli (python -m)."""

from __future__ import annotations

from ansible_collections.edgeai.fleet.plugins.plugin_utils._release_build._build import (  # noqa: F401
    build_release,
    resolve_targets,
)
from ansible_collections.edgeai.fleet.plugins.plugin_utils._release_build._common import (  # noqa: F401
    BuildError,
    MissingDependency,
)
from ansible_collections.edgeai.fleet.plugins.plugin_utils._release_build._smoke import TOLERANCES  # noqa: F401


def main(argv=None):
    from ansible_collections.edgeai.fleet.plugins.plugin_utils._release_build._cli import main as cli_main

    return cli_main(argv)
