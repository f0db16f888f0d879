"""The development cluster's certificates and kubeconfigs (``lib.local.k8s``), made with ``cryptography``.

One cluster CA signs every certificate: the API server's serving certificate, its client certificate for the
kubelet, the kubelet's serving and client certificates, and one client certificate per component and for the
admin (whose group ``system:masters`` RBAC lets do anything). A second CA, the front proxy's, signs the API
server's client certificate to aggregated APIs (metrics-server). Service accounts' tokens are signed by an
ECDSA key pair. Everything lives in ``<data_dir>/pki``, made once per cluster folder.
"""

import datetime
import ipaddress
from pathlib import Path

from lib import atomic

DAYS = 365
SERVICE_IP = "10.96.0.1"  # the first address of the services' range: the ``kubernetes`` Service


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key) -> None:
    from cryptography.hazmat.primitives import serialization

    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    atomic.write_text(path, pem.decode())
    path.chmod(0o600)


def _certificate(path: Path, name: str, groups: tuple[str, ...], ca: tuple | None, names: tuple[str, ...] = (),
                 server: bool = False) -> tuple:  # fmt: skip
    """A key and a certificate for ``name`` (``groups`` as organizations) at ``path``.crt/.key, signed by ``ca``
    (key, certificate) or self-signed as a CA when ``ca`` is None; ``names``: DNS names and IPs it serves."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = _key()
    subject = x509.Name([*(x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])  # fmt: skip
    now = datetime.datetime.now(datetime.UTC)
    signer_key, issuer = (key, subject) if ca is None else (ca[0], ca[1].subject)
    builder = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=DAYS))
        .add_extension(x509.BasicConstraints(ca=ca is None, path_length=None), critical=True)
    )  # fmt: skip
    if ca is None:
        usage = x509.KeyUsage(True, False, False, False, False, True, True, False, False)
    else:
        usage = x509.KeyUsage(True, False, True, False, False, False, False, False, False)
        purposes = [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(purposes), critical=False)
    builder = builder.add_extension(usage, critical=True)
    if names:
        alternatives: list[x509.GeneralName] = []
        for n in names:
            try:
                alternatives.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                alternatives.append(x509.DNSName(n))
        builder = builder.add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
    certificate = builder.sign(signer_key, hashes.SHA256())
    _write_key(path.with_suffix(".key"), key)
    atomic.write_text(path.with_suffix(".crt"), certificate.public_bytes(serialization.Encoding.PEM).decode())
    return key, certificate


def make_pki(folder: Path, hostname: str) -> Path:
    """Every certificate and key the cluster needs, in ``folder`` (made once: an existing one is kept)."""
    from cryptography.hazmat.primitives import serialization

    if (folder / "done-v3").exists():  # v3: with metrics-server's, Prometheus's and CoreDNS's certificates
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    ca = _certificate(folder / "ca", "fraud-mlops development cluster CA", (), None)
    serving = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
               "kubernetes.default.svc.cluster.local", hostname, "127.0.0.1", SERVICE_IP)  # fmt: skip
    _certificate(folder / "apiserver", "kube-apiserver", (), ca, serving, server=True)
    _certificate(folder / "kubelet", hostname, (), ca, (hostname, "localhost", "127.0.0.1"), server=True)
    clients = {
        "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", ("system:masters",)),
        "admin": ("fraud-mlops-admin", ("system:masters",)),
        "controller-manager": ("system:kube-controller-manager", ()),
        "scheduler": ("system:kube-scheduler", ()),
        "kube-proxy": ("system:kube-proxy", ("system:node-proxier",)),
        "kubelet-client": (f"system:node:{hostname}", ("system:nodes",)),
        "metrics-server": ("system:metrics-server", ()),
        "prometheus": ("fraud-mlops-prometheus", ()),  # RBAC: lib.local.k8s_config.addons
        "coredns": ("system:coredns", ()),
    }
    for file, (name, groups) in clients.items():
        _certificate(folder / file, name, groups, ca)
    proxy_ca = _certificate(folder / "front-proxy-ca", "fraud-mlops front proxy CA", (), None)
    _certificate(folder / "front-proxy-client", "front-proxy-client", (), proxy_ca)
    accounts = _key()
    _write_key(folder / "sa.key", accounts)
    public = accounts.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    atomic.write_text(folder / "sa.pub", public.decode())
    atomic.write_text(folder / "done-v3", "")
    return folder


def kubeconfig(path: Path, server: str, pki: Path, user: str) -> Path:
    """A kubeconfig at ``path`` for ``user`` (a client certificate's file name in ``pki``) against ``server``."""
    atomic.write_text(
        path,
        f"""apiVersion: v1
kind: Config
clusters:
- name: fraud-mlops
  cluster:
    server: {server}
    certificate-authority: {pki / "ca.crt"}
users:
- name: {user}
  user:
    client-certificate: {pki / f"{user}.crt"}
    client-key: {pki / f"{user}.key"}
contexts:
- name: fraud-mlops
  context:
    cluster: fraud-mlops
    user: {user}
current-context: fraud-mlops
""",
    )
    return path
