"""The API on a real Kubernetes (issue 35): ``python -m lib k8s-local`` (built from source, on 127.0.0.1), the image
built here (``lib.local.images``) and ``kubectl apply -k k8s/`` into a namespace that enforces PodSecurity
``restricted``, as k8s/README.md's "On the development cluster" runs it."""

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lib.config import PROJECT_ROOT
from lib.local import images, k8s, k8s_build
from lib.local.daemons import free_port
from tests.local.test_services import command
from tests.monitoring.test_monitoring import need, panel_queries, query

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
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    return {
        "mounts": [m for m in mounts if m.startswith(("/var/lib/fraud-mlops-k8s/", "/run/netns/cni-"))],
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
    assert leftovers() == {"mounts": [], "chains": [], "bridge": False, "cgroups": [], "processes": []}


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


def recipe(section: str = "## On the development cluster") -> list[str]:
    """The commands of k8s/README.md's first bash block under ``section``, one per line."""
    text = (PROJECT_ROOT / "k8s" / "README.md").read_text().split(section)[1]
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
    assert leftovers() == {"mounts": [], "chains": [], "bridge": False, "cgroups": [], "processes": []}
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


@contextlib.contextmanager
def under_load(port: int, clients: int = 4) -> Iterator[list[tuple[int, str]]]:
    """``clients`` threads sending requests (each on a new connection) while the block runs (at most 200,000);
    yields their outcomes: (status or 0 for a connection error, model version or the error's name)."""
    outcomes: list[tuple[int, str]] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set() and len(outcomes) < 200_000:
            try:
                status, answer = predict(port)
                outcomes.append((status, answer.get("model_version", "")))
            except OSError as exc:
                outcomes.append((0, type(exc).__name__))

    workers = [threading.Thread(target=load) for _ in range(clients)]
    for worker in workers:
        worker.start()
    try:
        yield outcomes
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)


def test_a_model_update_rolls_out_under_load_with_no_failed_request(cluster, deployed, api_images):
    """A new bundle is a new image tag; `kubectl set image` replaces the pods one at a time while requests flow."""
    ns, port = deployed
    with under_load(port) as outcomes:
        time.sleep(3)
        began = time.monotonic()
        cluster.kubectl("-n", ns, "set", "image", "deployment/fraud-api", f"api={api_images['2']}")
        cluster.kubectl("-n", ns, "rollout", "status", "deployment/fraud-api", "--timeout=240s", timeout=260)
        rolled = time.monotonic() - began
        time.sleep(3)
    failed = [o for o in outcomes if o[0] != 200]
    versions = [v for s, v in outcomes if s == 200]
    print(f"rollout {rolled:.1f} s; {len(outcomes):,} requests, {len(failed)} failed")
    assert not failed, f"{len(failed)} of {len(outcomes)} requests failed during the rollout: {failed[:5]}"
    assert versions[0] == "1" and versions[-1] == "2" and len(versions) > 100


def test_a_stalled_pod_leaves_the_service_and_is_restarted(cluster, deployed):
    """Every process of one pod's container stopped (SIGSTOP): readiness takes it out of the Service's endpoints,
    liveness restarts it, and it comes back Ready and in the endpoints."""
    ns, _ = deployed
    pod = pods(cluster, ns)[0]
    name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
    container = pod["status"]["containerStatuses"][0]["containerID"].removeprefix("containerd://")
    ctr = ["ctr", "--address", str(k8s.containerd_socket(cluster.data_dir)), "-n", "k8s.io"]
    listed = subprocess.run([*ctr, "tasks", "ps", container], capture_output=True, text=True, check=True).stdout
    pids = [int(line.split()[0]) for line in listed.splitlines()[1:] if line.strip()]

    def endpoints() -> set[str]:
        slices = json.loads(cluster.kubectl("-n", ns, "get", "endpointslices", "-l",
                                            "kubernetes.io/service-name=fraud-api", "-o", "json"))  # fmt: skip
        return {a for s in slices["items"] for e in s.get("endpoints") or [] if e["conditions"].get("ready")
                for a in e["addresses"]}  # fmt: skip

    def wait(what: str, done, timeout: float = 150) -> float:
        began, deadline = time.monotonic(), time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return time.monotonic() - began
            time.sleep(1)
        raise AssertionError(f"{what} did not happen within {timeout:.0f} s")

    assert ip in endpoints() and pids
    began = time.monotonic()
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    out = wait("the stalled pod leaving the endpoints", lambda: ip not in endpoints())

    def restarted() -> bool:
        status = json.loads(cluster.kubectl("-n", ns, "get", "pod", name, "-o", "json"))["status"]
        return status["containerStatuses"][0]["restartCount"] >= 1

    wait("the liveness probe's restart", restarted)
    restart = time.monotonic() - began
    back = wait("the restarted pod back in the endpoints", lambda: ip in endpoints()) + restart
    print(
        f"stalled pod: out of the endpoints after {out:.0f} s, restarted after {restart:.0f} s, back after {back:.0f} s"
    )


