"""Hardening, against the real engine: what a kernel container may do (its user, capabilities,
privileges, processes, root file system, network), what reaches the engine from users (environment,
kernel ids), and where the connection key may appear (only in the private directory).

Each control is checked twice where it can be: in ``docker inspect``, and from inside the kernel.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    CONDA_IMAGE,
    DEBIAN_IMAGE,
    NGC_IMAGE,
    TEST_LABEL,
    TEST_RUN,
    all_log_text,
    install_spec,
    kernel_container,
    kernel_name,
)
from hostusers import host_state_dir
from hypothesis import given, settings
from hypothesis import strategies as st
from jupyter_server.services.kernels.handlers import _kernel_id_regex
from kernel_io import json_output, start_kernel, start_refusal
from servers import Server, write_server_config
from tornado.httpclient import HTTPClientError
from traitlets import TraitError
from traitlets.config import Config

from jupyter_gpu_containers.backends.docker.engine import Engine
from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.base.errors import KernelOptionRefused, ValueRefused
from jupyter_gpu_containers.base.records import OneshotResult
from jupyter_gpu_containers.images.probe import KernelReadinessProbe
from jupyter_gpu_containers.policy.admin_policy import ContainerPolicy
from jupyter_gpu_containers.policy.checks import (
    check_environment,
    check_kernel_id,
    check_network_mode,
    kernel_user,
    numeric_user,
)

# GPUs of this module's own (NGC-like images book one by default): parallel runs of other test
# files on the same engine share GPU-test-*.
HARD_GPUS = [
    {
        "index": i,
        "uuid": f"GPU-hard-{i}",
        "name": "Tesla T4",
        "brand": "tesla",
        "compute_capability": "7.5",
        "memory_total": 16 * 2**30,
    }
    for i in range(2)
]
pytestmark = [
    pytest.mark.usefixtures("docker_client"),
    pytest.mark.server_config(lambda _: {"GPUInventory": {"static_gpus": HARD_GPUS}}),
]

ROOT = os.getuid() == 0
# In-process servers run as the suite's user, root in CI: an explicit unprivileged uid shows
# what a kernel of an ordinary user's server looks like.
UNPRIVILEGED = "4242:4242" if ROOT else "server"
SYS_PTRACE, NET_RAW = 19, 13  # capability bits, linux/capability.h

FACTS = r"""
import json, os
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
def pids_max():
    for path in ("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max"):
        try:
            return open(path).read().strip()
        except OSError:
            pass
def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as e:
        return type(e).__name__
