"""deploy/ checked statically (no container engine here): the files parse, refer only to files
that exist, wire the services together, and the scripts embedded in them run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from metering.store import create_db_engine, upgrade_schema
from proxy.config.settings import load_settings
from tests import services
from tests.grafana.queries import ROOT

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
MANIFESTS = [
    doc for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())
]


def expand(value: str) -> str:
    """Compose interpolation with every variable at its default."""
    return re.sub(r"\$\{\w+(?::?-([^}]*))?(?::\?[^}]*)?\}", lambda m: m.group(1) or "", value)


def kind(name: str) -> list[dict[str, Any]]:
    return [m for m in MANIFESTS if m["kind"] == name]


def pod(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def script(container: dict[str, Any]) -> str:
    command = container.get("command") or container["exec"]["command"]
    assert command[:2] == ["python", "-c"], command
    return command[2]


def test_promtool_accepts_the_shipped_prometheus_config():
    promtool = services.program("promtool", package="prometheus", why="checking prometheus.yml")
    proc = subprocess.run(
        [promtool, "check", "config", str(DEPLOY / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_has_the_stack_and_an_optional_gpu_vllm():
    assert {"tokenmeter", "migrate", "postgres", "prometheus", "grafana", "vllm"} <= set(SERVICES)
    vllm = SERVICES["vllm"]
    assert vllm["profiles"] == ["vllm"]
    [device] = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert "gpu" in device["capabilities"]
    assert all("profiles" not in s for n, s in SERVICES.items() if n != "vllm")


def test_compose_migrates_before_serving():
    assert SERVICES["migrate"]["command"] == ["db", "upgrade"]
    depends = SERVICES["tokenmeter"]["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_builds_from_files_that_exist():
    for name in ("tokenmeter", "migrate"):
        build = SERVICES[name]["build"]
        context = (DEPLOY / build["context"]).resolve()
        assert context == ROOT
        assert (context / build["dockerfile"]).is_file()


def test_compose_mounts_only_files_that_exist():
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
            else:
                assert source in COMPOSE["volumes"], f"{name}: {source}"


def test_compose_publishes_ports_on_loopback_only():
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name}: {port}"


def test_compose_config_files_are_valid_tokenmeter_configs():
    env = SERVICES["tokenmeter"]["environment"]
    default = Path(expand(env["TOKENMETER_CONFIG"])).name
    mounted = {v.split(":")[1]: v.split(":")[0] for v in SERVICES["tokenmeter"]["volumes"]}
    config_dir = DEPLOY / mounted["/etc/tokenmeter"]
    assert (config_dir / default).is_file()
    for path in config_dir.glob("*.yaml"):
        load_settings(path)  # raises ConfigError naming the key
    assert expand(env["TOKENMETER_STORAGE__URL"]).startswith("postgresql://")


def test_compose_grafana_finds_provisioning_and_dashboards_where_they_are_mounted():
    grafana = SERVICES["grafana"]
    mounts = {v.split(":")[1]: DEPLOY / v.split(":")[0] for v in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"].resolve() == ROOT / "grafana" / "provisioning"
    provider = yaml.safe_load(
        (ROOT / "grafana/provisioning/dashboards/tokenmeter.yaml").read_text()
    )["providers"][0]
    dashboards = mounts[provider["options"]["path"]].resolve()
    assert dashboards == ROOT / "grafana" / "dashboards"
    needed = set(
        re.findall(
            r"\$\{(\w+)\}",
            (ROOT / "grafana/provisioning").joinpath("datasources/tokenmeter.yaml").read_text(),
        )
    )
    assert needed <= set(grafana["environment"])
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (dashboards / Path(home).relative_to(provider["options"]["path"])).is_file()


def test_compose_prometheus_uses_the_shipped_config():
    volumes = SERVICES["prometheus"]["volumes"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in volumes


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck():
    text = (DEPLOY / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*", text, re.M) and "/healthz" in text
    for source in re.findall(r"^COPY\s+(?!--from)(.+)\s+\S+$", text, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), path


def test_dockerignore_keeps_what_the_image_copies():
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = re.findall(r"^COPY\s+(?!--from)(.+)\s+\S+$", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert {p for c in copied for p in c.split()} <= kept


def test_kustomization_lists_manifests_that_exist():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource


def test_deployment_has_replicas_probes_and_secret_references():
    [deployment] = kind("Deployment")
    assert deployment["spec"]["replicas"] >= 2
    [container] = pod(deployment)["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "/readyz" in script(container["readinessProbe"])
    secrets = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["name"]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert {"TOKENMETER_ADMIN_KEY", "ANTHROPIC_API_KEY", "AZURE_AI_API_KEY"} <= set(secrets)
    assert set(secrets.values()) == {"tokenmeter-secrets"}
    assert pod(deployment)["securityContext"]["runAsNonRoot"] is True


def test_deployment_mounts_the_configmap_and_it_is_a_valid_config(tmp_path):
    [deployment] = kind("Deployment")
    [configmap] = kind("ConfigMap")
    volumes = {v["name"]: v for v in pod(deployment)["volumes"]}
    assert volumes["config"]["configMap"]["name"] == configmap["metadata"]["name"]
    config = tmp_path / "tokenmeter.yaml"
    config.write_text(configmap["data"]["tokenmeter.yaml"])
    assert load_settings(config).models


def test_service_hpa_and_monitoring_point_at_the_deployment():
    [deployment] = kind("Deployment")
    [service] = kind("Service")
    [hpa] = kind("HorizontalPodAutoscaler")
    [monitor] = kind("ServiceMonitor")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    [container] = pod(deployment)["containers"]
    assert int(annotations["prometheus.io/port"]) == container["ports"][0]["containerPort"]


def test_the_migration_job_runs_db_upgrade():
    [job] = kind("Job")
    [container] = pod(job)["containers"]
    assert container["args"] == ["db", "upgrade"]


def test_wait_for_schema_init_container_passes_once_migrated(tmp_path):
    [deployment] = kind("Deployment")
    [init] = pod(deployment)["initContainers"]
    url = f"sqlite:///{tmp_path / 'tm.db'}"
    upgrade_schema(create_db_engine(url))
    config = tmp_path / "tm.yaml"
    config.write_text(yaml.safe_dump({"storage": {"url": url}}))
    proc = subprocess.run(
        [sys.executable, "-c", script(init)],
        env={"TOKENMETER_CONFIG": str(config), "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def run_readiness_probe(port: int) -> int:
    [deployment] = kind("Deployment")
    [container] = pod(deployment)["containers"]
    probe = script(container["readinessProbe"]).replace("127.0.0.1:4100", f"127.0.0.1:{port}")
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=30).returncode


def test_readiness_probe_passes_on_a_ready_gateway(gateway):
    assert run_readiness_probe(gateway.port) == 0


@pytest.mark.parametrize(
    ("readyz", "ready"),
    [
        (
            {"status": "unavailable", "database": "unreachable: OperationalError", "journal": "ok"},
            True,
        ),
        ({"status": "unavailable", "database": "ok", "journal": "failed"}, False),
    ],
    ids=["database-outage-keeps-serving", "unwritable-journal-leaves-the-service"],
)
def test_readiness_probe_follows_the_journal_not_the_database(readyz, ready):
    """docs/ledger.md: during a database outage the gateway journals and keeps serving."""
    body = json.dumps(readyz).encode()

    class Readyz(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Readyz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert (run_readiness_probe(server.server_address[1]) == 0) is ready
    finally:
        server.shutdown()
        server.server_close()
