# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
"""The command line of the release builder, for ML pipelines:

    python -m ansible_collections.edgeai.fleet.plugins.plugin_utils._release_build \\
        --model model.onnx --name pest-detector --version 3 --platform jetson --out dist/ \\
        [--input-shape x=1,3,224,224] [--inputs sample.npz] [--options more.yml] [--json]

``--model`` and ``--platform`` repeat (``--model coral=m.tflite --model jetson=m.onnx``;
``--platform hardware_agx_orin=jetson`` for an inventory group). ``--options FILE`` (YAML or
JSON) gives any other keyword of build_release (publish settings with their credentials,
signature, requires, tolerance ...), so no secret goes on a command line. Prints the release
file's path (``--json``: the whole result). Exit status 0, or 2 with the reason on stderr."""

from __future__ import annotations

import argparse
import json
import sys

from ansible_collections.edgeai.fleet.plugins.plugin_utils._release_build._build import build_release
from ansible_collections.edgeai.fleet.plugins.plugin_utils._release_build._common import BuildError


def _pairs(values, what):
    out = {}
    for value in values or []:
        if "=" not in value:
            raise BuildError(f"{what} {value!r}: expected KEY=VALUE")
        key, dummy, rest = value.partition("=")
        out[key.strip()] = rest.strip()
    return out


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m ansible_collections.edgeai.fleet.plugins.plugin_utils."
                                     "_release_build", description="Build a model release for edgeai.fleet.")
    parser.add_argument("--model", action="append", required=True, help="PATH, or KEY=PATH per platform/group")
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--platform", action="append", help="coral, jetson, or GROUP=PLATFORM")
    parser.add_argument("--inputs", help=".npy, .npz (keyed by input name) or an image")
    parser.add_argument("--expected-outputs", help=".npz keyed by output name, or .npy")
    parser.add_argument("--input-shape", action="append", help="NAME=D1,D2,... for open dimensions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-batch-size", type=int, default=0)
    parser.add_argument("--config", help="a config.pbtxt to start from")
    parser.add_argument("--allow-unchecked-outputs", action="store_true")
    parser.add_argument("--options", help="YAML or JSON file with more build_release keywords")
    parser.add_argument("--check", action="store_true", help="build, compare, write nothing")
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        kwargs = {}
        if args.options:
            import yaml

            with open(args.options, encoding="utf-8") as handle:
                kwargs = yaml.safe_load(handle) or {}
            if not isinstance(kwargs, dict):
                raise BuildError(f"--options {args.options} must hold a mapping of build_release keywords")
        models = args.model
        if len(models) == 1 and "=" not in models[0]:
            model = models[0]
        else:
            model = _pairs(models, "--model")
        platforms = None
        if args.platform:
            if any("=" in p for p in args.platform):
                platforms = {p: p for p in args.platform if "=" not in p}
                platforms.update(_pairs([p for p in args.platform if "=" in p], "--platform"))
            else:
                platforms = list(args.platform)
        shapes = {k: [int(d) for d in v.split(",")] for k, v in _pairs(args.input_shape, "--input-shape").items()}
        kwargs.update(model=model, name=args.name, version=args.version, out=args.out, platforms=platforms,
                      check_mode=args.check)
        for key, value in (("inputs", args.inputs), ("expected_outputs", args.expected_outputs),
                           ("input_shapes", shapes or None), ("config", args.config)):
            if value is not None:
                kwargs[key] = value
        if args.seed:
            kwargs["seed"] = args.seed
        if args.max_batch_size:
            kwargs["max_batch_size"] = args.max_batch_size
        if args.allow_unchecked_outputs:
            kwargs["allow_unchecked_outputs"] = True
        result = build_release(**kwargs)
    except BuildError as exc:
        sys.stderr.write(f"release_build: {exc.msg}\n")
        return 2
    except ValueError as exc:
        sys.stderr.write(f"release_build: {exc}\n")
        return 2
    if args.json:
        sys.stdout.write(json.dumps(result, indent=1, sort_keys=True, default=str) + "\n")
    else:
        sys.stdout.write(result["release_file"] + "\n")
    return 0
