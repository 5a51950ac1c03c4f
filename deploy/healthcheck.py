#!/usr/bin/env python3
"""Container health check: exit 0 when the service's ``/healthz`` answers 200, else 1.

Needs only the standard library (no curl in the image). Usage::

    agegender-healthcheck [URL ...]

Without arguments the URL comes from ``AGEGENDER_HEALTHCHECK_URL``, else from whichever
``AGEGENDER_<SERVICE>_HTTP_PORT`` variables are set (``http://127.0.0.1:PORT/healthz``),
else the default ports 9101-9104 (capture, detector, classifier, sink) are tried. The check
passes when any candidate answers 200 within ``AGEGENDER_HEALTHCHECK_TIMEOUT_S`` seconds
(default 3); in a container only one service runs, so only its port answers.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_PORTS = {"CAPTURE": 9101, "DETECTOR": 9102, "CLASSIFIER": 9103, "SINK": 9104}


def candidate_urls(argv: list[str], environ: dict[str, str]) -> list[str]:
    """URLs to probe, in order: arguments, the override variable, set ports, defaults."""
    if argv:
        return list(argv)
    if environ.get("AGEGENDER_HEALTHCHECK_URL"):
        return [environ["AGEGENDER_HEALTHCHECK_URL"]]
    ports = [environ[f"AGEGENDER_{svc}_HTTP_PORT"] for svc in DEFAULT_PORTS
             if environ.get(f"AGEGENDER_{svc}_HTTP_PORT", "").strip() not in ("", "0")]
    if not ports:
        ports = [str(p) for p in DEFAULT_PORTS.values()]
    return [f"http://127.0.0.1:{p.strip()}/healthz" for p in ports]


def probe(url: str, timeout_s: float) -> tuple[bool, str]:
    """GET ``url``; ``(True, detail)`` on HTTP 200, ``(False, reason)`` otherwise."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body = resp.read(512).decode("utf-8", "replace")
            return resp.status == 200, f"{url}: {resp.status} {body}"
    except urllib.error.HTTPError as exc:
        return False, f"{url}: HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{url}: {exc}"


def main(argv: list[str] | None = None) -> int:
    """Probe the candidates; print the outcome; 0 when one is healthy, else 1."""
    timeout_s = float(os.environ.get("AGEGENDER_HEALTHCHECK_TIMEOUT_S", "3"))
    reasons = []
    for url in candidate_urls(sys.argv[1:] if argv is None else argv, dict(os.environ)):
        ok, detail = probe(url, timeout_s)
        if ok:
            print(detail)
            return 0
        reasons.append(detail)
    print("unhealthy: " + "; ".join(reasons), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
