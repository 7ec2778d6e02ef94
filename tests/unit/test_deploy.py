from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from herald.channels.smtp import parse_smtp_url
from herald.cli import app as cli_app
from herald.config import Settings
from herald.observability.metrics import CATALOG

# deploy/ stays in step with the code: the dashboard and the alert rules only use metrics Herald
# exports, the compose file only sets real settings and mounts files that exist, and Prometheus
# scrapes the services compose runs.

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "herald.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"

# A Prometheus series name of Herald's; HERALD_* settings are upper case and do not match.
METRIC_NAME = re.compile(r"\bherald_[a-z0-9_]+")
INFRASTRUCTURE = {"kafka", "postgres", "redis", "prometheus", "grafana"}
HERALD_ROLES = {"migrate", "api", "relay", "worker"}
METRICS_PORT = 9464


def metric_names(text: str) -> set[str]:
    """Every herald_* name in a piece of PromQL (or any text)."""
    return set(METRIC_NAME.findall(text))


def strings(node: Any) -> Iterator[str]:
    """Every string value in a parsed JSON or YAML document."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def expressions(node: Any) -> Iterator[str]:
    """Every PromQL expression: `expr` of panels, targets and rules, and variable queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            else:
                yield from expressions(value)
    elif isinstance(node, list):
        for value in node:
            yield from expressions(value)


def balanced(expr: str) -> bool:
    """Brackets of an expression pair up (quoted strings left out)."""
    unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in unquoted:
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


@cache
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


@cache
def alerts() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(ALERTS.read_text())
    return data


@cache
def prometheus() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(PROMETHEUS.read_text())
    return data


@cache
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def herald_services() -> dict[str, dict[str, Any]]:
    """The services that run the image built from deploy/Dockerfile."""
    return {
        name: service
        for name, service in services().items()
        if isinstance(service.get("build"), dict)
        and service["build"].get("dockerfile") == "deploy/Dockerfile"
    }


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def panels(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in node.get("panels", []):
        yield panel
        yield from panels(panel)


def rules() -> list[dict[str, Any]]:
    return [rule for group in alerts()["groups"] for rule in group["rules"]]


def listen_port(name: str, service: dict[str, Any]) -> int:
    """Where a Herald service serves /metrics: the API on its own port, the others on
    HERALD_METRICS_PORT."""
    if name == "api":
        command = [str(part) for part in service["command"]]
        return int(command[command.index("--port") + 1]) if "--port" in command else 8000
    return int(environment(service)["HERALD_METRICS_PORT"])


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume of a service that is a path (not a named volume)."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            source, target = str(volume.get("source", "")), str(volume["target"])
        else:
            source, target = str(volume).split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


# -- metric names --------------------------------------------------------------------------


def test_the_extraction_finds_unknown_names() -> None:
    sample = (
        'sum(rate(herald_deliveries_total{status="SENT"}[5m])) / '
        "histogram_quantile(0.99, rate(herald_end_to_end_seconds_bucket[5m])) "
        "+ herald_no_such_metric_total  # HERALD_METRICS_PORT is a setting, not a metric"
    )
    found = metric_names(sample)
    assert found == {
        "herald_deliveries_total",
        "herald_end_to_end_seconds_bucket",
        "herald_no_such_metric_total",
    }
    assert found - CATALOG == {"herald_no_such_metric_total"}


@pytest.mark.parametrize("document", [dashboard, alerts], ids=["dashboard", "alerts"])
def test_only_metrics_herald_exports_are_referenced(
    document: Callable[[], dict[str, Any]],
) -> None:
    data = document()
    exprs = list(expressions(data))
    assert exprs, "no PromQL expression found"
    referenced = set().union(*(metric_names(text) for text in strings(data)))
    assert referenced, "no herald_* metric referenced"
    assert referenced - CATALOG == set(), "metrics not in herald.observability.metrics.CATALOG"
    for expr in exprs:
        assert metric_names(expr) or re.search(r"\bup\{", expr), f"no metric in {expr!r}"
        assert balanced(expr), f"unbalanced brackets in {expr!r}"


# -- the dashboard -------------------------------------------------------------------------


def test_dashboard_has_the_panels() -> None:
    board = dashboard()
    assert 36 <= board["schemaVersion"] <= 41
    assert board["uid"]
    shown = [p for p in panels(board) if p["type"] != "row"]
    titles = {p["title"] for p in shown}
    for wanted in (
        "Accepted/s",
        "Notifications accepted/s",
        "HTTP requests/s by route",
        "HTTP latency p50 / p99 by route",
        "HTTP 5xx ratio",
        "Published events/s by topic",
        "Outbox pending",
        "Outbox oldest event age",
        "Deliveries/s by channel & status",
        "Delivery attempts & retries/s",
        "End-to-end latency p50 / p95 / p99 by channel",
        "Provider call latency p50 / p99",
        "Consumer lag by group",
        "Dead letter queue depth",
        "Dead letters/s by reason",
        "Circuit state per provider",
        "Rate-limit waits",
    ):
        assert wanted in titles, f"panel {wanted!r} missing"

    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    everywhere = set().union(*(metric_names(e) for e in expressions(board)))
    for metric in (
        "herald_notifications_accepted_total",
        "herald_http_requests_total",
        "herald_http_request_seconds_bucket",
        "herald_events_published_total",
        "herald_outbox_pending",
        "herald_outbox_oldest_age_seconds",
        "herald_deliveries_total",
        "herald_delivery_attempts_total",
        "herald_delivery_retries_total",
        "herald_end_to_end_seconds_bucket",
        "herald_provider_call_seconds_bucket",
        "herald_consumer_lag",
        "herald_dead_letters_pending",
        "herald_dead_letters_total",
        "herald_circuit_state",
        "herald_rate_limit_waits_total",
    ):
        assert metric in everywhere, f"{metric} is on no panel"

    e2e = " ".join(e for e in expressions(board) if "herald_end_to_end_seconds_bucket" in e)
    assert set(re.findall(r"histogram_quantile\((0\.\d+)", e2e)) >= {"0.5", "0.95", "0.99"}
    for expr in expressions(board):
        if "histogram_quantile" in expr:
            assert "_bucket" in expr, expr
            assert re.search(r"by \([^)]*\ble\b", expr), f"quantile without `le`: {expr!r}"


def test_dashboard_panels_use_the_datasource_variable() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


# -- alert rules ---------------------------------------------------------------------------

REQUIRED_ALERTS = {
    "HeraldDeadLettersGrowing": "herald_dead_letters_total",
    "HeraldConsumerLagHigh": "herald_consumer_lag",
    "HeraldConsumerLagRising": "herald_consumer_lag",
    "HeraldOutboxStale": "herald_outbox_oldest_age_seconds",
    "HeraldCircuitOpen": "herald_circuit_state",
    "HeraldApiErrorRatioHigh": "herald_http_requests_total",
    "HeraldDeliveryFailureRatioHigh": "herald_deliveries_total",
}


def test_alert_rules_cover_the_failure_cases() -> None:
    by_name = {rule["alert"]: rule for rule in rules()}
    assert len(by_name) == len(rules()), "alert names repeat"
    for name, metric in REQUIRED_ALERTS.items():
        assert name in by_name, f"alert {name} missing"
        assert metric in metric_names(by_name[name]["expr"]), f"{name} does not use {metric}"
    assert "== 2" in by_name["HeraldCircuitOpen"]["expr"]
    assert 'code=~"5.."' in by_name["HeraldApiErrorRatioHigh"]["expr"]


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: str(rule.get("alert")))
def test_each_alert_rule_is_complete(rule: dict[str, Any]) -> None:
    assert isinstance(rule["expr"], str)
    assert rule["expr"].strip()
    assert re.fullmatch(r"\d+[smh]", str(rule["for"])), rule["for"]
    assert rule["labels"]["severity"] in {"info", "warning", "critical"}
    assert rule["annotations"]["summary"].strip()
    assert rule["annotations"]["description"].strip()
    # A label the annotations print must survive the expression's aggregation.
    used = set(re.findall(r"\$labels\.(\w+)", " ".join(rule["annotations"].values())))
    assert used <= set(re.findall(r"\w+", rule["expr"])) | {"job", "instance"}


