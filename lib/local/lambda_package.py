"""The Chalice app packaged for AWS Lambda, built and run here the way Lambda builds and runs it.

Chalice packages for the Lambda runtime of the Python it runs under. Lambda's ``python3.13`` runtime
runs on Amazon Linux 2023 (glibc 2.34), so the package is built under a Python 3.13 from Debian's own
packages: ``debootstrap --variant=minbase trixie`` into the project's cache folder, cached by a hash of
everything it installs (the first build takes a few minutes, later ones seconds). Inside that root:

* ``/opt/build``: a venv with the pinned Chalice and ``chalice_app/requirements.txt``, where
  ``chalice package`` imports the app and writes ``deployment.zip`` and the SAM template;
* ``/opt/runtime``: only ``awslambdaric`` (the runtime interface client Lambda's own images use), for
  Debian's ``/usr/bin/python3``, which then runs the unpacked package under the AWS Lambda Runtime
  Interface Emulator (a Go program, ``go install``-ed like actionlint) on 127.0.0.1.

Needs root (``debootstrap``, ``chroot``), as in CI. ``check_package`` holds the package to Lambda's
limits: unzipped size, no heavy or development libraries, x86_64 ELF files needing glibc <= 2.34.
"""

import hashlib
import json
import os
import shutil
import subprocess
import time
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from lib import atomic
from lib.config import PROJECT_ROOT, Settings, get_settings
from lib.errors import PipelineError
from lib.local import daemons, debian, shipping

DEBIAN_SUITE = "trixie"  # Python 3.13, the version of Lambda's python3.13 runtime
CHALICE = "chalice==1.34.0"
RUNTIME_CLIENT = "awslambdaric==4.2.2"
RIE = "github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie"
RIE_VERSION = "v0.0.0-20261030222936-bef5c4ba774d"  # tagged releases are not served by this Go proxy
LAMBDA_GLIBC = (2, 34)  # Amazon Linux 2023, under python3.12 and python3.13
UNZIPPED_LIMIT = 262_144_000  # Lambda: function + layers, unzipped
UNZIPPED_TARGET = 80_000_000
FORBIDDEN = ("tensorflow", "keras", "pyspark", "mlflow", "pandas", "jupyter", "notebook", "ipykernel", "sklearn")
APP = PROJECT_ROOT / "chalice_app"
# what commands inside the root see (nothing of the host's environment but this)
_ROOT_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/tmp",
    "LANG": "C.UTF-8",
    "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt",
}


class LambdaBuildError(PipelineError):
    """The Lambda Python, the package or the emulator could not be built or started."""


def _run(command: list[str], what: str, timeout: float = 1800, **kwargs) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
    if done.returncode:
        raise LambdaBuildError(
            f"{what} failed (exit {done.returncode}): {' '.join(command)}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return done.stdout


def _root_key() -> str:
    """What the root holds: it is rebuilt when any of this changes."""
    recipe = [DEBIAN_SUITE, CHALICE, RUNTIME_CLIENT, (APP / "requirements.txt").read_text(), "root-v1"]
    return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:16]


