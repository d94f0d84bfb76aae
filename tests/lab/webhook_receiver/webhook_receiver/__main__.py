"""Entry point: ``python -m webhook_receiver --port 8766 --state-dir DIR ...``."""

from webhook_receiver.server import main

raise SystemExit(main())
