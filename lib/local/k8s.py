"""A real single-node Kubernetes on this machine, built from source (issue 35): ``python -m lib k8s-local
start|status|stop``.

Kubernetes' own programs (``lib.local.k8s_build``: kube-apiserver, kube-controller-manager, kube-scheduler,
kubelet, kube-proxy, kubectl, etcd, metrics-server, CoreDNS, built once into the project's cache), Debian's containerd
and runc as the container runtime and Debian's CNI plugins for the pods' network. Everything listens on
127.0.0.1; the node's name is this machine's hostname, which must resolve to 127.0.0.1 (``/etc/hosts``).
Needs root (the kubelet and containerd own cgroups, mounts and iptables).

What ``stop`` removes besides the processes: the pods' containers (containerd's state) and network namespaces,
the kubelet's mounts and its root folder (``/var/lib/fraud-mlops-k8s/<hash>``: the pods' volumes), the pods'
cgroups (``kubepods``), kube-proxy's and the CNI plugins' iptables chains, and the pods' bridge. It leaves
``/run/netns`` a shared mount point, as podman and ``ip netns`` leave it. The cluster's files (PKI, etcd's data, images) stay in its folder for the next ``start``.

A user's own cluster (Minikube, kind, EKS, GKE) differs: see k8s/README.md, "On the development cluster".
"""

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from lib import atomic
from lib.config import get_settings
from lib.errors import PipelineError
from lib.local import daemons, k8s_build, k8s_config, k8s_pki
from lib.local.daemons import free_port
from lib.local.k8s_config import BRIDGE, PAUSE_IMAGE

SERVICE_CIDR = "10.96.0.0/16"
NEEDS = {"containerd": "containerd", "runc": "runc", "iptables": "iptables", "ip": "iproute2",
         "/usr/lib/cni/bridge": "containernetworking-plugins"}  # fmt: skip


class K8sError(PipelineError):
    """The development cluster cannot be started or reached."""


def cache_dir() -> Path:
    return get_settings().cache_dir / "k8s"


def missing() -> str | None:
    """What this machine lacks for the cluster (root, Debian packages, the hostname on 127.0.0.1), or None."""
    if os.geteuid() != 0:
        return "the development cluster needs root (the kubelet and containerd set up cgroups, mounts, iptables)"
    lacking = sorted({package for tool, package in NEEDS.items() if not (shutil.which(tool) or Path(tool).exists())})
    if lacking:
        return f"missing: apt-get install {' '.join(lacking)}"
    host = socket.gethostname()
    try:
        address = socket.gethostbyname(host)
    except OSError:
        address = ""
    if address != "127.0.0.1":
        return (f"the hostname {host!r} must resolve to 127.0.0.1 (it gives {address or 'nothing'}): "
                f"add '127.0.0.1 {host}' to /etc/hosts")  # fmt: skip
    return None


def prerequisites() -> None:
    """Refuse, naming what is missing or in the way, before anything starts."""
    lacking = missing()
    if lacking:
        raise K8sError(lacking)
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            program = cmdline.read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if program.endswith(b"/kubelet") or program == b"kubelet":
            raise K8sError(f"another Kubernetes node runs on this machine (kubelet, pid {cmdline.parent.name}): one at "
                           "a time (python -m lib k8s-local stop, or minikube stop)")  # fmt: skip