open("/tmp/mine", "w").close()
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(),
    "cap_eff": int(status["CapEff"], 16), "cap_prm": int(status["CapPrm"], 16),
    "cap_bnd": int(status["CapBnd"], 16), "cap_amb": int(status["CapAmb"], 16),
    "no_new_privs": int(status["NoNewPrivs"]),
    "pids_max": pids_max(),
    "chown": attempt(lambda: os.chown("/tmp/mine", 1, 1)),
    "write_etc": attempt(lambda: open("/etc/jgc-probe", "w").close()),
    "write_tmp": attempt(lambda: open("/tmp/jgc-probe", "w").close()),
    "write_home": attempt(lambda: open(os.path.expanduser("~/jgc-probe"), "w").close()),
    "env": dict(os.environ),
}))
"""


async def start_on(jp_fetch: Any, image: str = DEBIAN_IMAGE, **body: Any) -> str:
    return await start_kernel(jp_fetch, kernel_name(image), **body)


async def refusal_on(jp_fetch: Any, image: str = DEBIAN_IMAGE, **body: Any) -> tuple[int, str]:
    return await start_refusal(jp_fetch, kernel_name(image), **body)


async def facts(jp_ws_fetch: Any, kernel_id: str) -> dict[str, Any]:
    return await json_output(jp_ws_fetch, kernel_id, FACTS)


def no_new_privileges(security_opt: list[str] | None) -> bool:
    # Docker 20.10 keeps what was asked ("no-new-privileges"); later ones may add ":true".
    return any(o in ("no-new-privileges", "no-new-privileges:true") for o in security_opt or [])


def assert_no_kernel_containers(client: Any) -> None:
    """No kernel container of this run (readiness probes the server started may still run)."""
    left = client.containers.list(
        all=True, filters={"label": [f"{TEST_LABEL}={TEST_RUN}", L.KERNEL_ID]}
    )
    assert not left, [c.name for c in left]


def config(**sections: Any) -> pytest.MarkDecorator:
    return pytest.mark.server_config(lambda _: sections)


# ---------------------------------------------------------------------- the container


@pytest.mark.parametrize("image", [DEBIAN_IMAGE, NGC_IMAGE])
@config(
    ContainerPolicy={"allowed_run_as": [UNPRIVILEGED]},
    ContainerProvisioner={
        "run_as": UNPRIVILEGED,
        # Newlines and non-ASCII are fine in values: only what cannot reach the engine is refused.
        "environment": {"JGC_MULTILINE": "line one\nline two \u00e9"},
    },
)
async def test_kernels_are_hardened_by_default(
    image: str, jp_fetch: Any, jp_ws_fetch: Any, docker_client: Any
) -> None:
    kernel_id = await start_on(jp_fetch, image)
    attrs = kernel_container(docker_client, kernel_id).attrs
    host = attrs["HostConfig"]
    assert host["CapDrop"] == ["ALL"]
    assert not host["CapAdd"]
    assert no_new_privileges(host["SecurityOpt"]), host["SecurityOpt"]
    assert host["PidsLimit"] == 4096
    assert host["Init"] is True
    assert host["Privileged"] is False
    assert host["ReadonlyRootfs"] is False
    user = attrs["Config"]["User"]
    assert user and user.split(":")[0] not in ("0", "root") and user.split(":")[1] != "0"

    inside = await facts(jp_ws_fetch, kernel_id)
    assert inside["uid"] != 0 and inside["gid"] != 0
    assert (inside["cap_eff"], inside["cap_prm"], inside["cap_amb"]) == (0, 0, 0)
    assert inside["cap_bnd"] == 0, "no capability can be regained, not even through setuid"
    assert inside["no_new_privs"] == 1
    assert inside["pids_max"] == "4096"
    assert inside["env"]["JGC_MULTILINE"] == "line one\nline two \u00e9"
    assert inside["write_home"] == "ok"


@config(
    ContainerPolicy={"allow_root": True, "allowed_run_as": ["0:0"]},
    ContainerProvisioner={"run_as": "0:0"},
)
async def test_root_when_allowed_still_has_no_capabilities(
    jp_fetch: Any, jp_ws_fetch: Any, docker_client: Any
) -> None:
    kernel_id = await start_on(jp_fetch)
    assert kernel_container(docker_client, kernel_id).attrs["Config"]["User"] == "0:0"
    inside = await facts(jp_ws_fetch, kernel_id)
    assert inside["uid"] == 0
    assert (inside["cap_eff"], inside["cap_bnd"], inside["no_new_privs"]) == (0, 0, 1)
    # Root without CAP_CHOWN cannot give a file away.
    assert inside["chown"] == "PermissionError"


def refuse_root(run_as: str) -> Any:
    # The run_as is one the administrator allows: what refuses it is that it would be root.
    return config(
        ContainerPolicy={"allow_root": False, "allowed_run_as": [run_as]},
        ContainerProvisioner={"run_as": run_as},
    )


@pytest.mark.parametrize(
    ("why", "image"),
    [
        pytest.param("it is set to run as '0:0'", DEBIAN_IMAGE, marks=refuse_root("0:0")),
        pytest.param("it is set to run as '0'", DEBIAN_IMAGE, marks=refuse_root("0")),
        pytest.param("it is set to run as '4242:0'", DEBIAN_IMAGE, marks=refuse_root("4242:0")),
        pytest.param("the image's USER is unset (root)", DEBIAN_IMAGE, marks=refuse_root("image")),
        pytest.param(
            "the Jupyter server starting it runs as root",
            DEBIAN_IMAGE,
            marks=[
                refuse_root("server"),
                pytest.mark.skipif(not ROOT, reason="the server runs as root only when we do"),
            ],
        ),
    ],
)
async def test_root_kernels_are_refused_unless_allowed(
    why: str, image: str, jp_fetch: Any, docker_client: Any, tmp_path: Path
) -> None:
    code, message = await refusal_on(jp_fetch, image)
    assert code == 403
    assert "would run as root" in message and why in message, message
    # What an administrator can change, in words; the option's name is the log's.
    assert "an administrator can allow them" in message and "ContainerPolicy." not in message
    assert_no_kernel_containers(docker_client)
    assert list((tmp_path / "conn").iterdir()) == []


@config(
    ContainerPolicy={
        "cap_add": ["sys_ptrace", "CAP_NET_RAW"],
        "no_new_privileges": False,
        "allowed_run_as": [UNPRIVILEGED],
    },
    ContainerProvisioner={"run_as": UNPRIVILEGED, "pids_limit": 321},
)
async def test_admin_opt_outs(jp_fetch: Any, jp_ws_fetch: Any, docker_client: Any) -> None:
    kernel_id = await start_on(jp_fetch)
    host = kernel_container(docker_client, kernel_id).attrs["HostConfig"]
    assert host["CapDrop"] == ["ALL"]
    assert {c.removeprefix("CAP_") for c in host["CapAdd"]} == {"SYS_PTRACE", "NET_RAW"}
    assert not no_new_privileges(host["SecurityOpt"])
    assert host["PidsLimit"] == 321
    inside = await facts(jp_ws_fetch, kernel_id)
    assert inside["cap_bnd"] == (1 << SYS_PTRACE) | (1 << NET_RAW)
    assert inside["cap_eff"] == 0, "an unprivileged user holds none of them until it execs"
    assert inside["no_new_privs"] == 0
    assert inside["pids_max"] == "321"


def test_capability_names_are_checked() -> None:
    assert ContainerPolicy(cap_add=["cap_sys_nice", "IPC_LOCK"]).cap_add == ["SYS_NICE", "IPC_LOCK"]
    assert ContainerPolicy(cap_add=["all"]).cap_add == ["ALL"]
    for bad in ["SYS PTRACE", "", "CAP_", "ptrace;rm", "SYS_PTRACE2", "NOT_A_CAPABILITY"]:
        with pytest.raises(TraitError, match="is not a Linux capability name"):
            ContainerPolicy(cap_add=[bad])


@config(
    ContainerPolicy={"allow_root": True, "read_only_root_fs": True, "allowed_run_as": ["0:0"]},
    ContainerProvisioner={"run_as": "0:0"},
)
async def test_read_only_root_file_system_opt_in(
    jp_fetch: Any, jp_ws_fetch: Any, docker_client: Any
) -> None:
    kernel_id = await start_on(jp_fetch, NGC_IMAGE)  # its ENTRYPOINT still runs
    host = kernel_container(docker_client, kernel_id).attrs["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert {"/tmp", "/var/tmp", "/home/jupyter"} <= set(host["Tmpfs"])
    inside = await facts(jp_ws_fetch, kernel_id)
    # Root, the owner of /etc, is stopped by the file system itself.
    assert inside["write_etc"] == "OSError"
    assert (inside["write_tmp"], inside["write_home"]) == ("ok", "ok")
    assert inside["env"]["NGC_ENTRYPOINT_RAN"] == "1"


@pytest.mark.parametrize(
    ("settings_", "expected"),
    [
        ({}, {"caps": 0, "no_new_privs": 1}),
        (
            {"cap_add": ["SYS_PTRACE"], "no_new_privileges": False},
            {"caps": 1 << SYS_PTRACE, "no_new_privs": 0},
        ),
    ],
)
def test_probe_containers_are_hardened_like_kernels(
    settings_: dict[str, Any],
    expected: dict[str, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The probe's own container, as the probe configures it, reports its capabilities and
    no_new_privs flag instead of probing. It runs as the image's USER, root here: its effective
    capabilities are all it has."""
    engine = Engine()
    real = engine.run_oneshot_sync
    seen: dict[str, str] = {}

    def report_instead(image: str, command: list[str], **kwargs: Any) -> OneshotResult:
        status = [
            "sh",
            "-c",
            "grep -E '^(CapBnd|CapEff|NoNewPrivs):' /proc/self/status; "
            'echo "NVIDIA:$NVIDIA_VISIBLE_DEVICES"',
        ]
        result = real(image, status, **kwargs)
        seen["status"] = result.stdout
        return result

    monkeypatch.setattr(engine, "run_oneshot_sync", report_instead)
    probe = KernelReadinessProbe(
        config=Config({"ContainerPolicy": settings_}),
        backend=engine,
        extra_labels={TEST_LABEL: TEST_RUN},
        cache_dir=str(tmp_path / "cache"),
    )
    try:
        probe.probe_sync(engine.inspect_image_sync(DEBIAN_IMAGE))
    finally:
        probe.close()
        engine.close()
    status = dict(line.split(":", 1) for line in seen["status"].split("\n") if line)
    assert int(status["CapBnd"], 16) == expected["caps"]
    assert int(status["CapEff"], 16) == expected["caps"]
    assert int(status["NoNewPrivs"]) == expected["no_new_privs"]
    assert status["NVIDIA"] == "void"  # a probe sees no GPU, whatever the image defaults to


