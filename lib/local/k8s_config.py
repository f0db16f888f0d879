"""The development cluster's configuration files (``lib.local.k8s``): containerd's, the CNI network's, the kubelet's
and kube-proxy's, everything on 127.0.0.1."""

from pathlib import Path

POD_CIDR = "10.244.0.0/24"
BRIDGE = "fraudk8s0"  # the pods' bridge: a name of our own, so that stop removes exactly it
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"  # the name containerd's CRI asks for; ours, imported (no registry)
# the host's address on the pods' bridge: where metrics-server listens (the API server routes to an aggregated API by
# its Endpoints, which refuse loopback addresses; the pods reach it too, and nothing outside the machine does)
GATEWAY = "10.244.0.1"
DNS_IP = "10.96.0.10"  # the Service kube-dns, as kubeadm, kind and Minikube number it; the kubelet's clusterDNS


# the cluster's clients with a certificate of their own (lib.local.k8s_pki) and what they may read: a ClusterRole each,
# named after the client and bound to it
_ROLES = {
    "system:metrics-server": ('{apiGroups: [""], resources: [nodes/metrics], verbs: [get]}',
                              '{apiGroups: [""], resources: [pods, nodes], verbs: [get, list, watch]}'),
    "fraud-mlops-prometheus": ('{apiGroups: [""], resources: [pods, services, endpoints, nodes], verbs: [get, list, watch]}',
                               "{apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [get, list, watch]}"),
    "system:coredns": ('{apiGroups: [""], resources: [endpoints, services, pods, namespaces], verbs: [list, watch]}',
                       "{apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}"),
}  # fmt: skip


def _cluster_role(user: str, rules: tuple[str, ...]) -> str:
    listed = "".join(f"\n  - {rule}" for rule in rules)
    return f"""apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: "{user}"}}
rules:{listed}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: "{user}"}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "{user}"}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: "{user}"}}]"""


def addons(metrics_port: int) -> str:
    """The RBAC of metrics-server, CoreDNS and the Prometheus that discovers pods from outside the cluster (read-only);
    metrics-server's registration as the aggregated API ``metrics.k8s.io`` (for ``kubectl top`` and the HPA); the
    cluster DNS's Service ``kube-dns`` (CoreDNS on the gateway, port 53)."""
    registered = f"""apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: "metrics-server:system:auth-delegator"}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:auth-delegator"}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:metrics-server"}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: metrics-server-auth-reader, namespace: kube-system}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: extension-apiserver-authentication-reader}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:metrics-server"}}]
---
apiVersion: v1
kind: Service
metadata: {{name: metrics-server, namespace: kube-system}}
spec:
  ports: [{{name: https, port: 443, targetPort: {metrics_port}, protocol: TCP}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: metrics-server, namespace: kube-system}}
subsets: [{{addresses: [{{ip: "{GATEWAY}"}}], ports: [{{name: https, port: {metrics_port}, protocol: TCP}}]}}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {{name: v1beta1.metrics.k8s.io}}
spec:
  group: metrics.k8s.io
  version: v1beta1
  service: {{name: metrics-server, namespace: kube-system, port: 443}}
  insecureSkipTLSVerify: true  # metrics-server's own self-signed serving certificate
  groupPriorityMinimum: 100
  versionPriority: 100
---
apiVersion: v1
kind: Service
metadata: {{name: kube-dns, namespace: kube-system, labels: {{k8s-app: kube-dns}}}}
spec:
  clusterIP: {DNS_IP}
  ports: [{{name: dns, port: 53, protocol: UDP}}, {{name: dns-tcp, port: 53, protocol: TCP}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: kube-dns, namespace: kube-system}}
subsets: [{{addresses: [{{ip: "{GATEWAY}"}}], ports: [{{name: dns, port: 53, protocol: UDP}}, {{name: dns-tcp, port: 53, protocol: TCP}}]}}]
"""
    return "\n---\n".join([*(_cluster_role(user, rules) for user, rules in _ROLES.items()), registered])


def corefile(kubeconfig: Path, ready_port: int) -> str:
    """CoreDNS's configuration: the cluster's names from the API server, anything else from the host's resolver."""
    return f""".:53 {{
    bind {GATEWAY}
    ready 127.0.0.1:{ready_port}
    errors
    cache 30
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} fraud-mlops
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    forward . /etc/resolv.conf
}}
"""


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
clusterDNS: [{DNS_IP}]
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
