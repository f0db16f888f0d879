"""A Debian root from Debian's own packages (``debootstrap --variant=minbase``), the one way this project makes
an operating system without a container registry: the Lambda package's Python 3.13 (``lib.local.lambda_package``)
and the images' stand-in for ``python:3.11-slim`` (``lib.local.images``). Needs root."""

import os
import shutil
import subprocess
from pathlib import Path

from lib.errors import PipelineError

MIRROR = "http://deb.debian.org/debian"


def bootstrap(target: Path, suite: str, packages: tuple[str, ...], error: type[PipelineError]) -> Path:
    """``target``: Debian ``suite`` with ``packages``, where pip reaches the package index as the host does (the
    host's resolver and CA bundle, which holds whatever authority the host trusts for its index or proxy); with
    ``ca-certificates``, also the host's local authorities (``/usr/local/share/ca-certificates``), so that a Java
    installed later (``ca-certificates-java``) trusts them too: Ivy fetches Kafka's jars from Maven Central."""
    if os.geteuid() != 0:
        raise error(f"making a Debian {suite} root needs root (debootstrap and chroot); run it as root, as CI does")
    if not shutil.which("debootstrap"):
        raise error("debootstrap is not installed: apt-get install debootstrap")
    command = ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", suite, str(target), MIRROR]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode:
        raise error(f"debootstrap of Debian {suite} failed (exit {done.returncode}): {' '.join(command)}\n"
                    f"{done.stdout[-3000:]}{done.stderr[-3000:]}")  # fmt: skip
    shutil.copy2("/etc/resolv.conf", target / "etc" / "resolv.conf")
    local = Path("/usr/local/share/ca-certificates")  # the host's own authorities, for programs with a store of
    if (target / "usr" / "sbin" / "update-ca-certificates").exists() and any(local.glob("*.crt")):  # their own: Java
        shutil.copytree(local, target / local.relative_to("/"), dirs_exist_ok=True)
        subprocess.run(["chroot", str(target), "update-ca-certificates"], capture_output=True, timeout=300, check=True)
    bundle = Path(os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt")
    if bundle.is_file() and (target / "etc" / "ssl" / "certs").is_dir():  # a root with ca-certificates
        shutil.copy2(bundle, target / "etc" / "ssl" / "certs" / "ca-certificates.crt")
    (target / "etc" / "pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
    return target