# ---------------------------------------------------------------------- the default user


USER = os.environ.get("JGC_TEST_USER", "")


@pytest.fixture
def user_server() -> Iterator[Server]:
    """A real server run as JGC_TEST_USER (not root, though in the docker group), with the
    default run_as."""
    entry = pwd.getpwnam(USER)
    home = Path(tempfile.mkdtemp(prefix="jgc-hard-", dir="/tmp"))
    for sub in ("config", "data", "runtime", "workspace"):
        (home / sub).mkdir()
    for path in [home, *home.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid)
    with host_state_dir() as state:
        write_server_config(home, {"ContainerPolicy": {"state_dir": str(state)}})
        server = Server(home, home / "workspace", [], user=USER)
        try:
            yield server
        finally:
            server.stop()
            if server.process.returncode not in (0, -signal.SIGTERM):
                print(server.output())
            shutil.rmtree(home, ignore_errors=True)


@pytest.mark.skipif(not USER or not ROOT, reason="needs root and JGC_TEST_USER (scripts/test.sh)")
async def test_by_default_kernels_run_as_the_servers_user(
    user_server: Server, docker_client: Any
) -> None:
    entry = pwd.getpwnam(USER)
    kernel = await user_server.call(
        "POST", "api", "kernels", body={"name": kernel_name(CONDA_IMAGE)}
    )
    attrs = kernel_container(docker_client, kernel["id"]).attrs
    assert attrs["Config"]["User"] == f"{entry.pw_uid}:{entry.pw_gid}"
    assert attrs["HostConfig"]["CapDrop"] == ["ALL"]
    result = await user_server.execute(kernel["id"], "import os; print(os.getuid(), os.getgid())")
    assert result.stdout.split() == [str(entry.pw_uid), str(entry.pw_gid)]
    await user_server.call("DELETE", "api", "kernels", kernel["id"])