def test_prometheus_finds_the_pods_through_the_api_server(cluster, deployed, tmp_path):
    """k8s/README.md's `monitoring-local start --kubeconfig` (the project's config and rules): Prometheus finds the
    API's pods with kubernetes_sd_configs against the cluster's API server, as a read-only identity, and scrapes
    each; every dashboard panel whose series the API exports answers."""
    need("prometheus-pushgateway")
    ns, port = deployed
    kubeconfig = str(cluster.data_dir / "prometheus.kubeconfig")
    cache = tmp_path / "cache"
    (cache / "fraud-mlops" / "k8s" / k8s_build.K8S_VERSION).mkdir(parents=True)
    (cache / "fraud-mlops" / "k8s" / k8s_build.K8S_VERSION / "bin").symlink_to(k8s_build.ensure_binaries())
    cli = command("monitoring-local", {**os.environ, "XDG_CACHE_HOME": str(cache)})
    running = {p["metadata"]["name"] for p in pods(cluster, ns)}
    started = cli("start", "--kubeconfig", kubeconfig, "--port", str(free_port()), "--pushgateway-port",
                  str(free_port()))  # fmt: skip
    assert started.returncode == 0, started.stderr
    prometheus = started.stdout.split()[1]
    try:
        with under_load(port, clients=2) as outcomes:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                scraped = {r["metric"]["pod"] for r in query(prometheus, 'up{job="fraud-api"} == 1')}
                if scraped >= running:
                    break
                time.sleep(1)
            assert scraped >= running, (scraped, running, cli("status").stdout)
            time.sleep(6)  # a few scrapes under load, so rates have two points
            exported = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            checked, empty = [], []
            for title, expr in panel_queries():
                if all(name in exported for name in re.findall(r"fraud_\w+", expr)):
                    checked.append(title)
                    if not query(prometheus, expr.replace("$__rate_interval", "30s")):
                        empty.append(f"{title}: {expr}")
        rules = json.loads(urllib.request.urlopen(f"{prometheus}/api/v1/rules").read())["data"]["groups"]
    finally:
        assert cli("stop").stdout.strip() == "stopped"
    assert len(checked) >= 8 and not empty, (checked, empty)
    assert rules and all(r["health"] == "ok" for g in rules for r in g["rules"])  # the rules load in Prometheus 3
    assert all(status == 200 for status, _ in outcomes)
    forbidden = cluster.kubectl("auth", "can-i", "create", "pods", "--kubeconfig", kubeconfig, check=False)
    assert forbidden.strip() == "no"  # Prometheus's identity reads, and nothing else


def test_the_hpa_scales_up_under_load(cluster, deployed):
    """metrics-server's CPU figures reach the HorizontalPodAutoscaler (60 % of the pods' 500m request), which adds
    pods under load; they become Ready and serve."""
    ns, port = deployed

    def hpa() -> dict:
        return json.loads(cluster.kubectl("-n", ns, "get", "hpa", "fraud-api", "-o", "json"))["status"]

    def utilization() -> int | None:
        metrics = hpa().get("currentMetrics") or [{}]
        return metrics[0].get("resource", {}).get("current", {}).get("averageUtilization")

    deadline = time.monotonic() + 120
    while utilization() is None and time.monotonic() < deadline:  # metrics-server's first figures
        time.sleep(2)
    assert utilization() is not None, hpa()
    with under_load(port) as outcomes:
        began = time.monotonic()
        deadline = began + 300
        while time.monotonic() < deadline:
            ready = json.loads(cluster.kubectl("-n", ns, "get", "deployment", "fraud-api", "-o", "json"))["status"]
            if ready.get("readyReplicas", 0) > 2:
                break
            time.sleep(2)
        scaled = time.monotonic() - began
        status = hpa()
    print(f"HPA: {status['currentReplicas']} -> {status['desiredReplicas']} replicas, a third Ready after "
          f"{scaled:.0f} s under load; {len(outcomes):,} requests, {sum(o[0] != 200 for o in outcomes)} failed")  # fmt: skip
    assert ready.get("readyReplicas", 0) > 2, (status, ready)
    assert not [o for o in outcomes if o[0] != 200]


