"""Attacks of one local user on another's Jupyter server, on one shared host, replayed as real
accounts (hostusers.py) against real servers and the real engine. Each test is one finding of
the security review of the direct mode: before the fix it succeeded; now it must fail.

The accounts: alice (JGC_TEST_USER) and bob (JGC_TEST_PEER) are in the docker group and run
servers of their own; mallory (JGC_TEST_OUTSIDER) has only a shell.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import (
    DEBIAN_IMAGE,
    NGC_IMAGE,
    TEST_LABEL,
    TEST_RUN,
    kernel_container,
    kernel_name,
)
from hostusers import (
    ALICE,
    BOB,
    MALLORY,
    TRY_LOCK,
    Held,
    UserHome,
    host_state_dir,
    ids_of,
    needs_accounts,
    run_as,
    uid_of,
)
from registry import PrivateRegistry
from servers import Server
from tornado.httpclient import AsyncHTTPClient

from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.host.hoststate import DEFAULT_STATE_DIR, provision, server_lock_name
from jupyter_gpu_containers.kernel.kernelspecs import kernel_spec_dict

pytestmark = [needs_accounts, pytest.mark.usefixtures("docker_client")]

HOST_GPUS = [
    {"index": i, "uuid": f"GPU-host-{i}", "name": "Tesla T4", "brand": "tesla"} for i in range(4)
]
GPU_SPEC = kernel_name(NGC_IMAGE)  # an NGC-like image: its kernels get one GPU by default
CPU_SPEC = kernel_name(DEBIAN_IMAGE)


@pytest.fixture
def homes() -> Iterator[list[UserHome]]:
    """The homes a test makes; every server in them is stopped, every home removed."""
    made: list[UserHome] = []
    yield made
    for home in made:
        home.close()


@pytest.fixture
def state() -> Iterator[Path]:
    with host_state_dir() as path:
        yield path


@pytest.fixture
def sticky_tmp() -> Iterator[Path]:
    """A directory like /tmp (mode 1777), where any user may make things first."""
    path = Path(tempfile.mkdtemp(prefix="jgc-tmp-", dir="/tmp"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def default_state() -> Iterator[Path]:
    """The default host state directory, as `setup-host` makes it; the test accounts' liveness
    files are removed afterwards."""
    provision(DEFAULT_STATE_DIR, "docker")
    yield Path(DEFAULT_STATE_DIR)
    accounts = {uid_of(ALICE), uid_of(BOB), uid_of(MALLORY)}
    for path in Path(DEFAULT_STATE_DIR).iterdir():
        if path.lstat().st_uid in accounts:
            path.unlink()


def home_for(
    homes: list[UserHome], user: str, state: Path | None, **sections: dict[str, Any]
) -> UserHome:
    config: dict[str, Any] = {"GPUInventory": {"static_gpus": HOST_GPUS}, **sections}
    if state is not None:
        config["ContainerPolicy"] = {"state_dir": str(state), **config.get("ContainerPolicy", {})}
    home = UserHome(user, config)
    homes.append(home)
    return home


async def start(server: Server, name: str, **body: Any) -> tuple[int, Any]:
    return await server.answer("POST", "api", "kernels", body={"name": name, **body})


def server_id_of(home: UserHome) -> str:
    return L.default_server_id(uid_of(home.user), str(home.workspace))


async def stop_kernels(server: Server) -> None:
    code, kernels = await server.answer("GET", "api", "kernels")
    for kernel in kernels if code == 200 else []:
        await server.answer("DELETE", "api", "kernels", kernel["id"])


# ----------------------------------------------------------- 1. the state directory is root's


def plant(user: str, directory: Path, victim: Path) -> None:
    """As ``user``: make ``directory`` (as if first after a reboot), with the names a server
    uses there pointing into the victim's private directory."""
    run_as(
        user,
        "import os, sys; d, v = sys.argv[1:]; os.mkdir(d, 0o1777); os.chmod(d, 0o1777); "
        "os.symlink(v, os.path.join(d, 'servers')); "
        "os.symlink(os.path.join(v, '.bashrc'), os.path.join(d, 'gpu-allocation.lock'))",
        str(directory),
        str(victim),
    )