def lambda_root(settings: Settings | None = None) -> Path:
    """The Debian trixie root with Python 3.13, the build venv and the runtime client (built once, cached)."""
    settings = settings or get_settings()
    root = settings.cache_dir / "lambda" / f"python3.13-{_root_key()}"
    if (root / ".ready").exists():
        return root
    with atomic.staged_dir(root) as tmp:
        debian.bootstrap(tmp, DEBIAN_SUITE, ("python3", "python3-venv", "ca-certificates"), LambdaBuildError)
        chroot = ["chroot", str(tmp), "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in _ROOT_ENV.items())]
        _run([*chroot, "python3", "-m", "venv", "/opt/build"], "the build venv")
        pip = [*chroot, "/opt/build/bin/pip", "install", "--quiet", "--no-cache-dir"]
        shutil.copy2(APP / "requirements.txt", tmp / "opt" / "requirements.txt")
        _run([*pip, CHALICE, "-r", "/opt/requirements.txt"], "pip install chalice and the app's requirements")
        _run([*pip, "--target", "/opt/runtime", RUNTIME_CLIENT], "pip install awslambdaric")
        (tmp / ".ready").write_text(_root_key())
    return root


def python_version(root: Path) -> str:
    return _run(["chroot", str(root), "python3", "--version"], "python3 --version").strip()


def emulator(settings: Settings | None = None) -> Path:
    """The AWS Lambda Runtime Interface Emulator, built with ``go install`` into the cache (once)."""
    settings = settings or get_settings()
    folder = settings.cache_dir / "lambda" / f"rie-{RIE_VERSION}"
    binary = folder / "aws-lambda-rie"
    if binary.exists():
        return binary
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if not go:
        raise LambdaBuildError("Go is needed to build the Lambda Runtime Interface Emulator; install Go")
    with atomic.staged_dir(folder) as tmp:
        tmp.mkdir()
        env = {**os.environ, "GOBIN": str(tmp), "CGO_ENABLED": "0"}
        _run([go, "install", f"{RIE}@{RIE_VERSION}"], "go install of aws-lambda-rie", env=env)
    return binary


TEMPLATES = {"cloudformation": "sam.json", "terraform": "chalice.tf.json"}  # what each --pkg-format writes


def package(
    stage: str, bundle: Path, out: Path, settings: Settings | None = None, pkg_format: str = "cloudformation"
) -> Path:
    """``chalice package --stage <stage>`` under the Lambda Python, with ``bundle`` as the packaged model;
    writes ``deployment.zip`` and the template (``TEMPLATES[pkg_format]``: SAM or Terraform) to ``out``
    (atomically) and returns ``out``."""
    root = lambda_root(settings)
    work = root / "work" / stage
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(APP, work / "chalice_app", ignore=shutil.ignore_patterns("__pycache__", "bundle", "lib"))
    shipping.copy_shipped("lambda", work / "chalice_app" / "vendor" / "lib")  # what the app imports, nothing else
    shutil.copytree(bundle, work / "chalice_app" / "vendor" / "bundle")
    inside = f"/work/{stage}/chalice_app"
    # a region only for Chalice's own checks: the template names ${AWS::Region}, the deploy's region
    env = {**_ROOT_ENV, "PATH": "/opt/build/bin:/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1"}
    if stage == "prod":
        env["FRAUD_LAMBDA_AUTHORIZER"] = "1"  # as cd.yml deploys it: API Gateway's Lambda authorizer in front
    script = f"cd {inside} && chalice package --pkg-format {pkg_format} --stage {stage} /work/{stage}/out"
    _run(["chroot", str(root), "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items()), "/bin/sh", "-c", script],
         f"chalice package --stage {stage}")  # fmt: skip
    with atomic.staged_dir(out) as tmp:
        shutil.copytree(work / "out", tmp)
    shutil.rmtree(work, ignore_errors=True)
    return out


# --- what Lambda would refuse ------------------------------------------------------------------------


@dataclass
class PackageReport:
    zipped_bytes: int
    unzipped_bytes: int
    by_top_level: dict[str, int]  # unzipped bytes per top-level folder or file of the package
    forbidden: list[str]  # heavy or development libraries found inside
    elf_files: int
    elf_problems: list[str] = field(default_factory=list)  # wrong architecture, or glibc newer than Lambda's

    @property
    def ok(self) -> bool:
        return self.unzipped_bytes < UNZIPPED_LIMIT and not self.forbidden and not self.elf_problems


def glibc_needed(path: Path) -> tuple[str, tuple[int, int]]:
    """(machine, highest GLIBC_x.y the file's version needs name), read from the ELF as auditwheel does."""
    from elftools.elf.elffile import ELFFile
    from elftools.elf.gnuversions import GNUVerNeedSection

    with open(path, "rb") as handle:
        elf = ELFFile(handle)
        highest = (0, 0)
        for section in elf.iter_sections():
            if isinstance(section, GNUVerNeedSection):
                for _, versions in section.iter_versions():
                    for version in versions:
                        if version.name.startswith("GLIBC_") and version.name[6:7].isdigit():
                            major, minor, *_ = (*(int(n) for n in version.name[6:].split(".")), 0)
                            highest = max(highest, (major, minor))
        return elf["e_machine"], highest


def check_package(zip_path: Path, unpacked: Path) -> PackageReport:
    """Sizes, forbidden libraries and every ELF file's architecture and glibc needs of an unpacked package."""
    by_top: dict[str, int] = {}
    elf_files, problems = 0, []
    for path in unpacked.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        top = path.relative_to(unpacked).parts[0]
        by_top[top] = by_top.get(top, 0) + path.stat().st_size
        with open(path, "rb") as handle:
            if handle.read(4) != b"\x7fELF":
                continue
        elf_files += 1
        machine, glibc = glibc_needed(path)
        if machine != "EM_X86_64":
            problems.append(f"{path.relative_to(unpacked)}: {machine}, not x86_64")
        if glibc > LAMBDA_GLIBC:
            problems.append(f"{path.relative_to(unpacked)}: needs GLIBC_{glibc[0]}.{glibc[1]} > Lambda's 2.34")
    names = {p.name.lower() for p in unpacked.iterdir()}
    forbidden = sorted(n for n in names if n.split("-")[0].split(".")[0] in FORBIDDEN)
    return PackageReport(
        zip_path.stat().st_size, sum(by_top.values()), dict(sorted(by_top.items(), key=lambda kv: -kv[1])),
        forbidden, elf_files, problems,
    )  # fmt: skip


def unpack(zip_path: Path, dest: Path) -> Path:
    """Unzip a deployment package as Lambda does (into what becomes ``/var/task``), keeping file modes."""
    shutil.rmtree(dest, ignore_errors=True)
    with zipfile.ZipFile(zip_path) as archive:
        for info in archive.infolist():
            archive.extract(info, dest)
            mode = info.external_attr >> 16
            if mode:
                (dest / info.filename).chmod(mode & 0o777)
    return dest


# --- the package run as Lambda runs it ---------------------------------------------------------------


@dataclass
class LambdaEmulator:
    """The unpacked package at ``/var/task`` of the Lambda root, run by the Runtime Interface Emulator with
    ``python3 -m awslambdaric <handler>`` (as Chalice's template names it); invoked over HTTP."""

    package_dir: Path
    environment: dict[str, str]
    handler: str = "app.app"  # the API; the prod template's authorizer function is app.api_key_authorizer
    settings: Settings | None = None
    port: int = 0
    pid: int | None = None
    log: Path | None = None

    def start(self, timeout: float = 60.0) -> "LambdaEmulator":
        root = lambda_root(self.settings)
        self.port = self.port or daemons.free_port()
        # Lambda's /var/task, one per emulator so that several can run side by side in the one root
        task = f"/var/task-{self.port}"
        shutil.rmtree(root / task.lstrip("/"), ignore_errors=True)
        shutil.copytree(self.package_dir, root / task.lstrip("/"), symlinks=True)
        binary = root / "usr" / "local" / "bin" / "aws-lambda-rie"
        if not binary.exists():
            shutil.copy2(emulator(self.settings), binary)
        env = {
            "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": f"{task}:/opt/runtime",
            "LAMBDA_TASK_ROOT": task, "AWS_LAMBDA_FUNCTION_NAME": "paysim-fraud-scoring",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024", "AWS_REGION": "eu-west-1", **self.environment,
        }  # fmt: skip
        command = (
            f"cd {task} && exec /usr/local/bin/aws-lambda-rie --log-level info "
            f"--runtime-interface-emulator-address 127.0.0.1:{self.port} "
            f"--runtime-api-address 127.0.0.1:{daemons.free_port()} /usr/bin/python3 -m awslambdaric {self.handler}"
        )
        self.log = root.parent / f"emulator-{self.port}.log"
        self.log.unlink(missing_ok=True)
        for stale in root.parent.glob("emulator-*.log"):  # kept after stop for output(); not for ever
            if time.time() - stale.stat().st_mtime > 3600:
                stale.unlink(missing_ok=True)
        argv = [
            "chroot",
            str(root),
            "/usr/bin/env",
            "-i",
            *(f"{k}={v}" for k, v in env.items()),
            "/bin/sh",
            "-c",
            command,
        ]
        self.pid = daemons.spawn(argv, self.log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not daemons.alive(self.pid):
                raise LambdaBuildError(f"the Lambda emulator exited:\n{self.log.read_text()[-3000:]}")
            if daemons.listening("127.0.0.1", self.port):
                return self
            time.sleep(0.1)
        self.stop()
        raise LambdaBuildError(f"the Lambda emulator did not listen on 127.0.0.1:{self.port} within {timeout:.0f} s")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/2015-03-31/functions/function/invocations"

    def invoke(self, event: dict, timeout: float = 60.0) -> dict:
        """One invocation; the handler's return value (for API Gateway events, the proxy response)."""
        request = urllib.request.Request(self.url, data=json.dumps(event).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""

    def stop(self) -> None:
        if self.pid:
            pid, self.pid = self.pid, None
            daemons.stop([pid], timeout=10)
            shutil.rmtree(lambda_root(self.settings) / f"var/task-{self.port}", ignore_errors=True)

    def __enter__(self) -> "LambdaEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def api_event(method: str, path: str, body: bytes | str | None = None, headers: dict | None = None) -> dict:
    """An API Gateway (REST, proxy integration) event as API Gateway sends it to the Chalice handler."""
    headers = {"Content-Type": "application/json", **(headers or {})}
    text = body.decode() if isinstance(body, bytes) else body
    return {
        "resource": path, "path": path, "httpMethod": method, "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()}, "queryStringParameters": None,
        "multiValueQueryStringParameters": None, "pathParameters": None, "stageVariables": None,
        "requestContext": {"resourcePath": path, "httpMethod": method, "path": f"/dev{path}", "stage": "dev",
                           "requestId": "test-request", "identity": {"sourceIp": "127.0.0.1"}},
        "body": text, "isBase64Encoded": False,
    }  # fmt: skip