def test_the_online_store_component_on_the_cluster(cluster, deployed, api_images, tmp_path):
    """(Last: the node's 2 CPUs hold one API Deployment, so the others' namespace goes first.) k8s/README.md's "The
    online store on the development cluster" as written, from a folder holding k8s/ and its overlay (store/): the API
    resolves the Service ``online-store`` through the cluster's DNS, reads and records each transaction's entity
    features in that Redis, answers 503 naming the store while it has no pod, and scores again once it is back."""
    cluster.kubectl("delete", "namespace", deployed[0], "--timeout=180s", timeout=200)
    section = "### The online store on the development cluster"
    # k8s-image loads into the user's development cluster, which the test's is not: the stand-in goes in first
    images.load(images.redis_stand_in(), k8s.containerd_socket(cluster.data_dir))
    shutil.copytree(PROJECT_ROOT / "k8s", tmp_path / "k8s")
    text = (PROJECT_ROOT / "k8s" / "README.md").read_text().split(section)[1]
    overlay = yaml.safe_load(text.split("```yaml")[1].split("```")[0])  # the README's overlay, as written
    overlay["images"].append({"name": "paysim-fraud-api", "newName": images.API_IMAGE,
                              "newTag": api_images["1"].rsplit(":", 1)[1]})  # fmt: skip
    record = [{"op": "add", "path": "/data/FRAUD_STORE_RECORD", "value": "true"}]
    overlay["patches"] = [{"target": {"kind": "ConfigMap", "name": "fraud-api"}, "patch": json.dumps(record)}]
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    ns = "fraud"  # the README's
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    cluster.kubectl("-n", ns, "create", "secret", "generic", "fraud-api-keys", f"--from-literal=FRAUD_API_KEYS={KEY}")
    env = {**os.environ, "HOME": str(tmp_path / "home"), "KUBECONFIG": str(cluster.kubeconfig),
           "PATH": f"{cluster.bin}:{PROJECT_ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}  # fmt: skip
    done = subprocess.run(["bash", "-c", "set -euxo pipefail\n" + "\n".join(recipe(section))], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"{images.REDIS_STAND_IN} built (no development" in done.stdout, done.stdout
    assert 'deployment "online-store" successfully rolled out' in done.stdout, done.stdout
    cluster.kubectl("-n", ns, "rollout", "status", "deployment/fraud-api", "--timeout=240s", timeout=260)
    service = json.loads(cluster.kubectl("-n", ns, "get", "service", "-o", "json"))["items"]
    address = {s["metadata"]["name"]: s["spec"] for s in service}
    resolved = cluster.kubectl("-n", ns, "exec", "deployment/fraud-api", "--", "python", "-c",
                               "import socket; print(socket.gethostbyname('online-store'))")  # fmt: skip
    assert resolved.strip() == address["online-store"]["clusterIP"]
    port = address["fraud-api"]["ports"][0]["nodePort"]

    def redis(*args: str) -> str:
        return cluster.kubectl("-n", ns, "exec", "deployment/online-store", "--", "redis-cli", *args).strip()

    def answers(status: int, within: float = 60) -> tuple[int, dict]:
        deadline = time.monotonic() + within  # kube-proxy's rules follow a new pod within seconds
        while (outcome := predict(port))[0] != status and time.monotonic() < deadline:
            time.sleep(1)
        return outcome

    assert answers(200)[0] == 200
    assert sorted(redis("--scan").split()) == [
        f"fraud:d:{TRANSACTION['nameDest']}",
        f"fraud:o:{TRANSACTION['nameOrig']}",
    ]
    assert redis("hget", f"fraud:o:{TRANSACTION['nameOrig']}", f"n{TRANSACTION['step']}") == "1"  # recorded once
    cluster.kubectl("-n", ns, "scale", "deployment/online-store", "--replicas=0")
    cluster.kubectl("-n", ns, "wait", "--for=delete", "pod", "-l", "app.kubernetes.io/name=online-store",
                    "--timeout=120s", timeout=130)  # fmt: skip
    status, body = answers(503)
    assert status == 503 and "redis://online-store:6379/0" in body["detail"], body
    cluster.kubectl("-n", ns, "scale", "deployment/online-store", "--replicas=1")
    cluster.kubectl("-n", ns, "rollout", "status", "deployment/online-store", "--timeout=120s", timeout=130)
    assert answers(200)[0] == 200  # a new, empty Redis (no persistence): the stream or `store backfill` refills it
