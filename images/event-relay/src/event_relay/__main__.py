"""``python -m event_relay [--config FILE]``."""

from __future__ import annotations

import argparse
import os
import sys

from event_relay.app import run
from event_relay.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="event_relay")
    parser.add_argument("--config", default=os.environ.get("EDGEAI_RELAY_CONFIG"),
                        help="YAML or JSON config file (env EDGEAI_RELAY_CONFIG); "
                             "EDGEAI_RELAY_<KEY> variables override its keys")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, os.environ)
    except ConfigError as exc:
        print(f"event_relay: configuration error: {exc}", file=sys.stderr)
        return 2
    return run(config)


if __name__ == "__main__":
    raise SystemExit(main())