# -- Prometheus ----------------------------------------------------------------------------


def scrape_targets() -> list[tuple[str, str, int]]:
    """(job, host, port) of every static or DNS target."""
    targets = []
    for job in prometheus()["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = str(target).rsplit(":", 1)
                targets.append((job["job_name"], host, int(port)))
        for dns in job.get("dns_sd_configs", []):
            targets.extend((job["job_name"], str(n), int(dns["port"])) for n in dns["names"])
    return targets


def test_prometheus_loads_the_alert_rules() -> None:
    rule_files = prometheus()["rule_files"]
    assert rule_files == ["alerts.yml"]
    assert all((PROMETHEUS.parent / f).is_file() for f in rule_files)
    # In the container the rules sit next to prometheus.yml.
    mounts = dict(bind_mounts(services()["prometheus"]))
    config_dir = PurePosixPath(mounts["./prometheus/prometheus.yml"]).parent
    assert mounts["./prometheus/alerts.yml"] == str(config_dir / "alerts.yml")


def test_every_scrape_target_is_a_compose_service_on_its_metrics_port() -> None:
    targets = scrape_targets()
    assert targets
    heralds = herald_services()
    for job, host, port in targets:
        assert host in services(), f"job {job} scrapes {host}, which compose does not run"
        if host in heralds:
            assert port == listen_port(host, heralds[host]), f"job {job}: wrong port for {host}"
    assert {host for _, host, _ in targets} >= HERALD_ROLES - {"migrate"}


# -- docker compose ------------------------------------------------------------------------


def test_compose_runs_every_service() -> None:
    assert set(services()) >= INFRASTRUCTURE | HERALD_ROLES
    assert set(herald_services()) == HERALD_ROLES
    worker = services()["worker"]
    assert worker.get("deploy", {}).get("replicas", 1) >= 2
    for name, service in services().items():
        if name not in herald_services():
            image = service["image"]
            assert ":" in image, f"{name}: image {image} has no tag"
            assert not image.endswith(":latest"), f"{name}: pin the image"


def test_compose_runs_the_right_herald_command() -> None:
    commands = {c.name or c.callback.__name__ for c in cli_app.registered_commands if c.callback}
    for name, service in herald_services().items():
        command = service["command"]
        assert command[0] == name, f"{name} runs `herald {command[0]}`"
        assert command[0] in commands
    api = [str(part) for part in services()["api"]["command"]]
    assert api[api.index("--host") + 1] == "0.0.0.0"
    assert any(port.endswith(":8000") for port in services()["api"]["ports"])


def test_compose_publishes_every_port_on_loopback_only() -> None:
    """Nothing of the stack, the API and its keyless /metrics included, on all interfaces."""
    for name, service in services().items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port}"


