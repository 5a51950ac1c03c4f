"""Readers for the deployment files, shared by the tests in tests/deploy.

Parsing lives here so each test reads like the property it checks: the metrics catalogue
(docs/metrics.md), the compose file with ``${VAR:-default}`` interpolation, endpoint
wiring, and the ``agegender`` CLI's commands and config classes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from services import cli

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_GPU = ROOT / "docker-compose.gpu.yml"
COMPOSE_EXAMPLES = sorted((DEPLOY / "compose").glob("*.yml"))
METRICS_DOC = ROOT / "docs" / "metrics.md"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
K8S = DEPLOY / "k8s"
PIPELINE = ("capture", "detector", "classifier", "sink")
METRIC_NAME = re.compile(r"\bagegender_[a-z0-9_]+\b")


@dataclass(frozen=True)
class CatalogueEntry:
    """One row of docs/metrics.md's table."""

    name: str
    type: str                 # counter | gauge | histogram
    labels: frozenset[str]
    unit: str
    services: tuple[str, ...]  # owners: capture/detector/classifier/sink/run
    meaning: str


def catalogue(path: Path = METRICS_DOC) -> dict[str, CatalogueEntry]:
    """Parse the metrics table: rows whose first cell is a backticked ``agegender_`` name.

    Raises:
        AssertionError: a row has the wrong number of cells, an unknown type or owner.
    """
    entries: dict[str, CatalogueEntry] = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not cells or not re.fullmatch(r"`agegender_[a-z0-9_]+`", cells[0]):
            continue
        assert len(cells) == 6, f"catalogue row needs 6 cells: {line}"
        name, mtype, labels, unit, owners, meaning = cells
        name = name.strip("`")
        assert mtype in ("counter", "gauge", "histogram"), line
        label_set = frozenset(re.findall(r"`([a-z_]+)`", labels))
        services = PIPELINE if owners == "all" else tuple(
            s.strip() for s in owners.split(","))
        assert set(services) <= set(PIPELINE) | {"run"}, line
        assert name not in entries, f"{name} listed twice"
        entries[name] = CatalogueEntry(name, mtype, label_set, unit, services, meaning)
    return entries


def metric_names_in(text: str, known: dict[str, CatalogueEntry]) -> set[str]:
    """Metric names a PromQL text uses, with histogram series suffixes mapped to the family."""
    names = set()
    for raw in METRIC_NAME.findall(text):
        name = raw
        for suffix in ("_bucket", "_sum", "_count"):
            base = raw[: -len(suffix)]
            if raw.endswith(suffix) and known.get(base) and known[base].type == "histogram":
                name = base
        names.add(name)
    return names


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(value, env: dict[str, str] | None = None):
    """Compose-style ``${VAR}`` / ``${VAR:-default}`` substitution, recursively."""
    env = {} if env is None else env
    if isinstance(value, str):
        return _VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


def _merge(base, over):
    """Merge an override file into the model: maps merge key by key (``environment``,
    ``deploy``, ``build``), lists and scalars replace. A simplification of compose's rules
    (which append some lists such as ``ports``), enough for the overrides in this repo;
    the real implementation is exercised by ``docker-compose config`` in test_compose."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base[k], v) if k in base else v
        return out
    return over


def load_compose(*files: Path, env: dict[str, str] | None = None) -> dict:
    """The compose model of ``files`` (first is the base) merged and interpolated.

    YAML anchors and ``<<`` merge keys are resolved by PyYAML; top-level ``x-`` keys dropped.
    """
    model: dict = {}
    for f in files or (COMPOSE,):
        data = yaml.safe_load(f.read_text())
        model = _merge(model, {k: v for k, v in data.items() if not k.startswith("x-")})
    return interpolate(model, env)


def service_command(svc: dict) -> str | None:
    """The agegender subcommand a compose service runs (``command[0]``), if any."""
    cmd = svc.get("command")
    if isinstance(cmd, str):
        cmd = cmd.split()
    return cmd[0] if cmd else None


def config_class(command: str):
    """The config class of an ``agegender`` service subcommand."""
    return cli.load(cli.SERVICES[command][0])


def env_prefix(command: str) -> str:
    """``AGEGENDER_CAPTURE_`` etc."""
    return config_class(command).model_config["env_prefix"]


def env_names(command: str) -> set[str]:
    """Every environment variable the command's config reads."""
    prefix = env_prefix(command)
    return {f"{prefix}{name}".upper() for name in config_class(command).model_fields}


def build_config(command: str, environment: dict[str, str]):
    """Instantiate the command's config from ``environment`` alone (other AGEGENDER_*
    variables of this process removed), exactly as the container would.

    Raises:
        pydantic.ValidationError: a value does not validate.
    """
    saved = {k: v for k, v in os.environ.items() if k.startswith("AGEGENDER_")}
    try:
        for k in saved:
            del os.environ[k]
        os.environ.update({k: str(v) for k, v in environment.items()})
        return config_class(command)()
    finally:
        for k in environment:
            os.environ.pop(k, None)
        os.environ.update(saved)


def endpoint_addresses(endpoint: str) -> tuple[str, list[tuple[str, int]]]:
    """``"connect:tcp://a:1,tcp://b:2"`` -> ``("connect", [("a", 1), ("b", 2)])``."""
    from common.sockets import parse_endpoint
    mode, addrs = parse_endpoint(endpoint)
    out = []
    for a in addrs:
        m = re.fullmatch(r"tcp://([^:/]+):(\d+)", a)
        assert m, f"expected tcp://HOST:PORT in {endpoint!r}"
        out.append((m.group(1), int(m.group(2))))
    return mode, out


def connections(cfg):
    """Yield ``(field, host, port)`` for every address a service's ``input`` or ``output``
    connects to (bound endpoints are skipped)."""
    for field in ("input", "output"):
        if not hasattr(cfg, field):
            continue
        mode, addrs = endpoint_addresses(getattr(cfg, field))
        if mode == "connect":
            for host, port in addrs:
                yield field, host, port