def victim_dir(home: UserHome) -> Path:
    """A directory of alice's alone, with a .bashrc: what the planted links point at."""
    private = home.path / "private"
    private.mkdir(mode=0o700)
    (private / ".bashrc").write_text("echo welcome\n")
    (private / ".bashrc").chmod(0o644)
    for path in (private, private / ".bashrc"):
        os.chown(path, *ids_of(home.user))
    return private


def untouched(private: Path) -> bool:
    bashrc = private / ".bashrc"
    return (
        stat.S_IMODE(private.stat().st_mode) == 0o700
        and stat.S_IMODE(bashrc.stat().st_mode) == 0o644
        and bashrc.read_text() == "echo welcome\n"
    )


async def test_a_state_directory_another_user_made_is_refused_and_follows_no_link(
    homes: list[UserHome], sticky_tmp: Path
) -> None:
    planted = sticky_tmp / "jupyter-gpu-containers"
    alice = home_for(homes, ALICE, planted)
    private = victim_dir(alice)
    plant(BOB, planted, private)
    server = alice.start()
    code, refusal = await start(server, GPU_SPEC)
    assert code == 503, refusal
    assert f"cannot be used: {planted} belongs to {BOB}" in refusal["message"]
    assert "setup-host" in refusal["message"]
    code, _ = await start(server, CPU_SPEC)  # CPU kernels need no host state
    assert code == 201
    assert untouched(private)
    await stop_kernels(server)


async def test_the_default_state_directory_ignores_tmpdir(
    homes: list[UserHome], default_state: Path, sticky_tmp: Path
) -> None:
    """What a user finds in TMPDIR (theirs, or one another user prepared) is never the host
    state: the default is root's /run/jupyter-gpu-containers."""
    alice = home_for(homes, ALICE, None)
    private = victim_dir(alice)
    plant(BOB, sticky_tmp / "jupyter-gpu-containers", private)
    server = alice.start(env={"TMPDIR": str(sticky_tmp)})
    code, kernel = await start(server, GPU_SPEC)
    assert code == 201, kernel
    assert untouched(private)
    assert (default_state / server_lock_name(server_id_of(alice))).is_file()
    await stop_kernels(server)


# ------------------------------------------------------------------- 2. locks nobody can hold


async def test_an_outsider_cannot_hold_the_allocation_lock(
    homes: list[UserHome], default_state: Path, sticky_tmp: Path
) -> None:
    """Mallory, outside the docker group, tries to hold the allocation lock: the host state
    directory's (and the lock file a server used to make in TMPDIR, mode 0666)."""
    alice = home_for(homes, ALICE, None, GPUAllocator={"lock_timeout": 5})
    server = alice.start(env={"TMPDIR": str(sticky_tmp)})
    assert (await start(server, GPU_SPEC))[0] == 201
    old_lock = sticky_tmp / "jupyter-gpu-containers" / "gpu-allocation.lock"
    mallory = Held(MALLORY, TRY_LOCK, str(default_state), "dir", str(old_lock), "ex")
    try:
        assert mallory.said.split()[0] == "PermissionError", mallory.said
        code, kernel = await start(server, GPU_SPEC)
        assert code == 201, kernel
    finally:
        mallory.stop()
        await stop_kernels(server)


