"""Kubernetes' own programs for the development cluster (``lib.local.k8s``), built once from the Go module
proxy into the project's cache, keyed by version (``~/.cache/fraud-mlops/k8s/<version>/bin``).

No release download site is reachable here, so everything comes from source through the Go module proxy:

* ``k8s.io/kubernetes`` cannot be ``go install``-ed (its go.mod points its 33 staging modules at folders of
  its own tree); a small module of ours requires it and pins each staging module to its published
  ``v0.<minor>.<patch>``, read from kubernetes' own ``replace`` block. Its binaries carry their version
  (``-ldflags -X``), as a release's do: kubectl refuses a server that says ``v0.0.0-master``.
* etcd (``go.etcd.io/etcd/server/v3``'s ``etcdmain``), metrics-server (``sigs.k8s.io/metrics-server``) and CoreDNS
  (with the plugins its Corefile uses only) through a module each; the pause container's program is ten lines of Go
  of our own.
* Prometheus with Kubernetes discovery (``monitoring-local --kubeconfig``): Debian's is built without it (its
  config refuses ``kubernetes_sd_configs``); ours has that discovery only (``remove_all_sd,enable_kubernetes_sd``).

A cold build takes about 15 minutes on 2 cores (5 GB of Go build cache); then seconds.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from lib import atomic
from lib.config import get_settings
from lib.errors import PipelineError

K8S_VERSION = "v1.37.2"
ETCD_VERSION = "v3.7.0"
METRICS_SERVER_VERSION = "v0.8.0"
PROMETHEUS_VERSION = "v0.316.0"  # the Go module's version of Prometheus 3.16
COREDNS_VERSION = "v1.15.0"
GO_VERSION = "1.26.0"  # the go line of the modules below; kubernetes 1.37 needs Go >= 1.26
KUBE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl")
PROGRAMS = (*KUBE, "etcd", "metrics-server", "coredns", "prometheus", "pause")

_PAUSE = """package main

import (
	"os"
	"os/signal"
	"syscall"
)