@dataclass
class LocalK8s:
    """etcd, the control plane, containerd, the kubelet and kube-proxy, with their files in ``data_dir``."""

    data_dir: Path
    port: int = 0  # the API server's
    version: str = k8s_build.K8S_VERSION
    pids: dict[str, int] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.port = self.port or free_port()

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "admin.kubeconfig"

    @property
    def bin(self) -> Path:
        return k8s_build.bin_dir(self.version)

    def kubectl(self, *args: str, check: bool = True, timeout: float = 120, stdin: str | None = None) -> str:
        """``kubectl`` against this cluster as its admin; its output (K8sError with stderr when it fails)."""
        command = [str(self.bin / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, input=stdin, check=False)
        if check and done.returncode:
            raise K8sError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()[-2000:]}")
        return done.stdout

    def _spawn(self, name: str, command: list[str], detach: bool) -> None:
        self.pids[name] = daemons.spawn(command, self.data_dir / "logs" / f"{name}.log", None, detach)

    def start(self, timeout: float = 180.0, detach: bool = False) -> "LocalK8s":
        """Build what is missing, then start each part in order; return once the node is Ready."""
        prerequisites()
        bin_dir = k8s_build.ensure_binaries(self.version)
        d, host = self.data_dir, socket.gethostname()
        pki = k8s_pki.make_pki(d / "pki", host)
        for name in ("etcd", "etcd_peer", "kubelet", "kubelet_health", "proxy_health", "proxy_metrics",
                     "scheduler", "controller_manager", "metrics_server", "dns_ready"):  # fmt: skip
            self.ports[name] = self.ports.get(name) or free_port()
        for user in ("admin", "controller-manager", "scheduler", "kube-proxy", "kubelet-client", "metrics-server",
                     "prometheus", "coredns"):  # fmt: skip
            k8s_pki.kubeconfig(d / f"{user}.kubeconfig", self.server, pki, user)
        try:
            self._start_control_plane(bin_dir, pki, detach, timeout)
            self._start_node(bin_dir, pki, host, detach, timeout)
            self._start_addons(bin_dir, pki, detach, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_control_plane(self, bin_dir: Path, pki: Path, detach: bool, timeout: float) -> None:
        d, p = self.data_dir, self.ports
        etcd = f"http://127.0.0.1:{p['etcd']}"
        peer = f"http://127.0.0.1:{p['etcd_peer']}"
        self._spawn("etcd", [str(bin_dir / "etcd"), "--name", "default", "--data-dir", str(d / "etcd"),
                             "--listen-client-urls", etcd, "--advertise-client-urls", etcd,
                             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                             "--initial-cluster", f"default={peer}", "--log-level", "warn"], detach)  # fmt: skip
        self._spawn("kube-apiserver", [
            str(bin_dir / "kube-apiserver"), f"--etcd-servers={etcd}", f"--secure-port={self.port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none",
            f"--service-cluster-ip-range={SERVICE_CIDR}", f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}", f"--client-ca-file={pki / 'ca.crt'}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}", "--kubelet-preferred-address-types=Hostname",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
            f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client", "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group", "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki / 'front-proxy-client.key'}", "--enable-aggregator-routing=true",
        ], detach)  # fmt: skip
        self._wait(lambda: self._healthy("/readyz"), "the API server", timeout)
        common = ["--authentication-kubeconfig={kc}", "--authorization-kubeconfig={kc}", "--kubeconfig={kc}",
                  "--bind-address=127.0.0.1", "--leader-elect=false"]  # fmt: skip
        kc = d / "controller-manager.kubeconfig"
        self._spawn("kube-controller-manager", [
            str(bin_dir / "kube-controller-manager"), *(a.format(kc=kc) for a in common),
            f"--secure-port={p['controller_manager']}", f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}", f"--root-ca-file={pki / 'ca.crt'}",
            f"--service-account-private-key-file={pki / 'sa.key'}", "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
        ], detach)  # fmt: skip
        kc = d / "scheduler.kubeconfig"
        self._spawn("kube-scheduler", [str(bin_dir / "kube-scheduler"), *(a.format(kc=kc) for a in common),
                                       f"--secure-port={p['scheduler']}"], detach)  # fmt: skip

    def _start_node(self, bin_dir: Path, pki: Path, host: str, detach: bool, timeout: float) -> None:
        d, p = self.data_dir, self.ports
        socket_path = containerd_socket(d)
        atomic.write_text(d / "cni" / "10-fraud.conflist", k8s_config.cni(d / "cni-ipam"))
        atomic.write_text(d / "containerd.toml", k8s_config.containerd(d, socket_path))
        _bridge()  # before containerd: metrics-server listens on its address before any pod exists
        _shared_netns()
        self._spawn("containerd", ["containerd", "--config", str(d / "containerd.toml")], detach)
        self._wait(socket_path.exists, "containerd", timeout)
        self._import_pause(bin_dir, socket_path)
        atomic.write_text(d / "kubelet.yaml", k8s_config.kubelet(pki, p["kubelet"], p["kubelet_health"], socket_path))
        self._spawn("kubelet", [str(bin_dir / "kubelet"), f"--config={d / 'kubelet.yaml'}",
                                f"--kubeconfig={d / 'kubelet-client.kubeconfig'}", f"--root-dir={kubelet_root(d)}",
                                f"--hostname-override={host}"], detach)  # fmt: skip
        atomic.write_text(d / "kube-proxy.yaml", k8s_config.proxy(d / "kube-proxy.kubeconfig", p))
        self._spawn("kube-proxy", [str(bin_dir / "kube-proxy"), f"--config={d / 'kube-proxy.yaml'}",
                                   f"--hostname-override={host}"], detach)  # fmt: skip
        self._wait(lambda: self._node_ready(host), f"the node {host}", timeout)

    def _start_addons(self, bin_dir: Path, pki: Path, detach: bool, timeout: float) -> None:
        """metrics-server and CoreDNS on the pods' gateway address, as host processes: metrics-server registered as
        ``metrics.k8s.io`` (its first figures come after its first scrape of the kubelet, 15 s), CoreDNS behind the
        Service ``kube-dns`` that the kubelet gives pods as their nameserver."""
        d, kc = self.data_dir, self.data_dir / "metrics-server.kubeconfig"
        self.kubectl("apply", "-f", "-", stdin=k8s_config.addons(self.ports["metrics_server"]))  # their RBAC first
        atomic.write_text(d / "Corefile", k8s_config.corefile(d / "coredns.kubeconfig", self.ports["dns_ready"]))
        self._spawn("coredns", [str(bin_dir / "coredns"), "-conf", str(d / "Corefile")], detach)
        self._spawn("metrics-server", [
            str(bin_dir / "metrics-server"), f"--bind-address={k8s_config.GATEWAY}",
            f"--secure-port={self.ports['metrics_server']}", f"--cert-dir={d / 'metrics-server'}", f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--kubelet-preferred-address-types=Hostname", "--kubelet-use-node-status-port",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            "--metric-resolution=15s",
        ], detach)  # fmt: skip
        available = '{.status.conditions[?(@.type=="Available")].status}'
        self._wait(lambda: self.kubectl("get", "apiservice", "v1beta1.metrics.k8s.io", "-o", f"jsonpath={available}",
                                        check=False, timeout=10) == "True", "metrics-server's API", timeout)  # fmt: skip
        self._wait(lambda: daemons.http_ok(f"http://127.0.0.1:{self.ports['dns_ready']}/ready"), "CoreDNS", timeout)

    def _import_pause(self, bin_dir: Path, socket_path: Path) -> None:
        """The pod sandbox's image: our ``pause`` program alone in an OCI archive, imported into containerd."""
        from lib.local.images import import_archive
        from lib.local.oci import single_binary_image

        import_archive(
            single_binary_image(bin_dir / "pause", PAUSE_IMAGE, self.data_dir / "pause.oci.tar"), socket_path
        )

    def _healthy(self, path: str) -> bool:
        return self.kubectl("get", "--raw", path, check=False, timeout=10).strip() == "ok"

    def _node_ready(self, host: str) -> bool:
        path = '{.status.conditions[?(@.type=="Ready")].status}'
        return self.kubectl("get", "node", host, "-o", f"jsonpath={path}", check=False, timeout=10) == "True"

    def _wait(self, ready, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stopped = [name for name, pid in self.pids.items() if not daemons.alive(pid)]
            if stopped:
                raise K8sError(f"{', '.join(stopped)} exited while waiting for {what}:\n{self._logs(stopped)}")
            if ready():
                return
            time.sleep(0.5)
        raise K8sError(f"{what} was not ready within {timeout:.0f} s:\n{self._logs(list(self.pids))}")

    def _logs(self, names: list[str]) -> str:
        tails = []
        for name in names:
            log = self.data_dir / "logs" / f"{name}.log"
            text = log.read_text(errors="replace")[-1200:] if log.exists() else ""
            tails.append(f"--- {log}\n{text}")
        return "\n".join(tails)

    def started(self) -> str:
        return (f"Kubernetes {self.version} running on 127.0.0.1 (node {socket.gethostname()}): "
                f"export KUBECONFIG={self.kubeconfig} PATH={self.bin}:$PATH")  # fmt: skip

    def status(self) -> str:
        lines = [f"KUBECONFIG={self.kubeconfig} (API server {self.server})"]
        for name, pid in self.pids.items():
            lines.append(f"  {name:<24} pid {pid:<8} {'running' if daemons.alive(pid) else 'STOPPED'}")
        lines.append(self.kubectl("get", "nodes", "-o", "wide", check=False, timeout=10).rstrip())
        return "\n".join(lines)

    def running(self) -> bool:
        return bool(self.pids) and all(daemons.alive(pid) for pid in self.pids.values())

    def stop(self, timeout: float = 30.0) -> None:
        """The pods' containers, the node's parts, then the control plane (the API server before etcd: it waits
        for etcd while it drains), each with its children; then what they set up on the host."""
        stages = (("metrics-server", "coredns", "kube-proxy", "kubelet"), ("containerd",), ("kube-scheduler", "kube-controller-manager"),
                  ("kube-apiserver",), ("etcd",))  # fmt: skip
        pids, self.pids = self.pids, {}
        _stop_containers(self.data_dir)
        for stage in stages:
            daemons.stop([pids[name] for name in stage if name in pids], timeout)
        cleanup(self.data_dir)

    def __enter__(self) -> "LocalK8s":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stop_containers(data_dir: Path) -> None:
    """Every container of the pods and its containerd shim (they live outside containerd's process group), and the
    pods' network namespaces (the CRI removes them when the kubelet stops a pod, not when a task is killed)."""
    socket_path, namespaces = containerd_socket(data_dir), []
    if socket_path.exists():
        ctr = ["ctr", "--address", str(socket_path), "-n", "k8s.io"]
        listed = subprocess.run(
            [*ctr, "containers", "ls", "-q"], capture_output=True, text=True, timeout=30, check=False
        )
        for container in listed.stdout.split():
            info = subprocess.run([*ctr, "containers", "info", container], capture_output=True, text=True, timeout=30,
                                  check=False)  # fmt: skip
            with contextlib.suppress(ValueError, KeyError):
                spec = json.loads(info.stdout)["Spec"]["linux"]["namespaces"]
                namespaces += [n["path"] for n in spec if n["type"] == "network" and "/netns/" in n.get("path", "")]
        listed = subprocess.run([*ctr, "tasks", "ls", "-q"], capture_output=True, text=True, timeout=30, check=False)
        for task in listed.stdout.split():
            subprocess.run([*ctr, "tasks", "kill", "-a", "-s", "SIGKILL", task], capture_output=True, timeout=30,
                           check=False)  # fmt: skip
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
            if words[0].endswith(b"containerd-shim-runc-v2") and str(socket_path).encode() in words:
                os.kill(int(cmdline.parent.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue
    for path in namespaces:
        subprocess.run(["umount", path], capture_output=True, check=False)
        Path(path).unlink(missing_ok=True)


def _shared_netns() -> None:
    """``/run/netns`` made a shared mount point of its own (what podman and ``ip netns`` do when it is not one)
    before containerd puts a pod's network namespace there: were podman to do it later (``k8s-image`` while pods run),
    its bind mount would hide the pods' namespaces made before it, which then can never be removed (their pods stay
    Terminating: "remove netns: device or resource busy")."""
    Path("/run/netns").mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "--make-shared", "/run/netns"], capture_output=True, check=False).returncode:
        for step in (["--rbind", "/run/netns", "/run/netns"], ["--make-shared", "/run/netns"]):
            subprocess.run(["mount", *step], capture_output=True, check=True)


def _bridge() -> None:
    """The pods' bridge with the gateway's address, as the CNI bridge plugin would make it (it keeps one it finds)."""
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        return
    for command in (["link", "add", "name", BRIDGE, "type", "bridge"],
                    ["addr", "add", f"{k8s_config.GATEWAY}/24", "dev", BRIDGE], ["link", "set", BRIDGE, "up"]):  # fmt: skip
        done = subprocess.run(["ip", *command], capture_output=True, text=True, check=False)
        if done.returncode:
            raise K8sError(f"ip {' '.join(command)} failed: {done.stderr.strip()}")


def _short(data_dir: Path) -> str:
    return hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]