async def test_waiting_for_a_held_allocation_lock_occupies_no_thread(
    homes: list[UserHome], state: Path
) -> None:
    """Eight GPU launches wait while another server holds the host-wide lock: the server's
    other requests still answer (before, each waiter held a thread of the default executor, 6
    on two cores, and the catalog waited with them)."""
    alice = home_for(
        homes,
        ALICE,
        state,
        GPUAllocator={"policy": "shared", "max_kernels_per_gpu": 2, "lock_timeout": 120},
    )
    server = alice.start()
    # Bob's server is busy booking: he holds the lock, as the directory (and the old lock file).
    bob = Held(BOB, TRY_LOCK, str(state), "dir", str(state / "gpu-allocation.lock"), "ex")
    assert bob.said == "held held"
    launches = [asyncio.ensure_future(start(server, GPU_SPEC)) for _ in range(8)]
    try:
        for _ in range(600):  # until a launch says it waits for the lock (at most 60 s)
            if "waits for the host-wide GPU allocation lock" in server.output():
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"no launch waited for the lock:\n{server.output()[-3000:]}")
        await asyncio.sleep(1)  # the other seven reach the lock too
        for path in ("images", "gpus", "status"):
            code, _ = await server.answer("GET", "gpu-containers", path)
            assert code == 200
        assert not any(f.done() for f in launches)  # the answers came while the lock was held
    finally:
        bob.stop()
    answers = await asyncio.gather(*launches)
    assert [code for code, _ in answers] == [201] * 8, answers
    await stop_kernels(server)


async def test_another_users_liveness_lock_cannot_be_taken_held_or_removed(
    homes: list[UserHome], state: Path, docker_client: docker.DockerClient
) -> None:
    alice = home_for(homes, ALICE, state)
    bob = home_for(homes, BOB, state)
    alice_id = server_id_of(alice)
    names = [state / server_lock_name(alice_id), state / "servers" / f"{alice_id}.lock"]
    lock = str(names[0])

    # Bob takes the name of alice's lock first: her server still starts, and serves.
    run_as(
        BOB,
        "import os, sys\n"
        "os.makedirs(os.path.dirname(sys.argv[2]), exist_ok=True)\n"
        "for p in sys.argv[1:]: os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o600))",
        *map(str, names),
    )
    first = alice.start()
    assert "serves under the id" in first.output()
    assert (await start(first, GPU_SPEC))[0] == 201
    await stop_kernels(first)
    first.stop()
    for path in names:
        path.unlink()

    # Alice's server, two kernels, killed: while it restarts, neither bob nor mallory can hold
    # its lock (to make it look alive forever, or to make its restart think its id is taken).
    second = alice.start()
    kernels = {(await start(second, spec))[1]["id"] for spec in (GPU_SPEC, CPU_SPEC)}
    second.kill9()
    holders = [Held(BOB, TRY_LOCK, lock, "sh"), Held(MALLORY, TRY_LOCK, lock, "sh")]
    try:
        assert [h.said for h in holders] == ["PermissionError", "PermissionError"]
        third = alice.start()
        assert "reattached 2, removed 0" in third.output(), third.output()
    finally:
        for holder in holders:
            holder.stop()
    assert {k["id"] for k in (await third.answer("GET", "api", "kernels"))[1]} == kernels

    # Bob cannot remove her lock. Were it gone (root can remove it), a kernel whose creator
    # still runs is not free for the taking all the same.
    assert (
        run_as(
            BOB,
            "import os, sys\ntry:\n    os.unlink(sys.argv[1])\n    print('removed')\n"
            "except OSError as e:\n    print(type(e).__name__)",
            lock,
        ).strip()
        == "PermissionError"
    )
    code, new = await start(third, GPU_SPEC)
    assert code == 201, new
    held = kernel_container(docker_client, new["id"]).labels[L.GPUS]
    index = next(str(g["index"]) for g in HOST_GPUS if g["uuid"] == held)
    names[0].unlink()
    his = bob.start()
    body = {"path": "b.ipynb", "kernel_name": GPU_SPEC, "gpus": [index]}
    code, refusal = await his.answer("POST", "gpu-containers", "notebooks", "kernel", body=body)
    assert code == 409, refusal
    assert kernel_container(docker_client, new["id"]).status == "running"

    # Her server killed for good: its kernel's GPU is free, whatever lock bob holds on its name.
    third.kill9()
    squatter = Held(BOB, TRY_LOCK, lock, "ex")
    try:
        assert squatter.said == "held"  # a file of his own: it proves nothing of her server
        code, answer = await his.answer("POST", "gpu-containers", "notebooks", "kernel", body=body)
        assert code == 200, answer
    finally:
        squatter.stop()
    assert not docker_client.containers.list(
        all=True, filters={"label": f"{L.KERNEL_ID}={new['id']}"}
    )
    await stop_kernels(his)
    # What her killed servers left is swept by her next server.
    alice.start("--GPUContainersApp.on_start=sweep")


