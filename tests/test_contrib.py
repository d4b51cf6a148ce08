"""What `contrib/` offers a user: a systemd user unit, a launchd agent, shell completion,
and the relay as a replicated service in front of Enterprise Gateway on Kubernetes.

The unit is verified by systemd itself (`systemd-analyze verify`), with its
`ExecStart` pointed at this checkout's command; its `Type=notify` is tested
against the relay with a real notification socket; the completion script is
sourced into a real bash and asked to complete. The Kubernetes manifests are
validated against Kubernetes' own schemas (`kubernetes-validate --strict`, which
ships them), and the container's arguments and environment are run as a relay
here, in front of a real Kernel Gateway, and probed as the kubelet would.
"""

from __future__ import annotations

import plistlib
import re
import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from .conftest import Mixed
from .servers import BIN, JupyterServer, free_port, start_relay_process

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"


def test_the_systemd_unit_is_valid_and_waits_for_readiness(tmp_path: Path) -> None:
    text = (CONTRIB / "jupyter-relay.service").read_text()
    assert "Type=notify" in text and "%h/.local/bin/jupyter-relay" in text
    unit = tmp_path / "jupyter-relay.service"
    unit.write_text(text.replace("%h/.local/bin/jupyter-relay", str(BIN / "jupyter-relay")))
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed (Debian's systemd; scripts/test installs it)"
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # no warning either


def test_the_relay_tells_the_service_manager_it_serves(
    tmp_path: Path, jupyter: JupyterServer
) -> None:
    """`Type=notify`: READY=1 comes once the URL is printed, STOPPING=1 at SIGTERM."""
    address = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(str(address))
        manager.settimeout(60)
        relay = start_relay_process(
            ["--port", "0", "--backend", f"lab={jupyter.backend_arg}"],
            tmp_path,
            env={"NOTIFY_SOCKET": str(address)},
        )
        try:
            ready = manager.recv(4096).decode()
            assert "READY=1" in ready.splitlines(), ready
            assert f"STATUS=serving on port {relay.port}; 1/1 backends up" in ready
        finally:
            assert relay.stop() == 0
        assert "STOPPING=1" in manager.recv(4096).decode().splitlines()


def test_the_launchd_agent_is_a_valid_property_list() -> None:
    with (CONTRIB / "org.jupyter.relay.plist").open("rb") as file:
        agent = plistlib.load(file)
    assert agent["Label"] == "org.jupyter.relay"
    assert agent["ProgramArguments"][0].endswith("/jupyter-relay")
    assert agent["RunAtLoad"] is True and agent["KeepAlive"] == {"SuccessfulExit": False}


def test_bash_completes_the_relays_flags() -> None:
    script = subprocess.run(
        [str(BIN / "jupyter-relay"), "--print-completion", "bash"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    probe = (
        f"{script}\n"
        "COMP_WORDS=(jupyter-relay --back); COMP_CWORD=1; COMP_LINE='jupyter-relay --back'\n"
        "COMP_POINT=${#COMP_LINE}\n"
        "_shtab_jupyter_relay jupyter-relay --back jupyter-relay\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(["bash", "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--backend" in result.stdout.split(), result.stdout
    assert "--backend-timeout" in result.stdout.split(), result.stdout


K8S = CONTRIB / "kubernetes" / "jupyter-relay.yaml"


def manifests() -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(K8S.read_text())}


def test_the_kubernetes_manifests_pass_kubernetes_schemas() -> None:
    validate = BIN / "kubernetes-validate"
    result = subprocess.run(
        [str(validate), "--strict", str(K8S)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(manifests()) == {
        "ConfigMap",
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    }


def test_the_kubernetes_deployment_is_what_the_readme_says() -> None:
    """Replicas, readiness on /relay/healthz, the state on the volume, EG's URL from the
    ConfigMap, the token from a Secret."""
    found = manifests()
    spec = found["Deployment"]["spec"]
    pod = spec["template"]["spec"]
    (relay,) = pod["containers"]
    args, env = relay["args"], {e["name"]: e for e in relay["env"]}
    assert spec["replicas"] >= 2
    assert relay["readinessProbe"]["httpGet"]["path"] == "/relay/healthz"
    mounts = {m["name"]: m["mountPath"] for m in relay["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes["state"]["persistentVolumeClaim"]["claimName"]
    assert claim == found["PersistentVolumeClaim"]["metadata"]["name"]
    assert f"--state-dir={mounts['state']}" in args
    assert env["JUPYTER_RELAY_TOKEN_FILE"]["value"].startswith(mounts["token"] + "/")
    assert volumes["token"]["secret"]["secretName"] == "jupyter-relay-token"
    assert env["EG_URL"]["valueFrom"]["configMapKeyRef"]["name"] == "jupyter-relay"
    assert "eg=gateway+$(EG_URL)" in args
    assert found["ConfigMap"]["data"]["EG_URL"].startswith("http")
    port = relay["ports"][0]["containerPort"]
    assert f"--port={port}" in args and "--ip=0.0.0.0" in args
    assert found["Service"]["spec"]["ports"][0]["targetPort"] == relay["ports"][0]["name"]
    # All replicas on the node of the state volume (sqlite is per host).
    (term,) = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]


def test_the_kubernetes_containers_command_runs_a_relay_that_is_ready(
    tmp_path: Path, mixed: Mixed
) -> None:
    """The container's args and env, with its mounts under tmp_path and EG_URL pointing at
    a real gateway: the relay starts, /relay/healthz answers 200 without the token (the
    kubelet has none), and the token from the "Secret" opens the API."""
    found = manifests()
    (relay,) = found["Deployment"]["spec"]["template"]["spec"]["containers"]
    mounts = {m["mountPath"]: tmp_path / m["name"] for m in relay["volumeMounts"]}
    for path in mounts.values():
        path.mkdir()
    (tmp_path / "token" / "token").write_text("k8s-secret-token-0123456789\n")

    def here(text: str) -> str:
        """A path under a mount (in `--flag=PATH` too), moved under tmp_path; once."""
        flag, eq, value = text.rpartition("=") if text.startswith("--") else ("", "", text)
        for mount in sorted(mounts, key=len, reverse=True):
            if value == mount or value.startswith(mount + "/"):
                return flag + eq + str(mounts[mount]) + value[len(mount) :]
        return text

    env = {"EG_URL": mixed.eg.backend_arg.removeprefix("gateway+")}
    for entry in relay["env"]:
        if "value" in entry:
            env[entry["name"]] = here(entry["value"])
    port = free_port()
    args = [
        re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], here(a)).replace(
            "--ip=0.0.0.0", "--ip=127.0.0.1"
        )
        for a in relay["args"]
    ]
    args = [f"--port={port}" if a.startswith("--port=") else a for a in args]
    proc = start_relay_process(args, tmp_path, env=env)
    try:
        with urllib.request.urlopen(f"{proc.base}relay/healthz", timeout=10) as resp:
            assert resp.status == 200
        request = urllib.request.Request(
            proc.base + "api/kernelspecs",
            headers={"Authorization": "token k8s-secret-token-0123456789"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert "eg--python3" in resp.read().decode()
    finally:
        assert proc.stop() == 0
    assert (tmp_path / "state" / "jupyter-relay-sessions.sqlite").exists()