// The pod sandbox's only process: it holds the pod's namespaces until told to stop.
func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}
"""

_ETCD = """package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
"""


# CoreDNS with the plugins the cluster's Corefile uses (lib.local.k8s_config.corefile), in CoreDNS's own order
# (plugin.cfg), as its docs build a smaller server: the full plugin set pulls in every cloud's SDK
_COREDNS_PLUGINS = ("bind", "ready", "errors", "cache", "kubernetes", "forward")
_COREDNS = (
    'package main\n\nimport (\n\t"github.com/coredns/coredns/core/dnsserver"\n\t"github.com/coredns/coredns/coremain"\n'
    + "".join(f'\t_ "github.com/coredns/coredns/plugin/{name}"\n' for name in _COREDNS_PLUGINS)
    + ")\n\nfunc init() {\n\tdnsserver.Directives = []string{"
    + ", ".join(f'"{name}"' for name in _COREDNS_PLUGINS)
    + "}\n}\n\nfunc main() { coremain.Run() }\n"
)


class K8sBuildError(PipelineError):
    """A program of the development cluster cannot be built."""


def cache_dir(version: str = K8S_VERSION) -> Path:
    return get_settings().cache_dir / "k8s" / version


def bin_dir(version: str = K8S_VERSION) -> Path:
    return cache_dir(version) / "bin"


def missing(version: str = K8S_VERSION) -> list[str]:
    return [p for p in PROGRAMS if not (bin_dir(version) / p).exists()]


def ensure_binaries(version: str = K8S_VERSION, say=print) -> Path:
    """The folder of every program in ``PROGRAMS``, building those not there yet (``say`` reports progress)."""
    todo = missing(version)
    if not todo:
        return bin_dir(version)
    go = shutil.which("go")
    if not go:
        raise K8sBuildError("go is not installed; the development cluster is built from source (install Go >= 1.26)")
    say(f"building {', '.join(todo)} for Kubernetes {version} (about 15 minutes on 2 cores the first time)")
    build = cache_dir(version) / "build"
    for program in todo:
        module = build / ("kubernetes" if program in KUBE else program)
        if not (module / "go.sum").exists():
            _module(go, module, program, version)
        _build(go, module, program, version)
    return bin_dir(version)


def _go(go: str, args: list[str], folder: Path, what: str) -> str:
    env = {**os.environ, "CGO_ENABLED": "0"}  # an older Go fetches the toolchain go.mod asks for (the proxy serves it)
    done = subprocess.run([go, *args], cwd=folder, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise K8sBuildError(f"{what} failed (go {' '.join(args[:3])} in {folder}):\n{done.stderr[-3000:]}")
    return done.stdout


def _module(go: str, folder: Path, program: str, version: str) -> None:
    """The small module that builds ``program`` (its go.mod, its one Go file, ``go mod tidy``)."""
    folder.mkdir(parents=True, exist_ok=True)
    if program in KUBE:
        info = json.loads(_go(go, ["mod", "download", "-json", f"k8s.io/kubernetes@{version}"], folder,
                              f"fetching k8s.io/kubernetes@{version} from the Go module proxy"))  # fmt: skip
        if "Error" in info:
            raise K8sBuildError(f"k8s.io/kubernetes@{version} is not served by the Go module proxy: {info['Error']}")
        staging = re.findall(r"^\s*(k8s\.io/[\w.-]+) => \./staging/", Path(info["GoMod"]).read_text(), re.M)
        pinned = "v0." + version.removeprefix("v").split(".", 1)[1]
        replaces = "".join(f"\t{name} => {name} {pinned}\n" for name in staging)
        mod = f"require k8s.io/kubernetes {version}\n\nreplace (\n{replaces})\n"
        imports = "".join(f'\t_ "k8s.io/kubernetes/cmd/{name}"\n' for name in KUBE)
        source = f"//go:build tools\n\npackage tools\n\nimport (\n{imports})\n"
    elif program == "etcd":
        mod, source = f"require go.etcd.io/etcd/server/v3 {ETCD_VERSION}\n", _ETCD
    elif program == "prometheus":
        mod = f"require github.com/prometheus/prometheus {PROMETHEUS_VERSION}\n"
        source = '//go:build tools\n\npackage tools\n\nimport _ "github.com/prometheus/prometheus/cmd/prometheus"\n'
    elif program == "coredns":
        mod, source = f"require github.com/coredns/coredns {COREDNS_VERSION}\n", _COREDNS
    elif program == "metrics-server":
        mod = f"require sigs.k8s.io/metrics-server {METRICS_SERVER_VERSION}\n"
        source = '//go:build tools\n\npackage tools\n\nimport _ "sigs.k8s.io/metrics-server/cmd/metrics-server"\n'
    else:
        mod, source = "", _PAUSE
    atomic.write_text(folder / "go.mod", f"module fraudmlops/{program}\n\ngo {GO_VERSION}\n\n{mod}")
    atomic.write_text(folder / "main.go", source)
    _go(go, ["mod", "tidy"], folder, f"resolving {program}'s modules")


def _build(go: str, folder: Path, program: str, version: str) -> None:
    target = {"etcd": ".", "pause": ".", "coredns": ".", "metrics-server": "sigs.k8s.io/metrics-server/cmd/metrics-server",
              "prometheus": "github.com/prometheus/prometheus/cmd/prometheus"}.get(program, f"k8s.io/kubernetes/cmd/{program}")  # fmt: skip
    tags = ["-tags", "remove_all_sd,enable_kubernetes_sd"] if program == "prometheus" else []
    flags = "-s -w"
    if program == "prometheus":  # v0.316.0 is Prometheus 3.16.0
        minor, patch = PROMETHEUS_VERSION.removeprefix("v0.").split(".")
        flags += f" -X github.com/prometheus/common/version.Version=3.{int(minor) - 300}.{patch}"
    if program in KUBE:
        major, minor = version.removeprefix("v").split(".")[:2]
        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            flags += (f" -X {package}.gitVersion={version} -X {package}.gitMajor={major}"
                      f" -X {package}.gitMinor={minor} -X {package}.gitTreeState=clean")  # fmt: skip
    out = bin_dir(version) / program
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{program}.partial")
    _go(go, ["build", "-trimpath", *tags, "-ldflags", flags, "-o", str(partial), target], folder, f"building {program}")
    partial.replace(out)  # a half-built program is never found