async def test_servers_with_different_tmpdirs_share_one_ledger(
    homes: list[UserHome], default_state: Path, docker_client: docker.DockerClient
) -> None:
    """pam_tmpdir, or systemd's PrivateTmp: each user has a TMPDIR of their own. Before, each
    server then had a state directory of its own, saw the other's kernels as garbage, removed
    them and took their GPUs."""
    one_gpu = {"GPUInventory": {"static_gpus": HOST_GPUS[:1]}}
    alice = home_for(homes, ALICE, None, **one_gpu)
    bob = home_for(homes, BOB, None, **one_gpu)
    tmp = Path(tempfile.mkdtemp(prefix="jgc-tmpdirs-", dir="/tmp"))
    try:
        for user in (ALICE, BOB):
            (tmp / user).mkdir(mode=0o700)
            os.chown(tmp / user, *ids_of(user))
        hers = alice.start(env={"TMPDIR": str(tmp / ALICE)})
        his = bob.start(env={"TMPDIR": str(tmp / BOB)})
        code, kernel = await start(hers, GPU_SPEC)
        assert code == 201, kernel
        code, refusal = await start(his, GPU_SPEC)
        assert code == 409 and "held by a kernel of another user" in refusal["message"], refusal
        his.stop()
        again = bob.start(env={"TMPDIR": str(tmp / BOB)})
        assert "removed 0" in again.output()
        assert kernel_container(docker_client, kernel["id"]).status == "running"
        await stop_kernels(hers)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------- 4, 5. a spec is not the admin


def users_spec(image: str, **provisioner: Any) -> dict[str, Any]:
    spec = kernel_spec_dict(image, None, {"provisioner": provisioner})
    spec["metadata"]["kernel_provisioner"]["config"]["extra_labels"] = {TEST_LABEL: TEST_RUN}
    return spec


async def test_a_users_kernel_spec_cannot_take_another_uid_or_a_writable_mount(
    homes: list[UserHome], state: Path
) -> None:
    shared = Path(tempfile.mkdtemp(prefix="jgc-shared-", dir="/tmp"))
    shared.chmod(0o755)
    try:
        bobs = shared / "bob"
        bobs.mkdir(mode=0o700)
        (bobs / "secret").write_text("bob's")
        (bobs / "secret").chmod(0o600)
        for path in (bobs, bobs / "secret"):
            os.chown(path, *ids_of(BOB))
        alice = home_for(
            homes, ALICE, state, ContainerPolicy={"allowed_mount_roots": [str(shared)]}
        )
        uid, gid = ids_of(BOB)
        mount = {"source": str(bobs), "target": "/mnt/bob"}
        alice.install_spec(
            "as-bob",
            users_spec(DEBIAN_IMAGE, run_as=f"{uid}:{gid}", extra_mounts=[mount]),
        )
        alice.install_spec(
            "writable", users_spec(DEBIAN_IMAGE, extra_mounts=[{**mount, "read_only": False}])
        )
        alice.install_spec("read-only", users_spec(DEBIAN_IMAGE, extra_mounts=[mount]))
        server = alice.start()
        code, refusal = await start(server, "as-bob")
        assert code == 403 and "the administrator has not allowed" in refusal["message"], refusal
        code, refusal = await start(server, "writable")
        assert code == 403 and "asks to be writable, but on this server" in refusal["message"]
        code, kernel = await start(server, "read-only")
        assert code == 201, kernel
        result = await server.execute(
            kernel["id"],
            "import os\nfor f in (lambda: open('/mnt/bob/secret').read(),\n"
            "          lambda: open('/mnt/bob/new', 'w')):\n"
            "    try:\n        f(); print('ok')\n    except OSError as e:\n"
            "        print(type(e).__name__)",
        )
        assert result.stdout.split() == ["PermissionError", "PermissionError"], result
        assert sorted(os.listdir(bobs)) == ["secret"]
        await stop_kernels(server)
    finally:
        shutil.rmtree(shared, ignore_errors=True)