# Unix sockets' paths have at most 107 bytes, so what holds sockets lives under short folders named after the
# cluster's folder: containerd's socket, and the kubelet's root (its plugins' and pods' sockets, the pods' volumes)
def containerd_socket(data_dir: Path) -> Path:
    return Path("/run/fraud-mlops-k8s") / _short(data_dir) / "containerd.sock"


def kubelet_root(data_dir: Path) -> Path:
    return Path("/var/lib/fraud-mlops-k8s") / _short(data_dir)


def cleanup(data_dir: Path) -> None:
    """What the kubelet, containerd, kube-proxy and the CNI plugins leave on the host once stopped."""
    for line in reversed(Path("/proc/mounts").read_text().splitlines()):  # the deepest first
        target = line.split()[1].replace("\\040", " ")
        if target == str(kubelet_root(data_dir)) or target.startswith((f"{data_dir}/", f"{kubelet_root(data_dir)}/")):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)
    for controller in Path("/sys/fs/cgroup").iterdir():
        pods = controller / "kubepods"
        if pods.is_dir():
            for folder in sorted(pods.rglob("*"), key=lambda p: len(p.parts), reverse=True):  # the deepest first
                if folder.is_dir():
                    _rmdir(folder)
            _rmdir(pods)
    for table in ("filter", "nat", "mangle"):
        rules = subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True, check=False).stdout
        for rule in rules.splitlines():  # jumps into the chains first, then the chains
            if rule.startswith("-A ") and any(f"-j {c}" in rule for c in ("KUBE-", "CNI-")):
                subprocess.run(
                    ["iptables", "-t", table, "-D", *shlex.split(rule[3:])], capture_output=True, check=False
                )
        chains = [r[1:].split()[0] for r in rules.splitlines() if r.startswith((":KUBE-", ":CNI-"))]
        for action in ("-F", "-X"):  # every chain emptied before any is deleted (they jump into each other)
            for chain in chains:
                subprocess.run(["iptables", "-t", table, action, chain], capture_output=True, check=False)
    subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)
    shutil.rmtree(data_dir / "containerd" / "state", ignore_errors=True)
    shutil.rmtree(containerd_socket(data_dir).parent, ignore_errors=True)
    shutil.rmtree(kubelet_root(data_dir), ignore_errors=True)  # the pods' folders: they start anew with the cluster
    shutil.rmtree(data_dir / "cni-ipam", ignore_errors=True)


def _rmdir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()


BACKGROUND = daemons.Background("k8s-local", "local Kubernetes cluster", LocalK8s, lambda: cache_dir() / "cluster")