def test_kernel_user_rules() -> None:
    assert kernel_user("server", 1000, 100, "", allow_root=False) == "1000:100"
    assert kernel_user("image", 1000, 100, "jovyan", allow_root=False) is None
    assert kernel_user("image", 1000, 100, "1000:1000", allow_root=False) is None
    assert kernel_user("4242", 0, 0, "", allow_root=False) == "4242:4242"
    assert kernel_user("0:0", 1000, 100, "", allow_root=True) == "0:0"
    for run_as, image_user in [("image", ""), ("image", "root"), ("image", "00:12"),
                               ("image", "jovyan:root"), ("image", "1000:0"), ("0", ""),
                               ("12:0", "")]:  # fmt: skip
        with pytest.raises(KernelOptionRefused, match="would run as root"):
            kernel_user(run_as, 1000, 100, image_user, allow_root=False)
    with pytest.raises(KernelOptionRefused, match="the Jupyter server starting it runs as root"):
        kernel_user("server", 0, 0, "", allow_root=False)
    for bad in ["alice", "1000:", ":1000", "-1", "1:2:3", "1000 ", "99999999999"]:
        with pytest.raises(ValueRefused, match="must be"):
            numeric_user(bad)


# ---------------------------------------------------------------------- what reaches the engine


def spec_with_env(data_dir: Path, env: dict[str, str]) -> str:
    name = install_spec(data_dir, "env-case", DEBIAN_IMAGE)
    path = data_dir / "kernels" / name / "kernel.json"
    spec = json.loads(path.read_text())
    spec["env"] = env
    path.write_text(json.dumps(spec))
    return name


