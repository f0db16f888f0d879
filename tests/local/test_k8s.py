"""The API on a real Kubernetes (issue 35): ``python -m lib k8s-local`` (built from source, on 127.0.0.1), the image
built here (``lib.local.images``) and ``kubectl apply -k k8s/`` into a namespace that enforces PodSecurity
``restricted``, as k8s/README.md's "On the development cluster" runs it."""

import http.client
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from lib.config import PROJECT_ROOT
from lib.local import images, k8s, k8s_build
from tests.local.test_services import command

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # the first test may build Kubernetes (10 minutes)


@pytest.fixture(scope="module", autouse=True)
def machine():
    """Root, the Debian packages and the hostname on 127.0.0.1: skipped on a developer machine without them,
    failed in CI (where .ci/run provides them)."""
    lacking = k8s.missing()
    if lacking:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(lacking)


KEY = "k8s-test-key"
TRANSACTION = {"step": 1, "type": "TRANSFER", "amount": 181.0, "nameOrig": "C1305486145", "oldbalanceOrg": 181.0,
               "newbalanceOrig": 0.0, "nameDest": "C553264065", "oldbalanceDest": 0.0, "newbalanceDest": 0.0}  # fmt: skip


def leftovers() -> dict[str, object]:
    """What a stopped cluster must not leave on the host."""
    chains = subprocess.run(["iptables-save"], capture_output=True, text=True, check=False).stdout
    return {
        "chains": [line for line in chains.splitlines() if "KUBE-" in line or "CNI-" in line],
        "bridge": Path(f"/sys/class/net/{k8s.BRIDGE}").exists(),
        "cgroups": [str(p) for p in Path("/sys/fs/cgroup").glob("*/kubepods")],
        "processes": [p for p in ("kubelet", "kube-apiserver", "etcd", "containerd-shim-runc-v2")
                      if subprocess.run(["pgrep", "-x", p[:15]], capture_output=True, check=False).returncode == 0],
    }  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with k8s.LocalK8s(tmp_path_factory.mktemp("k8s")) as running:
        yield running
    assert leftovers() == {"chains": [], "bridge": False, "cgroups": [], "processes": []}


@pytest.fixture(scope="module")
def api_images(cluster, model_versions):
    """The API image with bundle v1 and with bundle v2 (two tags of this test's own), in the cluster's containerd."""
    run = uuid.uuid4().hex[:8]
    built = {v: images.build_api(model_versions[v], f"test-{run}-v{v}") for v in ("1", "2")}
    for image in built.values():
        images.load(image, k8s.containerd_socket(cluster.data_dir))
    yield built
    engine, env = images.engine()
    subprocess.run([*engine, "rmi", *built.values()], env=env, capture_output=True, check=False)


@pytest.fixture(scope="module")
def deployed(cluster, api_images):
    """``kubectl apply -k k8s/`` into a namespace enforcing ``restricted``, the image set to v1; its NodePort."""
    ns = "fraud-test"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    cluster.kubectl("-n", ns, "create", "secret", "generic", "fraud-api-keys", f"--from-literal=FRAUD_API_KEYS={KEY}")
    cluster.kubectl("apply", "-k", str(PROJECT_ROOT / "k8s"), "-n", ns)
    cluster.kubectl("-n", ns, "set", "image", "deployment/fraud-api", f"api={api_images['1']}")
    cluster.kubectl("-n", ns, "rollout", "status", "deployment/fraud-api", "--timeout=240s", timeout=260)
    port = json.loads(cluster.kubectl("-n", ns, "get", "service", "fraud-api", "-o", "json"))["spec"]["ports"][0]
    return ns, port["nodePort"]


def predict(port: int, timeout: float = 5) -> tuple[int, dict]:
    """One request on a new connection (a client without keep-alive: each request finds its pod anew)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/v1/predict", json.dumps(TRANSACTION),
                           {"X-API-Key": KEY, "Content-Type": "application/json"})  # fmt: skip
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read() or b"{}")
    finally:
        connection.close()


def pods(cluster, ns: str) -> list[dict]:
    found = json.loads(cluster.kubectl("-n", ns, "get", "pods", "-l", "app.kubernetes.io/name=fraud-api", "-o", "json"))
    return found["items"]


def recipe() -> list[str]:
    """The commands of k8s/README.md's "On the development cluster", one per line."""
    text = (PROJECT_ROOT / "k8s" / "README.md").read_text().split("## On the development cluster")[1]
    return [line.split("  #")[0].strip() for line in text.split("```bash")[1].split("```")[0].strip().splitlines()]