async def test_a_users_kernel_spec_cannot_lift_the_admins_limits(
    homes: list[UserHome], state: Path, docker_client: docker.DockerClient
) -> None:
    alice = home_for(
        homes,
        ALICE,
        state,
        ContainerProvisioner={"mem_limit": "1g", "pids_limit": 256, "shm_size": "64m"},
        ContainerPolicy={"max_mem_limit": "1g", "max_pids_limit": 256, "max_shm_size": "64m"},
    )
    unlimited = {"mem_limit": None, "pids_limit": None}
    alice.install_spec("no-limits", users_spec(DEBIAN_IMAGE, **unlimited))
    alice.install_spec("big-shm", users_spec(DEBIAN_IMAGE, **unlimited, shm_size="8g"))
    alice.install_spec("rtprio", users_spec(DEBIAN_IMAGE, ulimits={"rtprio": 99}))
    alice.install_spec("runtime", users_spec(DEBIAN_IMAGE, runtime="runc-privileged"))
    server = alice.start()
    for name, says in [
        ("big-shm", "a /dev/shm of 8g, more than the 64m the administrator allows"),
        ("rtprio", "the resource limit 'rtprio', which kernels on this server may not set"),
        ("runtime", "that this kernel is set to use is not allowed"),
    ]:
        code, refusal = await start(server, name)
        assert code == 403 and says in refusal["message"], (name, refusal)
    code, kernel = await start(server, "no-limits")
    assert code == 201, kernel
    attrs = kernel_container(docker_client, kernel["id"]).attrs
    host = attrs["HostConfig"]
    assert (host["Memory"], host["PidsLimit"], host["ShmSize"]) == (2**30, 256, 64 * 2**20)
    assert host["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-size": "10m", "max-file": "3"},
    }
    assert host["Tmpfs"] == {"/home/jupyter": "rw,mode=1777,size=2g"}
    result = await server.execute(
        kernel["id"],
        "import os\nprint(os.statvfs(os.path.expanduser('~')).f_blocks * "
        "os.statvfs(os.path.expanduser('~')).f_frsize)",
    )
    assert int(result.stdout) == 2 * 2**30
    await stop_kernels(server)


# ------------------------------------------------- 6, 7, 8. files the server writes and deletes


async def test_a_connection_directory_another_user_made_first_denies_no_start(
    homes: list[UserHome], state: Path, docker_client: docker.DockerClient
) -> None:
    """A user name long enough pushes <runtime dir>/gpu-containers past what an ipc socket path
    may hold, so the private directories' root falls back to the temporary directory, which
    every account writes. Its name is mkdtemp's (unpredictable): another account cannot make it
    first, and what it made under the names a fallback had or has is passed over, neither used
    nor a reason to refuse the start."""
    alice = home_for(homes, ALICE, state)
    deep = alice.path / "runtime" / ("r" * 70)
    deep.mkdir(parents=True)
    os.chown(deep, *ids_of(ALICE))
    tmp = Path(tempfile.gettempdir())
    prefix = f"jupyter-gpu-containers-{uid_of(ALICE)}"
    before = set(tmp.glob(f"{prefix}-*"))
    # The name the fallback had, and one shaped like those it makes now.
    planted = [tmp / prefix, tmp / f"{prefix}-{uuid.uuid4().hex[:8]}"]
    for path in planted:
        shutil.rmtree(path, ignore_errors=True)
    run_as(
        BOB,
        "import os, sys\nfor d in sys.argv[1:]:\n    os.mkdir(d); os.chmod(d, 0o777)",
        *map(str, planted),
    )
    root: Path | None = None
    try:
        server = alice.start(env={"JUPYTER_RUNTIME_DIR": str(deep)})
        code, kernel = await start(server, CPU_SPEC)
        assert code == 201, kernel
        private = Path(kernel_container(docker_client, kernel["id"]).labels[L.CONNECTION_DIR])
        root = private.parent
        assert root.parent == tmp and root.name.startswith(f"{prefix}-"), root
        assert root not in planted
        info = root.lstat()
        assert stat.S_ISDIR(info.st_mode) and info.st_uid == uid_of(ALICE), root
        assert stat.S_IMODE(info.st_mode) == 0o700
        assert all(os.listdir(path) == [] for path in planted)
        await stop_kernels(server)
        # With a runtime directory of the user's own ($XDG_RUNTIME_DIR), that one is used.
        xdg = alice.path / "xdg"
        xdg.mkdir(mode=0o700)
        os.chown(xdg, *ids_of(ALICE))
        server.stop()
        server = alice.start(env={"JUPYTER_RUNTIME_DIR": str(deep), "XDG_RUNTIME_DIR": str(xdg)})
        code, kernel = await start(server, CPU_SPEC)
        assert code == 201, kernel
        assert len(os.listdir(xdg / "jupyter-gpu-containers")) == 1
        await stop_kernels(server)
    finally:
        for path in planted:
            shutil.rmtree(path, ignore_errors=True)
        if root is not None and root not in before:
            shutil.rmtree(root, ignore_errors=True)


