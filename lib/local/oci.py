"""An OCI image archive of one static program (the pod sandbox's ``pause``, metrics-server), written without a
container engine or a registry: one layer, its config and manifest, for ``ctr images import``."""

import hashlib
import io
import json
import tarfile
from pathlib import Path

from lib import atomic


def _blob(archive: tarfile.TarFile, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _json(value: dict) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def single_binary_image(binary: Path, name: str, out: Path, args: tuple[str, ...] = ()) -> Path:
    """``out``: an OCI archive of image ``name`` (``registry/repository:tag``) holding ``binary`` as
    ``/<its name>``, run as its entrypoint with ``args``, as user 65534 (nobody)."""
    layer_buffer = io.BytesIO()
    with tarfile.open(fileobj=layer_buffer, mode="w", format=tarfile.PAX_FORMAT) as layer:
        info = layer.gettarinfo(str(binary), arcname=binary.name)
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        info.mode = 0o755
        with binary.open("rb") as f:
            layer.addfile(info, f)
    layer_bytes = layer_buffer.getvalue()
    platform = {"architecture": "amd64", "os": "linux"}
    config = {**platform, "config": {"Entrypoint": [f"/{binary.name}", *args], "User": "65534:65534"},
              "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer_bytes).hexdigest()}"]}}  # fmt: skip
    with atomic.staged_file(out) as staged, tarfile.open(staged, "w") as archive:
        layer_ref = {"mediaType": "application/vnd.oci.image.layer.v1.tar", **_blob(archive, layer_bytes)}
        config_ref = {"mediaType": "application/vnd.oci.image.config.v1+json", **_blob(archive, _json(config))}
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": config_ref, "layers": [layer_ref]}  # fmt: skip
        manifest_ref = {"mediaType": "application/vnd.oci.image.manifest.v1+json", **_blob(archive, _json(manifest)),
                        "platform": platform,
                        "annotations": {"io.containerd.image.name": name,
                                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}}  # fmt: skip
        for file, content in (("oci-layout", {"imageLayoutVersion": "1.0.0"}),
                              ("index.json", {"schemaVersion": 2, "manifests": [manifest_ref]})):  # fmt: skip
            data = _json(content)
            info = tarfile.TarInfo(file)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out