def test_the_documented_recipe(tmp_path, model_versions):
    """(First: one cluster at a time on a machine; the module's own starts with the next test.) k8s/README.md's
    commands as written, in a home and an image store of the test's own (the user's images and cluster stay
    alone), from a folder holding k8s/ and a bundle at data/bundle; then k8s-local's status and stop."""
    home, work = tmp_path / "home", tmp_path / "work"
    (home / ".cache" / "fraud-mlops" / "k8s" / k8s_build.K8S_VERSION).mkdir(parents=True)
    (home / ".cache" / "fraud-mlops" / "k8s" / k8s_build.K8S_VERSION / "bin").symlink_to(k8s_build.ensure_binaries())
    shutil.copytree(PROJECT_ROOT / "k8s", work / "k8s")
    shutil.copytree(model_versions["2"], work / "data" / "bundle")
    storage = tmp_path / "storage.conf"
    storage.write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{tmp_path / "images"}"\nrunroot = "{tmp_path / "run"}"\n'
    )
    env = {"HOME": str(home), "PATH": f"{PROJECT_ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
           "CONTAINERS_STORAGE_CONF": str(storage), "LANG": "C.UTF-8"}  # fmt: skip
    cli = command("k8s-local", env, timeout=300)
    assert cli("status").returncode == 3
    *steps, last = recipe()
    assert last == "python -m lib k8s-local stop" and steps[0] == "python -m lib k8s-local start"
    script = "set -euxo pipefail\n" + "\n".join(steps)
    try:
        done = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, done.stderr[-4000:]
        assert '{"status":"ok"}' in done.stdout and 'deployment "fraud-api" successfully rolled out' in done.stdout
        status = cli("status")
        assert status.returncode == 0 and " Ready " in status.stdout and "kube-apiserver" in status.stdout
        assert cli("start").stdout.startswith("Kubernetes ")  # the running one, not a second cluster
    finally:
        stopped = subprocess.run(["bash", "-c", last], cwd=work, env=env, capture_output=True, text=True, timeout=300)
        subprocess.run(["podman", "rmi", "-a", "-f"], env=env, capture_output=True, check=False)
    assert stopped.stdout.strip() == "stopped", stopped.stderr
    assert leftovers() == {"chains": [], "bridge": False, "cgroups": [], "processes": []}
    assert cli("stop").stdout.strip() == "no local Kubernetes cluster was running"


def test_every_replica_is_ready_and_answers_through_the_service(cluster, deployed):
    ns, port = deployed
    running = pods(cluster, ns)
    assert len(running) == 2
    assert all(c["ready"] for p in running for c in p["status"]["containerStatuses"])
    status, answer = predict(port)
    assert status == 200 and answer["model_version"] == "1" and 0 <= answer["fraud_probability"] <= 1, answer


def test_inside_the_pod_non_root_read_only_no_capabilities_no_service_links(cluster, deployed):
    ns, _ = deployed
    pod = pods(cluster, ns)[0]["metadata"]["name"]
    probe = ("import os, pathlib; s = pathlib.Path('/proc/self/status').read_text();"
             "caps = [l.split()[1] for l in s.splitlines() if l.startswith(('CapEff', 'CapPrm', 'CapBnd'))];"
             "w = os.access('/app', os.W_OK) or os.access('/', os.W_OK);"
             "print(os.getuid(), os.getgid(), ','.join(caps), w, sorted(k for k in os.environ if k.startswith('FRAUD_')))")  # fmt: skip
    out = cluster.kubectl("-n", ns, "exec", pod, "--", "python", "-c", probe).split(" ", 4)
    assert out[:2] == ["10001", "10001"]
    assert set(out[2].split(",")) == {"0000000000000000"}, out[2]  # no capabilities at all
    assert out[3] == "False"  # the root filesystem is read-only
    assert "FRAUD_API_PORT" not in out[4] and "FRAUD_API_KEYS" in out[4]  # no Service links in FRAUD_


def test_a_model_update_rolls_out_under_load_with_no_failed_request(cluster, deployed, api_images):
    """A new bundle is a new image tag; `kubectl set image` replaces the pods one at a time while requests flow."""
    ns, port = deployed
    outcomes: list[tuple[int, str]] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set() and len(outcomes) < 200_000:
            try:
                status, answer = predict(port)
                outcomes.append((status, answer.get("model_version", "")))
            except OSError as exc:
                outcomes.append((0, type(exc).__name__))

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(3)
        began = time.monotonic()
        cluster.kubectl("-n", ns, "set", "image", "deployment/fraud-api", f"api={api_images['2']}")
        cluster.kubectl("-n", ns, "rollout", "status", "deployment/fraud-api", "--timeout=240s", timeout=260)
        rolled = time.monotonic() - began
        time.sleep(3)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
    failed = [o for o in outcomes if o[0] != 200]
    versions = [v for s, v in outcomes if s == 200]
    print(f"rollout {rolled:.1f} s; {len(outcomes):,} requests, {len(failed)} failed")
    assert not failed, f"{len(failed)} of {len(outcomes)} requests failed during the rollout: {failed[:5]}"
    assert versions[0] == "1" and versions[-1] == "2" and len(versions) > 100
