"""The development cluster's configuration files (``lib.local.k8s``): containerd's, the CNI network's, the kubelet's
and kube-proxy's, everything on 127.0.0.1."""

from pathlib import Path

POD_CIDR = "10.244.0.0/24"
BRIDGE = "fraudk8s0"  # the pods' bridge: a name of our own, so that stop removes exactly it
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"  # the name containerd's CRI asks for; ours, imported (no registry)


def cni(ipam: Path) -> str:
    """The pods' network: our bridge, addresses from ``POD_CIDR`` (their leases in ``ipam``), hostPorts."""
    return f"""{{
  "cniVersion": "1.0.0",
  "name": "fraud-mlops",
  "plugins": [
    {{"type": "bridge", "bridge": "{BRIDGE}", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "{POD_CIDR}"}}]], "routes": [{{"dst": "0.0.0.0/0"}}],
               "dataDir": "{ipam}"}}}},
    {{"type": "portmap", "capabilities": {{"portMappings": true}}}}
  ]
}}
"""


def containerd(d: Path, socket_path: Path) -> str:
    return f"""version = 2
root = "{d / "containerd" / "root"}"
state = "{d / "containerd" / "state"}"
[grpc]
  address = "{socket_path}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d / "cni"}"
"""


def kubelet(pki: Path, port: int, health: int, socket_path: Path) -> str:
    return f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {health}
tlsCertFile: {pki / "kubelet.crt"}
tlsPrivateKeyFile: {pki / "kubelet.key"}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {pki / "ca.crt"}}}
authorization: {{mode: Webhook}}
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://{socket_path}
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
evictionHard: {{memory.available: "200Mi", nodefs.available: "2%", imagefs.available: "2%"}}
"""


def proxy(kubeconfig: Path, p: dict[str, int]) -> str:
    return f"""apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {{kubeconfig: {kubeconfig}}}
clusterCIDR: {POD_CIDR}
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:{p["proxy_health"]}
metricsBindAddress: 127.0.0.1:{p["proxy_metrics"]}
nodePortAddresses: ["127.0.0.1/32"]
conntrack: {{maxPerCore: 0}}
"""
