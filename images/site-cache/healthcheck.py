"""Container health: both listeners answer on the container's loopback (no credentials needed).

The registry answers /v2/ with 401 without a login; nginx serves /.site-cache/health itself.
Neither check reaches the centre: a cache whose centre is away still serves what it holds.
"""

import ssl
import sys
import urllib.error
import urllib.request

CHECKS = (("https://127.0.0.1:5443/v2/", 401), ("https://127.0.0.1:8767/.site-cache/health", 200))


def status(url: str) -> int:
    # The certificate names the cache's public address, not 127.0.0.1: skip verification here.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=3) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def main() -> int:
    for url, expected in CHECKS:
        try:
            got = status(url)
        except OSError as exc:
            print(f"{url}: {exc}", file=sys.stderr)
            return 1
        if got != expected:
            print(f"{url}: HTTP {got}, expected {expected}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
