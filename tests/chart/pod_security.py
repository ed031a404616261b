"""The Kubernetes Pod Security Standards (baseline and restricted), as documented at
kubernetes.io/docs/concepts/security/pod-security-standards (policy version 1.30+),
checked on a rendered pod spec. No admission controller runs here (no kube-apiserver),
so the chart's pods are checked against the written standard, rule by rule."""

from __future__ import annotations

from typing import Any

BASELINE_CAPS = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}  # fmt: skip
SELINUX_TYPES = {None, "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
    "secret",
}  # fmt: skip


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        c for key in ("containers", "initContainers", "ephemeralContainers") for c in pod.get(key, []) or []
    ]


def baseline(pod: dict[str, Any]) -> list[str]:
    out = []
    psc = pod.get("securityContext") or {}
    for ns in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(ns):
            out.append(f"host namespaces: {ns}")
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        out.append("hostProcess")
    for v in pod.get("volumes", []) or []:
        if "hostPath" in v:
            out.append(f"hostPath volume {v.get('name')}")
    if (psc.get("seccompProfile") or {}).get("type") == "Unconfined":
        out.append("seccomp Unconfined (pod)")
    for s in psc.get("sysctls", []) or []:
        if s.get("name") not in SAFE_SYSCTLS:
            out.append(f"unsafe sysctl {s.get('name')}")
    for c in _containers(pod):
        name = c.get("name")
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"{name}: hostProcess")
        added = set((sc.get("capabilities") or {}).get("add", []) or []) - BASELINE_CAPS
        if added:
            out.append(f"{name}: capabilities beyond baseline {sorted(added)}")
        for p in c.get("ports", []) or []:
            if p.get("hostPort"):
                out.append(f"{name}: hostPort {p['hostPort']}")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"{name}: procMount {sc['procMount']}")
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            out.append(f"{name}: seccomp Unconfined")
        if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
            out.append(f"{name}: AppArmor unconfined")
        selinux = sc.get("seLinuxOptions") or psc.get("seLinuxOptions") or {}
        if selinux.get("type") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
            out.append(f"{name}: SELinux options {selinux}")
    return out


def restricted(pod: dict[str, Any]) -> list[str]:
    """Violations of the restricted profile (which includes baseline)."""
    out = baseline(pod)
    psc = pod.get("securityContext") or {}
    for v in pod.get("volumes", []) or []:
        kinds = set(v) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            out.append(f"volume {v.get('name')} of type {sorted(kinds)}")
    for c in _containers(pod):
        name = c.get("name")
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation is not false")
        if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
            out.append(f"{name}: runAsNonRoot is not true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            out.append(f"{name}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost (is {seccomp})")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{name}: capabilities must drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: may add only NET_BIND_SERVICE")
    return out
