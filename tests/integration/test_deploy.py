"""The deployment files, checked offline: the Dockerfile with hadolint, the compose stack and the
Kubernetes manifests structurally and against Kubernetes' schemas, every table they ship with
`strangler check`, and Prometheus' configuration with promtool."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.integration.test_image import Recipe
from tests.support import ROOT, need

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
BIN = Path(sys.executable).parent


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def strangler_check(table: Path) -> None:
    result = subprocess.run(
        [str(BIN / "strangler"), "check", "-c", str(table)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dockerfile_is_lint_clean() -> None:
    result = subprocess.run(
        [str(BIN / "hadolint"), "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerignore_keeps_the_build_context_to_what_the_image_copies() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "tests", "bench", "deploy"):
        assert entry in ignored
    for copied in ("proxy", "legacy_monolith", "new_services", "pyproject.toml", "config"):
        assert copied not in ignored


# ---- docker compose -----------------------------------------------------------------------------


def test_the_compose_stack_has_its_services_ports_and_mounts() -> None:
    compose = load(DEPLOY / "docker-compose.yml")
    services = compose["services"]
    assert set(services) == {"monolith", "gateway", "prometheus", "grafana"}
    gateway = services["gateway"]
    # Only the public port is published on every interface; the rest on loopback.
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert [p for p in published if not p.startswith("127.0.0.1:")] == ["8080:8080"]
    assert "127.0.0.1:9901:9901" in gateway["ports"]
    # The table is a mounted directory (edits are seen), at the path the image reads.
    recipe = Recipe(ROOT / "Dockerfile")
    table_dir = str(Path(recipe.env["STRANGLER_CONFIG"]).parent)
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in gateway["volumes"]}
    assert table_dir in mounts
    # The gateway's stop grace covers its drain (grace 5 s + drain 30 s).
    assert int(gateway["stop_grace_period"].rstrip("s")) >= 35
    for name in ("monolith", "gateway"):
        assert (DEPLOY / services[name]["build"]["context"] / "Dockerfile").is_file()
    # Every file or directory mounted from the host exists.
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert (DEPLOY / source).exists(), f"{source} does not exist"
    # Grafana's datasource points at the compose Prometheus; the dashboard is provisioned.
    datasource = load(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = load(DEPLOY / "grafana/provisioning/dashboards/strangler.yml")
    assert provider["providers"][0]["options"]["path"] in mounts_of(services["grafana"])


def mounts_of(service: dict[str, Any]) -> list[str]:
    return [volume.split(":")[1] for volume in service["volumes"]]


def test_the_compose_table_is_valid_and_points_at_the_monolith_service() -> None:
    table = DEPLOY / "compose/strangler/routes.yaml"
    strangler_check(table)
    assert load(table)["backends"]["monolith"]["url"] == "http://monolith:8081"


def test_the_compose_prometheus_configuration_loads_the_rules(tmp_path: Path) -> None:
    promtool = need("promtool")
    compose = load(DEPLOY / "docker-compose.yml")
    # Lay the files out as the container sees them, then let promtool check the whole.
    for volume in compose["services"]["prometheus"]["volumes"]:
        source, target = volume.split(":")[:2]
        destination = tmp_path / Path(target).name
        shutil.copy(DEPLOY / source, destination)
    result = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "12 rules found" in result.stdout
    targets = load(tmp_path / "prometheus.yml")["scrape_configs"][0]["static_configs"][0]
    assert targets["targets"] == ["gateway:9901"]
    # The admin port answers to the name Prometheus scrapes it by (a DNS-rebinding guard
    # refuses names it was not told).
    gateway = compose["services"]["gateway"]
    assert gateway["environment"]["STRANGLER_ADMIN_ALLOWED_HOSTS"] == "gateway"


# ---- kubernetes ---------------------------------------------------------------------------------


def kustomization() -> dict[str, Any]:
    return load(K8S / "kustomization.yaml")  # type: ignore[no-any-return]


def resources() -> dict[str, dict[str, Any]]:
    """Every resource kustomize would emit, by kind (the generated ConfigMap included)."""
    found: dict[str, dict[str, Any]] = {}
    for name in kustomization()["resources"]:
        document = load(K8S / name)
        found[document["kind"]] = document
    for generator in kustomization()["configMapGenerator"]:
        found["ConfigMap"] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": generator["name"]},
            "data": {Path(f).name: (K8S / f).read_text() for f in generator["files"]},
        }
    return found


@pytest.mark.parametrize(
    "kind", ["Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ConfigMap"]
)
def test_core_kinds_validate_strictly(kind: str) -> None:
    document = resources()[kind]
    kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)


def test_kubernetes_validate_strict_passes_on_the_files() -> None:
    files = [K8S / name for name in kustomization()["resources"] if name != "podmonitor.yaml"]
    result = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "--quiet", *map(str, files)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_deployment_matches_the_image_and_the_drain() -> None:
    found = resources()
    deployment = found["Deployment"]
    assert deployment["spec"]["replicas"] >= 2
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    recipe = Recipe(ROOT / "Dockerfile")
    assert ports == {"http": int(recipe.env["STRANGLER_PORT"]), "admin": 9901}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    env = {item["name"]: item["value"] for item in container["env"]}
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = float(env["STRANGLER_SHUTDOWN_GRACE"]) + float(env["STRANGLER_DRAIN_TIMEOUT"])
    assert pod["terminationGracePeriodSeconds"] >= pause + drain
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    assert pod["securityContext"]["runAsUser"] == int(recipe.user.split(":")[0])
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # The table: the ConfigMap mounted as the image's table directory, never with subPath.
    table_dir = str(Path(recipe.env["STRANGLER_CONFIG"]).parent)
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == table_dir]
    assert "subPath" not in mount
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == found["ConfigMap"]["metadata"]["name"]
    assert Path(recipe.env["STRANGLER_CONFIG"]).name in found["ConfigMap"]["data"]
    # A read-only root needs a writable /tmp (function services' data).
    assert "/tmp" in [m["mountPath"] for m in container["volumeMounts"]]
    # Edits update the same ConfigMap (a live reload), not a new one (a rollout).
    assert kustomization()["generatorOptions"]["disableNameSuffixHash"] is True


def test_the_service_hpa_pdb_and_podmonitor_select_the_deployments_pods() -> None:
    found = resources()
    labels = found["Deployment"]["spec"]["template"]["metadata"]["labels"]
    ports = {
        p["name"] for p in found["Deployment"]["spec"]["template"]["spec"]["containers"][0]["ports"]
    }

    def selects(selector: dict[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in selector.items())

    assert selects(found["Service"]["spec"]["selector"])
    assert [p["targetPort"] for p in found["Service"]["spec"]["ports"]] == ["http"]
    assert selects(found["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"])
    target = found["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == (
        "Deployment",
        found["Deployment"]["metadata"]["name"],
    )
    assert found["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2
    monitor = found["PodMonitor"]
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    assert selects(monitor["spec"]["selector"]["matchLabels"])
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in ports
    assert endpoint["path"] == "/metrics"
    assert re.fullmatch(r"\d+s", endpoint["interval"])


def test_the_kubernetes_table_is_valid() -> None:
    strangler_check(K8S / "routes.yaml")


# ---- the rollout controller in kubernetes ------------------------------------------------------

ROLLOUT = DEPLOY / "kubernetes-rollout"


def test_the_rollout_controller_manifests_validate_strictly() -> None:
    files = [ROLLOUT / name for name in load(ROLLOUT / "kustomization.yaml")["resources"]]
    result = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "--quiet", *map(str, files)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_one_controller_may_update_the_tables_configmap_and_nothing_else() -> None:
    found = {
        load(ROLLOUT / name)["kind"]: load(ROLLOUT / name)
        for name in load(ROLLOUT / "kustomization.yaml")["resources"]
    }
    deployment = found["Deployment"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == found["ServiceAccount"]["metadata"]["name"]
    (container,) = pod["containers"]
    args = container["args"]
    table = kustomization()["configMapGenerator"][0]["name"]
    assert args[:3] == ["rollout", "--kubernetes-configmap", f"$(POD_NAMESPACE)/{table}"]
    assert "--prometheus" in args
    (rule,) = found["Role"]["rules"]
    assert rule == {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "resourceNames": [table],
        "verbs": ["get", "update"],
    }
    binding = found["RoleBinding"]
    assert binding["roleRef"]["name"] == found["Role"]["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": found["ServiceAccount"]["metadata"]["name"]}
    ]
    # The controller's flags are the CLI's: it parses them.
    command = [sys.executable, "-m", "proxy", *args, "--dry-run", "--once", "--kubernetes-api"]
    result = subprocess.run(
        [*command, "http://127.0.0.1:9"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # (Kubernetes expands $(POD_NAMESPACE); here the API is unreachable: no decision, exit 0.)
    assert result.returncode == 0, result.stderr
    assert "cannot read configmap $(POD_NAMESPACE)/strangler-routes" in result.stderr