async def test_notebook_code_cannot_make_the_server_write_outside_the_mounts(
    homes: list[UserHome], state: Path
) -> None:
    alice = home_for(homes, ALICE, state)
    profile = alice.path / "data" / "profile"  # alice's, not mounted into her kernels
    run_as(ALICE, "import sys; open(sys.argv[1], 'w').write('export PATH\\n')", str(profile))
    created = alice.path / "data" / "created-by-the-server"
    server = alice.start()
    code, kernel = await start(server, CPU_SPEC)
    assert code == 201, kernel
    for target in (profile, created):
        result = await server.execute(
            kernel["id"],
            "import os\nos.remove('/run/jupyter-kernel/kernel.json')\n"
            f"os.symlink({str(target)!r}, '/run/jupyter-kernel/kernel.json')\nprint('planted')",
        )
        assert result.stdout.strip() == "planted", result
        code, _ = await server.answer("POST", "api", "kernels", kernel["id"], "restart", body={})
        assert code == 200
        assert (await server.execute(kernel["id"], "print(1 + 1)")).stdout.strip() == "2"
    assert profile.read_text() == "export PATH\n"
    assert not created.exists()
    await stop_kernels(server)


async def test_a_label_never_names_a_directory_to_delete(
    homes: list[UserHome], state: Path, docker_client: docker.DockerClient
) -> None:
    alice = home_for(homes, ALICE, state)
    thesis = alice.workspace / "thesis-project"
    run_as(
        ALICE,
        "import os, sys; os.mkdir(sys.argv[1]); "
        "[open(os.path.join(sys.argv[1], n), 'w').write('{}') for n in ('kernel.json', 'ch1.tex')]",
        str(thesis),
    )
    dead = L.OwnerProcess(L.OwnerProcess.current().host, L._boot_id(), 1, "never")
    # Someone in the docker group makes containers that claim to be alice's kernels (her server's
    # id, and a dead one's) and whose private directory is her thesis.
    for server_id in (server_id_of(alice), "a-dead-server"):
        docker_client.containers.create(
            DEBIAN_IMAGE,
            "true",
            labels={
                TEST_LABEL: TEST_RUN,
                L.MANAGED: "true",
                L.KERNEL_ID: str(uuid.uuid4()),
                L.SERVER_ID: server_id,
                L.UID: str(uid_of(ALICE)),
                L.OWNER_PROCESS: dead.token(),
                L.CONNECTION_DIR: str(thesis),
            },
        )
    server = alice.start()
    assert "reattached 0, removed 2" in server.output(), server.output()
    assert sorted(os.listdir(thesis)) == ["ch1.tex", "kernel.json"]


# --------------------------------------------------------------------- 9. images pulled privately


