"""Packaging: the image's pins and the package metadata must name the same dependencies."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _names(lines: list[str]) -> set[str]:
    names = set()
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            match = re.match(r"[A-Za-z0-9_.\-]+", line)
            assert match, line
            names.add(re.sub(r"[-_.]+", "-", match.group(0)).lower())
    return names


def test_requirements_and_setup_cfg_agree() -> None:
    """requirements.txt pins exactly the packages setup.cfg requires, each pin inside its range."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    required = cfg["options"]["install_requires"].strip().splitlines()
    pinned = (ROOT / "requirements.txt").read_text().splitlines()
    assert _names(required) == _names(pinned)
    for line in pinned:
        line = line.split("#", 1)[0].strip()
        if line:
            assert "==" in line, f"not pinned: {line}"


def test_pins_satisfy_the_ranges() -> None:
    """Each pinned version is allowed by setup.cfg's lower bound."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lower = {}
    for line in cfg["options"]["install_requires"].strip().splitlines():
        name, _, version = line.strip().partition(">=")
        lower[re.sub(r"[-_.]+", "-", name).lower()] = tuple(int(p) for p in version.split("."))
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            key = re.sub(r"[-_.]+", "-", name).lower()
            assert tuple(int(p) for p in version.split(".")) >= lower[key], line


def test_configuration_reference_documents_every_setting() -> None:
    """docs/configuration.md names every environment variable and option the service reads."""
    from auditgen.config import SPECS

    reference = (ROOT / "docs" / "configuration.md").read_text()
    for spec in SPECS:
        assert f"| `{spec.env}` | `--{spec.option}` |" in reference, spec.env


def test_configuration_reference_is_current() -> None:
    """docs/configuration.md is exactly what the spec table generates: a setting changed in specs.py
    without regenerating the page fails here (run `python -m auditgen.config.reference >
    docs/configuration.md`)."""
    from auditgen.config.reference import markdown

    assert (ROOT / "docs" / "configuration.md").read_text() == markdown()


def test_one_version_for_the_package_the_command_and_the_openapi_document() -> None:
    """The installed distribution, auditgen.__version__ (what --version prints) and the OpenAPI
    document's info.version are the same version."""
    import json
    from importlib.metadata import version

    import auditgen

    openapi = json.loads((ROOT / "auditgen" / "openapi.json").read_text())
    assert version("auditgen") == auditgen.__version__ == openapi["info"]["version"]


def test_ci_runs_the_readme_test_command() -> None:
    """CI proves the README's quick-start test command, so the two must be the same line."""
    readme = (ROOT / "README.md").read_text()
    command = "python3 -m venv .venv && .venv/bin/pip install -q '.[test]' && .venv/bin/python -m pytest"
    assert command in readme
    assert command in (ROOT / ".ci" / "run").read_text()


def test_docs_document_every_metric() -> None:
    """Every metric the service exports has a row in the metrics table of docs/operations.md."""
    from auditgen.metrics import Metrics

    operations = (ROOT / "docs" / "operations.md").read_text()
    table = operations[operations.index("\n## Metrics\n") :]
    table = table[: table.index("\n## ", 1)]
    for metric in Metrics().registry.collect():
        name = metric.name + ("_total" if metric.type == "counter" else "")
        assert f"| `{name}" in table, name
