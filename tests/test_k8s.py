"""The Kubernetes manifests: probes on the service's health routes, one GPU per pod, autoscaling."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from facedemo.config import Settings

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "deploy" / "k8s"


@pytest.fixture(scope="module")
def resources() -> dict[str, dict[str, Any]]:
    """Every manifest document, by kind (each kind appears once)."""
    by_kind: dict[str, dict[str, Any]] = {}
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            assert document["kind"] not in by_kind, f"second {document['kind']} in {path.name}"
            by_kind[document["kind"]] = document
    assert set(by_kind) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    return by_kind


@pytest.fixture(scope="module")
def container(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The Deployment's single container."""
    (only,) = resources["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


def port_number(container: dict[str, Any], port: int | str) -> int:
    """Resolve a probe or service port (a number or a named container port) to a number."""
    if isinstance(port, int):
        return port
    (number,) = (entry["containerPort"] for entry in container["ports"] if entry["name"] == port)
    return int(number)


def dockerfile_value(keyword: str) -> str:
    """The argument of the last `keyword` instruction in the Dockerfile."""
    lines = re.findall(rf"^{keyword}\s+(.+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    return str(lines[-1]).strip()


@pytest.mark.parametrize(
    ("probe", "path"),
    [("startupProbe", "/readyz"), ("livenessProbe", "/livez"), ("readinessProbe", "/readyz")],
)
def test_probes_target_health_routes_on_the_serving_port(
    container: dict[str, Any], probe: str, path: str
) -> None:
    """Each probe is an HTTP GET on the right route and on the port the service listens on."""
    http_get = container[probe]["httpGet"]
    assert http_get["path"] == path
    env = {entry["name"]: entry["value"] for entry in container.get("env", [])}
    serving_port = int(env.get("FACEDEMO_PORT", dockerfile_value("EXPOSE")))
    assert port_number(container, http_get["port"]) == serving_port


def test_startup_probe_allows_for_a_slow_tensorflow_start(container: dict[str, Any]) -> None:
    """At least 2 minutes of startup before liveness can restart the pod."""
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_one_gpu_per_pod_and_gpu_demanded(container: dict[str, Any]) -> None:
    """The pod gets exactly one GPU and refuses to fall back to the CPU."""
    limits = container["resources"]["limits"]
    requests = container["resources"]["requests"]
    assert limits["nvidia.com/gpu"] == 1
    assert requests.get("nvidia.com/gpu", limits["nvidia.com/gpu"]) == limits["nvidia.com/gpu"]
    for kind in ("cpu", "memory"):
        assert kind in requests and kind in limits
    env = {entry["name"]: entry["value"] for entry in container["env"]}
    assert env["FACEDEMO_DEVICE"] == "gpu"


def test_env_names_are_settings_fields(container: dict[str, Any]) -> None:
    """Every FACEDEMO_* variable set in the Deployment is a Settings field."""
    names = [entry["name"] for entry in container["env"] if entry["name"].startswith("FACEDEMO_")]
    assert names
    for name in names:
        assert name.removeprefix("FACEDEMO_").lower() in Settings.model_fields, name


def test_runs_non_root_read_only_without_capabilities(
    resources: dict[str, dict[str, Any]], container: dict[str, Any]
) -> None:
    """Non-root as the image's own UID, read-only root with a writable /tmp, no capabilities."""
    pod = resources["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    image_uid = int(dockerfile_value("USER").split(":")[0])
    assert pod["securityContext"]["runAsUser"] == image_uid
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    (tmp_mount,) = (mount for mount in container["volumeMounts"] if mount["mountPath"] == "/tmp")
    (tmp_volume,) = (volume for volume in pod["volumes"] if volume["name"] == tmp_mount["name"])
    assert "emptyDir" in tmp_volume


def test_service_reaches_the_pods(
    resources: dict[str, dict[str, Any]], container: dict[str, Any]
) -> None:
    """The Service selects the Deployment's pods and forwards to the container's port."""
    service = resources["Service"]["spec"]
    pod_labels = resources["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= pod_labels.items()
    assert resources["Deployment"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (port,) = service["ports"]
    assert port_number(container, port["targetPort"]) == int(dockerfile_value("EXPOSE"))


def test_autoscaler_scales_the_deployment_on_cpu(resources: dict[str, dict[str, Any]]) -> None:
    """autoscaling/v2 on CPU utilisation, in bounds; the Deployment leaves replicas to it."""
    hpa = resources["HorizontalPodAutoscaler"]
    deployment = resources["Deployment"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 0 < metric["resource"]["target"]["averageUtilization"] <= 100
    assert "replicas" not in deployment["spec"]


# What the GPU image's process takes at rest: TensorFlow with CUDA and the models loaded.
AT_REST_BYTES = 2 * 1024**3
MEMORY_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity in bytes ("4Gi", "512Mi", "1048576")."""
    for suffix, factor in MEMORY_UNITS.items():
        if quantity.endswith(suffix):
            return int(quantity.removesuffix(suffix)) * factor
    return int(quantity)


def test_the_memory_request_holds_the_budget_and_the_process_at_rest(
    container: dict[str, Any],
) -> None:
    """The pod is scheduled with room for the memory budget on top of the loaded models."""
    env = {entry["name"]: entry["value"] for entry in container["env"]}
    budget = int(env.get("FACEDEMO_MEMORY_BUDGET_BYTES", Settings().memory_budget_bytes))
    requested = memory_bytes(container["resources"]["requests"]["memory"])
    limit = memory_bytes(container["resources"]["limits"]["memory"])
    assert budget + AT_REST_BYTES <= requested <= limit


def test_probes_wait_no_longer_than_the_service_takes_to_answer_them(
    container: dict[str, Any],
) -> None:
    """A probe's connection is answered within its timeout even under a connection flood: the
    service closes idle connections to make room, and its header deadline is longer than the
    probe's timeout, so a probe is never cut off by it."""
    settings = Settings()
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["timeoutSeconds"] < settings.header_timeout_seconds