def test_herald_variables_in_compose_are_settings() -> None:
    for name, service in herald_services().items():
        env = environment(service)
        assert env, f"{name} has no environment"
        unknown = {
            key
            for key in env
            if key.startswith("HERALD_")
            and key.removeprefix("HERALD_").lower() not in Settings.model_fields
        }
        assert unknown == set(), f"{name} sets variables that are not settings"


@pytest.mark.parametrize("name", sorted(HERALD_ROLES))
def test_herald_variables_in_compose_are_valid(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("HERALD_"):
            monkeypatch.delenv(key)
    env = environment(services()[name])
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.bus == "kafka"
    assert settings.database_url.startswith("postgresql://")
    assert parse_smtp_url(env["HERALD_SMTP_URL"]).host in services()


def test_relays_and_workers_serve_metrics() -> None:
    for name in ("relay", "worker"):
        env = environment(services()[name])
        assert env["HERALD_METRICS_HOST"] == "0.0.0.0", name
        assert int(env["HERALD_METRICS_PORT"]) == METRICS_PORT, name


def test_compose_mounts_only_files_that_exist() -> None:
    mounted = 0
    for name, service in services().items():
        for source, _ in bind_mounts(service):
            assert (DEPLOY / source).resolve().exists(), f"{name} mounts missing {source}"
            mounted += 1
        build = service.get("build")
        if isinstance(build, dict):
            context = (DEPLOY / build["context"]).resolve()
            assert context == ROOT, name
            assert (context / build["dockerfile"]).is_file(), name
    assert mounted >= 5


def test_compose_starts_services_in_order() -> None:
    all_services = services()
    for name, service in all_services.items():
        depends = service.get("depends_on", {})
        if isinstance(depends, list):
            depends = {dep: {"condition": "service_started"} for dep in depends}
        for dep, how in depends.items():
            assert dep in all_services, f"{name} depends on unknown {dep}"
            if how["condition"] == "service_healthy":
                assert "healthcheck" in all_services[dep], f"{dep} has no healthcheck"
        if name == "migrate":
            assert depends["postgres"]["condition"] == "service_healthy"
        elif name in HERALD_ROLES:
            assert depends["migrate"]["condition"] == "service_completed_successfully", name
            for infra in ("postgres", "kafka"):
                assert depends[infra]["condition"] == "service_healthy", (name, infra)
            assert "healthcheck" in service, f"{name} has no healthcheck"
    assert all_services["migrate"].get("restart", "no") == "no"


def test_kafka_is_reachable_from_the_other_containers() -> None:
    env = environment(services()["kafka"])
    assert "broker" in env["KAFKA_PROCESS_ROLES"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"]
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    for name in HERALD_ROLES:
        servers = environment(services()[name])["HERALD_KAFKA_BOOTSTRAP_SERVERS"]
        assert servers == "kafka:9092", name


# -- Grafana and the image -----------------------------------------------------------------


def test_grafana_provisions_the_datasource_and_the_dashboard() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (source,) = sources["datasources"]
    variable = next(v for v in dashboard()["templating"]["list"] if v["name"] == "DS_PROMETHEUS")
    assert source["type"] == "prometheus"
    assert source["uid"] == variable["current"]["value"]
    url = re.match(r"https?://([^:/]+)", source["url"])
    assert url, source["url"]
    assert url.group(1) in services()

    providers = yaml.safe_load((provisioning / "dashboards" / "herald.yml").read_text())
    (provider,) = providers["providers"]
    mounts = dict(bind_mounts(services()["grafana"]))
    dashboard_in_container = PurePosixPath(mounts["./grafana/herald.json"])
    assert provider["options"]["path"] == str(dashboard_in_container.parent)
    assert mounts["./grafana/provisioning/datasources"] == "/etc/grafana/provisioning/datasources"
    assert mounts["./grafana/provisioning/dashboards"] == "/etc/grafana/provisioning/dashboards"


def test_the_image_runs_herald_unprivileged() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim\b|^FROM python:3\.11-slim", text, re.M)
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for source in copied.split():
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    assert "pip install -c constraints.txt '.[all]'" in text
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users, "runs as root"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert re.search(r'^ENTRYPOINT \["herald"\]', text, re.M)