async def test_a_private_pull_is_offered_only_to_the_user_who_pulled_it(
    homes: list[UserHome], state: Path, private_registry: PrivateRegistry
) -> None:
    ref = private_registry.push_test_image(f"private-{uuid.uuid4().hex[:8]}:1")
    login = {"username": private_registry.username, "password": private_registry.password}
    alice = home_for(homes, ALICE, state)
    bob = home_for(homes, BOB, state)
    hers, his = alice.start(), bob.start()
    try:
        code, pull = await hers.answer(
            "POST", "gpu-containers", "pulls", body={"image": ref, "auth": login}
        )
        assert code == 202, pull
        for _ in range(600):
            code, pull = await hers.answer("GET", "gpu-containers", "pulls", pull["id"])
            if pull["state"] not in ("queued", "pulling"):
                break
            await asyncio.sleep(0.1)
        assert pull["state"] == "done", pull
        name = kernel_name(ref)
        for _ in range(600):  # her server lists the new image once the engine says it came
            if name in (await hers.answer("GET", "api", "kernelspecs"))[1]["kernelspecs"]:
                break
            await asyncio.sleep(0.1)
        assert name in (await hers.answer("GET", "api", "kernelspecs"))[1]["kernelspecs"]
        assert name not in (await his.answer("GET", "api", "kernelspecs"))[1]["kernelspecs"]
        rows = (await his.answer("GET", "gpu-containers", "images"))[1]["images"]
        assert not any(row["reference"] == ref and row["pulled"] for row in rows)
        code, refusal = await start(his, name)
        assert code == 404, refusal  # no such kernel spec for him
        code, kernel = await start(hers, name)
        assert code == 201, kernel
        await stop_kernels(hers)
    finally:
        private_registry.remove_local(ref)


async def test_a_pull_never_replaces_a_locally_built_image(
    homes: list[UserHome],
    state: Path,
    private_registry: PrivateRegistry,
    docker_client: docker.DockerClient,
) -> None:
    name = f"local-{uuid.uuid4().hex[:8]}:1"
    remote = private_registry.push_test_image(name)  # the registry has an image by that name
    local = docker_client.images.get(DEBIAN_IMAGE)
    local.tag(remote)  # and this host built one under it
    alice = home_for(homes, ALICE, state)
    server = alice.start()
    try:
        code, refusal = await server.answer(
            "POST", "gpu-containers", "pulls", body={"image": remote}
        )
        assert code == 409 and "built on this host" in refusal["message"], refusal
        assert docker_client.images.get(remote).id == local.id
    finally:
        private_registry.remove_local(remote)
    off = home_for(homes, ALICE, state, ContainerPolicy={"allow_user_pulls": False}).start()
    code, refusal = await off.answer("POST", "gpu-containers", "pulls", body={"image": remote})
    assert code == 403 and "ask an administrator to pull the image for you" in refusal["message"]
    # Alice is no administrator: the option that turned pulls off is not hers to read.
    assert "setting" not in refusal and "ContainerPolicy." not in refusal["message"], refusal


# ---------------------------------------------------------------------- 10 to 14: the low ones

DENY_KERNEL_WRITES = """
from jupyter_server.auth.authorizer import Authorizer

class NoKernelWrites(Authorizer):
    def is_authorized(self, handler, user, action, resource):
        return not (action == "write" and resource in ("kernels", "sessions"))

c.ServerApp.authorizer_class = NoKernelWrites
"""


async def test_the_notebook_endpoint_asks_the_authorizer_for_kernels_and_sessions(
    homes: list[UserHome], state: Path
) -> None:
    alice = home_for(homes, ALICE, state)
    (alice.path / "config" / "jupyter_server_config.py").write_text(DENY_KERNEL_WRITES)
    server = alice.start()
    body = {"path": "nb.ipynb", "kernel_name": CPU_SPEC}
    code, refusal = await server.answer("POST", "gpu-containers", "notebooks", "kernel", body=body)
    assert code == 403 and "does not let you write kernels" in refusal["message"], refusal
    assert (await server.answer("GET", "api", "kernels"))[1] == []
    code, _ = await server.answer(
        "POST", "gpu-containers", "notebooks", "kernel", body={**body, "start": False}
    )
    assert code == 200  # storing a request starts nothing


