"""The project's images, built here and loaded into a cluster's containerd (issue 35): ``python -m lib k8s-image``.

The engine is Docker where its daemon answers, else podman (Debian's: no daemon, rootful here). No image
registry is reachable from this machine, so the base image ``k8s/Dockerfile`` starts from
(``ARG BASE_IMAGE``, by default ``python:3.11-slim``) is by default a stand-in made from Debian's own packages:
bookworm's Python 3.11 with venv and pip (``lib.local.debian``), the host's CA bundle and pip's setting for it,
and nothing else. ``--base-image python:3.11-slim`` uses the official one where a registry is reachable.

Images reach the development cluster (``lib.local.k8s``) as an archive imported into its containerd's
``k8s.io`` namespace (what ``kind load`` and ``minikube image load`` do), under the name the manifests use
(``paysim-fraud-api:<tag>``, ``imagePullPolicy: IfNotPresent``); a new tag is a new image to roll out.
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from lib import atomic
from lib.config import PROJECT_ROOT, get_settings
from lib.errors import PipelineError
from lib.local import debian

STAND_IN = "localhost/fraud-mlops/python:3.11-bookworm"
# the names k8s/deployment.yaml and a Minikube user's `docker build -t paysim-fraud-api:latest` give, in full
# (podman would otherwise put a short name under localhost/, where the kubelet does not look)
API_IMAGE = "docker.io/library/paysim-fraud-api"
TRAIN_IMAGE = "docker.io/library/paysim-fraud-train"
REDIS_STAND_IN = "localhost/fraud-mlops/redis:7.0-bookworm"
_PACKAGES = ("python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates")
# podman on this kind of VM: it cannot raise rlimits (crun/runc's setrlimit fails) and crun refuses hybrid cgroups
_CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
"""


class ImageError(PipelineError):
    """An image cannot be built or loaded."""


def engine() -> tuple[list[str], dict[str, str]]:
    """The container engine's command and environment: docker if its daemon answers, else podman."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "info"], capture_output=True, timeout=30, check=False).returncode == 0:
        return [docker], dict(os.environ)
    podman = shutil.which("podman")
    if not podman:
        raise ImageError("no container engine: apt-get install podman (or start Docker)")
    conf = get_settings().cache_dir / "images" / "containers.conf"
    if not conf.exists() or conf.read_text() != _CONTAINERS_CONF:
        atomic.write_text(conf, _CONTAINERS_CONF)
    return [podman], {**os.environ, "CONTAINERS_CONF": str(conf)}


def _run(command: list[str], env: dict[str, str], what: str, timeout: float = 3600, **kwargs) -> str:
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    if done.returncode:
        raise ImageError(f"{what} failed (exit {done.returncode}): {' '.join(command)}\n{done.stderr[-3000:]}")
    return done.stdout


def exists(image: str) -> bool:
    command, env = engine()
    found = subprocess.run([*command, "image", "inspect", image], env=env, capture_output=True, check=False)
    return found.returncode == 0


def stand_in() -> str:
    """The stand-in for ``python:3.11-slim`` (made once: debootstrap, about a minute, then imported)."""
    return _debian_image(STAND_IN, _PACKAGES, ['CMD ["python3"]', "ENV LANG=C.UTF-8"])


def redis_stand_in() -> str:
    """The stand-in for the official ``redis`` image that ``k8s/online-store`` names: bookworm's ``redis-server``
    (7.0) as the entrypoint, so that the manifest's ``args`` reach it as they reach the official image's."""
    return _debian_image(REDIS_STAND_IN, ("redis-server",), ['ENTRYPOINT ["redis-server"]', "WORKDIR /data"])


def _debian_image(name: str, packages: tuple[str, ...], changes: list[str]) -> str:
    if exists(name):
        return name
    command, env = engine()
    with tempfile.TemporaryDirectory(prefix="fraud-base-") as folder:
        root = debian.bootstrap(Path(folder) / "root", "bookworm", packages, ImageError)
        for marker in root.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):  # pip installs as in python:3.11-slim
            marker.unlink()
        shutil.rmtree(root / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        flags = [part for change in changes for part in ("--change", change)]
        _run([*command, "import", *flags, "-", name], env, f"importing {name}", stdin=tar.stdout)
        tar.wait()
    return name


def build_api(bundle: Path, tag: str, base_image: str | None = None) -> str:
    """``API_IMAGE:tag`` from ``k8s/Dockerfile`` with ``bundle`` as its model: the build context holds what the
    Dockerfile copies and nothing else of the checkout (never its ``data/``)."""
    if not (bundle / "bundle.json").exists():
        raise ImageError(f"{bundle}: not a serving bundle (no bundle.json); run make run, or pass --bundle")
    with tempfile.TemporaryDirectory(prefix="fraud-image-") as folder:
        context = Path(folder)
        shutil.copytree(PROJECT_ROOT / "k8s", context / "k8s", ignore=shutil.ignore_patterns("online-store"))
        shutil.copytree(PROJECT_ROOT / "lib", context / "lib", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(bundle, context / "data" / "bundle")
        return _build(context, "k8s/Dockerfile", f"{API_IMAGE}:{tag}", base_image)


def build_train(tag: str, base_image: str | None = None) -> str:
    """``TRAIN_IMAGE:tag`` from ``k8s/Dockerfile.train``: the pipeline, Spark's Java, Redis and the whole lock (about
    6 GB). Its context is the checkout as git lists it (tracked files and new ones not ignored: a fresh clone with
    your edits), then ``.dockerignore``: never the checkout's ``data/`` outputs, ``runs/`` or MLflow store."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=PROJECT_ROOT,
                            capture_output=True, check=False)  # fmt: skip
    if listed.returncode:
        raise ImageError(f"{PROJECT_ROOT} is not a git checkout: the training image is built from git's file list")
    with tempfile.TemporaryDirectory(prefix="fraud-image-") as folder:
        context = Path(folder)
        for name in filter(None, listed.stdout.decode().split("\0")):
            source = PROJECT_ROOT / name
            if source.is_file():  # not one deleted since its last commit
                (context / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, context / name)
        return _build(context, "k8s/Dockerfile.train", f"{TRAIN_IMAGE}:{tag}", base_image)


def _build(context: Path, dockerfile: str, image: str, base_image: str | None) -> str:
    base = base_image or stand_in()
    command, env = engine()
    pull = ["--pull=never"] if Path(command[0]).name == "podman" and not base_image else []
    _run([*command, "build", *pull, "-f", dockerfile, "--build-arg", f"BASE_IMAGE={base}", "-t", image, "."], env,
         f"building {image}", cwd=context)  # fmt: skip
    return image


def load(image: str, containerd_socket: Path) -> None:
    """``image`` into the containerd at ``containerd_socket`` (namespace ``k8s.io``, where the kubelet looks)."""
    command, env = engine()
    with tempfile.TemporaryDirectory(prefix="fraud-load-") as folder:
        archive = Path(folder) / "image.tar"
        oci = ["--format", "oci-archive"] if Path(command[0]).name == "podman" else []
        _run([*command, "save", *oci, "-o", str(archive), image], env, f"saving {image}")
        import_archive(archive, containerd_socket)


def import_archive(archive: Path, containerd_socket: Path) -> None:
    """An image archive (OCI or Docker) into the containerd at ``containerd_socket``, namespace ``k8s.io``."""
    _run(["ctr", "--address", str(containerd_socket), "-n", "k8s.io", "images", "import", str(archive)],
         dict(os.environ), f"importing {archive} into the cluster's containerd")  # fmt: skip
