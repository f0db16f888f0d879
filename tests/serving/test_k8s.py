"""Kubernetes manifests: valid against the Kubernetes schemas (no cluster), wired to each other and to the app."""

import kubernetes_validate
import pytest
import yaml

from lib.config import PROJECT_ROOT, Settings

K8S = PROJECT_ROOT / "k8s"
KUBERNETES_VERSION = "1.33.0"


def manifests() -> dict[str, dict]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return {name: yaml.safe_load((K8S / name).read_text()) for name in kustomization["resources"]}


def service_monitor() -> dict:
    """The opt-in component k8s/prometheus-operator's one object."""
    component = yaml.safe_load((K8S / "prometheus-operator" / "kustomization.yaml").read_text())
    assert component["kind"] == "Component"
    [name] = component["resources"]
    return yaml.safe_load((K8S / "prometheus-operator" / name).read_text())


@pytest.mark.parametrize("name", list(manifests()))
def test_manifest_is_valid(name):
    """Every object of `kubectl apply -k k8s/` is core Kubernetes: it applies on a cluster without CRDs."""
    kubernetes_validate.validate(manifests()[name], KUBERNETES_VERSION, strict=True)


def test_every_manifest_file_is_in_the_kustomization():
    listed = set(manifests())
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


def test_probes_security_and_wiring():
    m = {doc["kind"]: doc for doc in manifests().values()}
    pod = m["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert set(container["resources"]) == {"requests", "limits"}
    labels = m["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert m["Service"]["spec"]["selector"].items() <= labels.items()
    monitor = service_monitor()
    assert monitor["kind"] == "ServiceMonitor" and monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= m["Service"]["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == m["Service"]["spec"]["ports"][0]["name"]
    assert m["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == m["Deployment"]["metadata"]["name"]
    secret = container["env"][0]["valueFrom"]["secretKeyRef"]
    assert container["env"][0]["name"] == "FRAUD_API_KEYS" and secret["name"] == "fraud-api-keys"


def test_the_pod_runs_one_worker_per_core_of_its_limit():
    m = {doc["kind"]: doc for doc in manifests().values()}
    settings = Settings(**{k.removeprefix("FRAUD_").lower(): v for k, v in m["ConfigMap"]["data"].items()})
    limit = m["Deployment"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"]
    assert settings.serving_workers == int(limit) == 2


def test_image_pins_match_the_lock_and_it_runs_as_non_root():
    lock = dict(
        line.split("#")[0].strip().split("==")
        for line in (PROJECT_ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line
    )
    for line in (K8S / "requirements-serve.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            assert lock.get("xgboost" if name == "xgboost-cpu" else name) == version, line
    dockerfile = (K8S / "Dockerfile").read_text()
    assert "USER 10001" in dockerfile and dockerfile.count("FROM ") == 2
    assert '"-m", "lib.serving"' in dockerfile and (PROJECT_ROOT / "lib" / "serving" / "__main__.py").is_file()


def test_the_online_store_component_is_valid_and_wired_to_the_api():
    """k8s/online-store: a Redis Deployment and Service, and the API's FRAUD_REDIS_URL naming that Service."""
    folder = K8S / "online-store"
    component = yaml.safe_load((folder / "kustomization.yaml").read_text())
    docs = [d for name in component["resources"] for d in yaml.safe_load_all((folder / name).read_text())]
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    kinds = {doc["kind"]: doc for doc in docs}
    service, pod = kinds["Service"], kinds["Deployment"]["spec"]["template"]["spec"]
    assert service["spec"]["selector"].items() <= kinds["Deployment"]["spec"]["template"]["metadata"]["labels"].items()
    assert not service["metadata"]["name"].startswith("fraud")  # its injected variables stay outside FRAUD_
    assert pod["securityContext"]["runAsNonRoot"] and pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"]
    [patch] = component["patches"]
    assert patch["target"] == {"kind": "ConfigMap", "name": manifests()["configmap.yaml"]["metadata"]["name"]}
    [op] = yaml.safe_load(patch["patch"])
    url = f"redis://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/0"
    assert op == {"op": "add", "path": "/data/FRAUD_REDIS_URL", "value": url}
    assert Settings(redis_url=op["value"]).redis_url == url