async def test_a_refusal_names_no_other_user_and_no_unreachable_kernel_id(
    homes: list[UserHome], state: Path, docker_client: docker.DockerClient
) -> None:
    one_gpu = {"GPUInventory": {"static_gpus": HOST_GPUS[:1]}}
    hers = home_for(homes, ALICE, state, **one_gpu).start()
    his = home_for(homes, BOB, state, **one_gpu).start()
    assert (await start(hers, GPU_SPEC))[0] == 201
    code, refusal = await start(his, GPU_SPEC)
    assert code == 409 and "held by a kernel of another user since" in refusal["message"]
    assert ALICE not in refusal["message"], refusal
    named = home_for(homes, BOB, state, GPUVisibility={"show_other_users": True}, **one_gpu)
    code, refusal = await start(named.start(), GPU_SPEC)
    assert code == 409 and f"held by a kernel of {ALICE} since" in refusal["message"]
    # A kernel id jupyter_server's routes cannot reach could never be shut down: refused.
    code, refusal = await start(his, CPU_SPEC, kernel_id="gpu.hog")
    assert code == 400 and "cannot be a kernel id" in refusal["message"]
    assert not docker_client.containers.list(
        ignore_removed=True, all=True, filters={"label": f"{L.KERNEL_ID}=gpu.hog"}
    )
    await stop_kernels(hers)


async def test_pulls_wait_in_a_bounded_queue_without_threads(
    homes: list[UserHome], state: Path
) -> None:
    """No pull may run (max_concurrent 0): every pull waits, as many as max_queued; one more is
    a 429; a waiting pull is cancelled at once; progress streams are capped. (Before, each pull
    took a thread and waited in it for a slot: 60 pulls, 68 threads, and a cancel hung.)"""
    alice = home_for(
        homes,
        ALICE,
        state,
        PullManager={"max_concurrent": 0, "max_queued": 3, "max_watchers": 2},
    )
    server = alice.start()
    pulls = []
    for i in range(3):
        code, pull = await server.answer(
            "POST", "gpu-containers", "pulls", body={"image": f"127.0.0.1:1/jgc-queue/n{i}:1"}
        )
        assert code == 202 and pull["state"] == "queued", pull
        pulls.append(pull)
    code, refusal = await server.answer(
        "POST", "gpu-containers", "pulls", body={"image": "127.0.0.1:1/jgc-queue/n9:1"}
    )
    assert code == 429 and "as many as it takes. Try again when" in refusal["message"], refusal
    code, cancelled = await server.answer("DELETE", "gpu-containers", "pulls", pulls[0]["id"])
    assert code == 200 and cancelled["state"] == "cancelled"

    streams = []
    for pull in pulls[1:]:
        streams.append(await server.open_stream(f"gpu-containers/pulls/{pull['id']}/events"))
    code, refusal = await server.answer("GET", "gpu-containers", "pulls", pulls[1]["id"], "events")
    assert code == 429 and "as many as it serves. Close one" in refusal["message"], refusal
    for stream in streams:
        stream.close()


async def test_every_error_under_the_extension_is_json(homes: list[UserHome], state: Path) -> None:
    server = home_for(homes, ALICE, state).start()
    response = await server.fetch("GET", "gpu-containers", "nothing-here", raise_error=False)
    assert response.code == 404
    assert response.headers["Content-Type"].startswith("application/json")
    assert "no such GPU Containers endpoint" in json.loads(response.body)["message"]
    response = await server.fetch("TRACE", "gpu-containers", "gpus", raise_error=False)
    assert response.code == 405 and response.headers["Allow"] == "GET"
    assert json.loads(response.body)["message"]
    response = await server.fetch("PATCH", "gpu-containers", "pulls", raise_error=False)
    assert response.code == 405 and response.headers["Allow"] == "GET, POST"
    # Without a login, any path there is a 403, as every route is (test_rest_security.py).
    response = await AsyncHTTPClient().fetch(
        f"{server.url}/gpu-containers/nothing-here", raise_error=False
    )
    assert response.code == 403 and json.loads(response.body)["message"]
