"""The deploy recipes in deploy/ say what zonda accepts and keep their timeouts in step: every zonda command line
in them parses with zonda's own CLI, and each supervisor (systemd, Kubernetes) waits longer than zonda's graceful
shutdown before it kills."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import REPO
from zonda.cli import parse_command_line
from zonda.config import Config

DEPLOY = Path(REPO, "deploy")


def zonda_config(argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    """The Config of a recipe's ``zonda ...`` command line (run where no pyproject.toml is found)."""
    assert Path(argv[0]).name == "zonda", argv
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ZONDA_CONFIG", raising=False)
    config, _ = parse_command_line(argv[1:])
    return config


def systemd_value(text: str, key: str) -> str:
    match = re.search(rf"^{key}=(.*)$", text, re.MULTILINE)
    assert match, key
    return match.group(1).strip()


def test_systemd_unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unit = (DEPLOY / "systemd" / "zonda.service").read_text()
    socket_unit = (DEPLOY / "systemd" / "zonda.socket").read_text()
    config = zonda_config(shlex.split(systemd_value(unit, "ExecStart")), tmp_path, monkeypatch)
    assert systemd_value(unit, "Type") == "notify"
    assert systemd_value(unit, "Requires") == "zonda.socket"
    assert systemd_value(unit, "KillSignal") == "SIGTERM"
    stop = float(systemd_value(unit, "TimeoutStopSec"))
    assert stop > config.timeout_graceful_shutdown + config.timeout_lifespan_shutdown
    assert systemd_value(unit, "User") != "root"
    assert systemd_value(socket_unit, "ListenStream")  # zonda serves the passed socket (LISTEN_FDS)
    assert config.proxy_headers and config.forwarded_allow_ips == "127.0.0.1"


def test_dockerfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*\])$", text, re.MULTILINE)
    assert cmd
    config = zonda_config(json.loads(cmd.group(1)), tmp_path, monkeypatch)
    assert re.search(r"^USER (?!root)\S+$", text, re.MULTILINE)  # not root
    assert config.host == "0.0.0.0" and config.proxy_headers and config.metrics_bind


def test_kubernetes_deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    documents = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "deployment.yaml").read_text()))
    deployment: dict[str, Any] = next(d for d in documents if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    config = zonda_config(container["args"], tmp_path, monkeypatch)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["http"] == config.port
    assert config.metrics_bind is not None and config.metrics_bind.endswith(f":{ports['metrics']}")
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = config.timeout_graceful_shutdown + config.timeout_lifespan_shutdown
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert pod["securityContext"]["runAsNonRoot"] is True