@pytest.mark.parametrize(
    ("env", "refusal"),
    [
        ({"BAD-NAME": "x"}, "'BAD-NAME' cannot be an environment variable name"),
        ({"A\nB": "x"}, "cannot be an environment variable name"),
        ({"OK": "a\0b"}, "The value of the environment variable OK contains a NUL character"),
        ({"OK": "x" * 5000}, "is 5000 bytes long; at most 4096"),
        ({"NVIDIA_VISIBLE_DEVICES": "all"}, "may not set NVIDIA_VISIBLE_DEVICES"),
    ],
)
async def test_spec_environments_are_checked(
    env: dict[str, str], refusal: str, jp_fetch: Any, jp_data_dir: Path, docker_client: Any
) -> None:
    name = spec_with_env(jp_data_dir, env)
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": name}))
    assert info.value.code == 400
    assert refusal in json.loads(info.value.response.body)["message"]
    assert_no_kernel_containers(docker_client)


def name_is_portable(name: Any) -> bool:
    return (
        isinstance(name, str)
        and 0 < len(name) <= 255
        and name.isascii()
        and (name[0].isalpha() or name[0] == "_")
        and all(c.isalnum() or c == "_" for c in name)
    )


def value_is_plain(value: str, limit: int) -> bool:
    try:
        return "\0" not in value and len(value.encode("utf-8")) <= limit
    except UnicodeEncodeError:
        return False


ANY_TEXT = st.text(alphabet=st.characters(exclude_categories=[]), max_size=40)
NAMES = st.one_of(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,30}", fullmatch=True), ANY_TEXT)
VALUES = st.one_of(
    ANY_TEXT,
    st.text(alphabet=st.sampled_from("aé\n"), min_size=1020, max_size=1030),
)


@settings(max_examples=500, deadline=timedelta(seconds=1), database=None)
@given(env=st.dictionaries(NAMES, VALUES, max_size=4))
def test_random_environments_pass_whole_or_are_refused(env: dict[str, str]) -> None:
    limit = 1024
    try:
        checked = check_environment(env, limit)
    except ValueRefused as e:
        assert e.sentence.isprintable() or "\n" not in e.sentence
        assert not all(name_is_portable(k) and value_is_plain(v, limit) for k, v in env.items())
        return
    assert checked == env
    assert all(name_is_portable(k) and value_is_plain(v, limit) for k, v in env.items())


@settings(max_examples=300, deadline=timedelta(seconds=1), database=None)
@given(kernel_id=st.one_of(st.uuids().map(str), ANY_TEXT))
def test_random_kernel_ids_are_file_and_container_names_or_refused(kernel_id: str) -> None:
    try:
        checked = check_kernel_id(kernel_id)
    except ValueRefused:
        return
    assert "/" not in checked and "\0" not in checked and not checked.startswith(".")
    assert checked.isascii() and len(checked) <= 128
    # ...and one jupyter_server's kernel routes reach: a kernel the API cannot address could
    # never be shut down through it (its regex is private; jupyter_server 2.x names it so).
    assert re.fullmatch(_kernel_id_regex, checked)


@pytest.mark.parametrize(
    "kernel_id", ["../../escape", "a" * 200, "x/y", ".hidden", "ok\0", "gpu.hog", "my-kernel.1"]
)
async def test_client_chosen_kernel_ids_are_checked(
    kernel_id: str, jp_fetch: Any, jp_runtime_dir: Path, docker_client: Any, tmp_path: Path
) -> None:
    code, message = await refusal_on(jp_fetch, kernel_id=kernel_id)
    assert code == 400 and "cannot be a kernel id" in message, message
    assert_no_kernel_containers(docker_client)
    assert not (tmp_path / "conn").exists() or not list((tmp_path / "conn").iterdir())
    assert not any("escape" in p.name for p in jp_runtime_dir.parent.rglob("*"))


async def test_a_client_chosen_kernel_id_the_routes_reach_works(
    jp_fetch: Any, docker_client: Any
) -> None:
    kernel_id = await start_on(jp_fetch, kernel_id="my-own-kernel-number-1")
    assert kernel_id == "my-own-kernel-number-1"
    assert kernel_container(docker_client, kernel_id).labels[L.KERNEL_ID] == kernel_id
    assert json.loads((await jp_fetch("api", "kernels", kernel_id)).body)["id"] == kernel_id
    await jp_fetch("api", "kernels", kernel_id, method="DELETE")


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param("host", marks=config(ContainerProvisioner={"network_mode": "host"})),
        pytest.param(
            "container:x", marks=config(ContainerProvisioner={"network_mode": "container:x"})
        ),
    ],
)
async def test_network_modes_outside_the_allow_list_are_refused(
    mode: str, jp_fetch: Any, docker_client: Any
) -> None:
    code, message = await refusal_on(jp_fetch)
    assert code == 403
    assert f"The network mode '{mode}' is not allowed" in message
    assert "Ask an administrator to allow it" in message and "ContainerPolicy." not in message
    assert_no_kernel_containers(docker_client)


def test_network_mode_allow_list_patterns() -> None:
    policy = ContainerPolicy(allowed_network_modes=["bridge", "none", "lab-*"])
    assert check_network_mode(policy, "lab-net") == "lab-net"
    for mode in ["host", "container:abc", "lab", "BRIDGE"]:
        with pytest.raises(KernelOptionRefused):
            check_network_mode(policy, mode)


# ---------------------------------------------------------------------- the kernel's channels


def listeners(ports: set[int]) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp* write them) listening on ``ports`` on this host."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                address, port = fields[1].rsplit(":", 1)
                if fields[3] == "0A" and int(port, 16) in ports:
                    found.append(address)
    return found


LOOPBACK = {
    "0100007F",  # 127.0.0.1
    "00000000000000000000000001000000",  # ::1
    "0000000000000000FFFF00000100007F",  # ::ffff:127.0.0.1
}


@pytest.mark.parametrize(
    "transport",
    [
        pytest.param(
            t, marks=config(ContainerProvisioner={"transport": t}, ServerApp={"log_level": "DEBUG"})
        )
        for t in ("ipc", "tcp")
    ],
)
async def test_the_connection_key_stays_in_the_private_directory(
    transport: str,
    jp_fetch: Any,
    jp_ws_fetch: Any,
    jp_serverapp: Any,
    docker_client: Any,
) -> None:
    body = {"path": "nb.ipynb", "type": "notebook", "name": "nb.ipynb"}
    with all_log_text() as logs:
        response = await jp_fetch(
            "api",
            "sessions",
            method="POST",
            body=json.dumps({**body, "kernel": {"name": kernel_name(DEBIAN_IMAGE)}}),
        )
        kernel_id = json.loads(response.body)["kernel"]["id"]
        inside = await facts(jp_ws_fetch, kernel_id)
        rest = (await jp_fetch("api", "kernels", kernel_id)).body.decode()
        km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
        key = km.session.key.decode()
        container = kernel_container(docker_client, kernel_id)
        inspected = docker_client.api.inspect_container(container.id)
        container_log = container.logs().decode("utf-8", "replace")
    assert len(key) >= 32
    assert json.loads(Path(km.connection_file).read_text())["key"] == key

    assert key not in json.dumps(inspected)
    assert not any(key in item for item in inspected["Config"]["Env"])
    assert not any(key in k or key in v for k, v in inspected["Config"]["Labels"].items())
    assert not any(key in v for v in inside["env"].values())
    assert key not in container_log
    assert key not in rest
    assert any("Kernel started" in line for line in logs), "the capture saw the start"
    assert not [line for line in logs if key in line]

    # Only this user may read it: the private directory, its connection file, the server's copy.
    conn_dir = Path(container.labels[L.CONNECTION_DIR])
    # (ipykernel sets the sticky bit on the directory of the connection file it rewrites.)
    assert conn_dir.stat().st_mode & 0o777 == 0o700
    assert stat.S_IMODE((conn_dir / "kernel.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(os.stat(km.connection_file).st_mode) & 0o077 == 0

    bindings = inspected["HostConfig"]["PortBindings"] or {}
    if transport == "ipc":
        assert bindings == {} and not inspected["Config"].get("ExposedPorts")
        return
    info = km.get_connection_info()
    ports = {int(info[f"{c}_port"]) for c in ("shell", "iopub", "stdin", "control", "hb")}
    assert {int(p.split("/")[0]) for p in bindings} == ports
    assert {b["HostIp"] for port in bindings.values() for b in port} == {"127.0.0.1"}
    assert {int(b["HostPort"]) for port in bindings.values() for b in port} == ports
    found = listeners(ports)
    assert set(found) <= LOOPBACK, f"kernel ports listened on beyond loopback: {found}"
