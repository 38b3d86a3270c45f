"""The kernel service's check of JupyterHub tokens (hubauth.HubIdentity), against a real Hub.

A real JupyterHub with its real proxy (tests/hub.py) spawns the students' servers as their own
accounts, outside the docker group. The token each server holds (read from the process itself)
is what a user's server sends the kernel service; HubIdentity maps it to the user's name only
when the Hub says it is that user's and its scopes give access to the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hub import (
    CONNECT,
    DOCKER_SOCKET,
    SERVICE_NAME,
    STUDENT_A,
    STUDENT_B,
    Hub,
    connect_to_docker_socket,
    needs_students,
    process_credentials,
    process_environment,
    running_hub,
    server_api_token,
)
from servers import free_port
from traitlets import TraitError

from jupyter_gpu_containers.base.errors import ContainerKernelError
from jupyter_gpu_containers.service.hubauth import HubIdentity, HubNotConfigured, HubUnavailable


@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    """Both students are the Hub's users; only student A is granted the kernel service. Their
    servers are configured to use it as their gateway (at an address where nothing listens:
    these tests check tokens, not kernels)."""
    with running_hub(
        [STUDENT_A, STUDENT_B],
        service_users=[STUDENT_A],
        gateway_url=f"http://127.0.0.1:{free_port()}",
    ) as hub:
        yield hub


@pytest.fixture(scope="module")
def servers(hub: Hub) -> dict[str, int]:
    """Each student's server, started through the Hub's API: its pid."""
    return {user: hub.start_server(user) for user in (STUDENT_A, STUDENT_B)}


@contextlib.asynccontextmanager
async def identity_for(hub: Hub, **traits: object) -> AsyncIterator[HubIdentity]:
    """HubIdentity as a service the Hub manages finds it: from the environment it is given."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in hub.service_environment().items():
            mp.setenv(key, value)
        identity = HubIdentity(**traits)
    try:
        yield identity
    finally:
        await identity.close()


@needs_students
async def test_a_students_own_server_token_is_their_name(hub: Hub, servers: dict[str, int]) -> None:
    pid = servers[STUDENT_A]
    uid, gid, _ = process_credentials(pid)
    assert (uid, gid) == (pwd.getpwnam(STUDENT_A).pw_uid, pwd.getpwnam(STUDENT_A).pw_gid)
    token = server_api_token(pid)
    # What the server sends its gateway, the kernel service: its own Hub token.
    assert process_environment(pid)["JUPYTER_GATEWAY_AUTH_TOKEN"] == token
    async with identity_for(hub) as identity:
        assert identity.service_name == SERVICE_NAME
        assert identity.api_url == hub.api_url
        assert await identity.username_for(token) == STUDENT_A
        # Asked again: the same answer (from JupyterHub's cache).
        assert await identity.username_for(token) == STUDENT_A


@needs_students
async def test_an_external_service_is_configured_by_its_traits(
    hub: Hub, servers: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in hub.service_environment():
        monkeypatch.delenv(key, raising=False)
    identity = HubIdentity(
        api_url=hub.api_url + "/", api_token=hub.service_token, service_name=SERVICE_NAME
    )
    try:
        assert identity.api_url == hub.api_url
        assert await identity.username_for(server_api_token(servers[STUDENT_A])) == STUDENT_A
        # Another service's name: the student's token gives no access to it.
        other = HubIdentity(api_url=hub.api_url, service_name="another-service")
        assert await other.username_for(server_api_token(servers[STUDENT_A])) is None
        await other.close()
    finally:
        await identity.close()


@needs_students
async def test_tokens_without_access_to_the_service_are_refused(
    hub: Hub, servers: dict[str, int]
) -> None:
    # Student B was not granted the service: the Hub gives B's server no access scope, though
    # c.Spawner.server_token_scopes asks for it (a token holds only what its owner holds).
    b_token = server_api_token(servers[STUDENT_B])
    assert (
        f"access:services!service={SERVICE_NAME}"
        not in hub.api("GET", "user", token=b_token)["scopes"]
    )
    # A token of A's that does not carry the scope, though A may use the service.
    a_narrow = hub.new_token(STUDENT_A, scopes=[f"read:users:name!user={STUDENT_A}"])
    async with identity_for(hub) as identity:
        assert await identity.username_for(b_token) is None
        assert await identity.username_for(a_narrow) is None
        # The same account, with the scope: accepted (the refusals above are the scope's).
        a_wide = hub.new_token(STUDENT_A, scopes=[f"access:services!service={SERVICE_NAME}"])
        assert await identity.username_for(a_wide) == STUDENT_A


@needs_students
async def test_random_and_service_tokens_are_refused(hub: Hub) -> None:
    async with identity_for(hub) as identity:
        assert await identity.username_for(secrets.token_hex(32)) is None
        assert await identity.username_for("") is None
        # The admin service's token has access to the service, but names no account.
        scopes = hub.api("GET", "user")["scopes"]
        assert f"access:services!service={SERVICE_NAME}" in scopes
        assert await identity.username_for(hub.admin_token) is None
        # The kernel service's own token neither.
        assert await identity.username_for(hub.service_token) is None


@needs_students
async def test_a_stopped_hub_is_a_sentence(jupyterhub_factory: Any) -> None:
    hub = jupyterhub_factory([STUDENT_A])
    known = hub.new_token(STUDENT_A, scopes=[f"access:services!service={SERVICE_NAME}"])
    unseen = hub.new_token(STUDENT_A, scopes=[f"access:services!service={SERVICE_NAME}"])
    async with identity_for(hub) as identity:
        assert await identity.username_for(known) == STUDENT_A
        hub.stop()
        # An answer the Hub gave stays good for HubIdentity.cache_max_age.
        assert await identity.username_for(known) == STUDENT_A
        with pytest.raises(HubUnavailable) as raised:
            await identity.username_for(unseen)
    error = raised.value
    assert isinstance(error, ContainerKernelError)
    assert error.status == 503
    assert str(error) == (
        f"The kernel service cannot reach JupyterHub at {hub.api_url}, so it cannot check who "
        "you are. Try again in a moment; if it persists, an administrator should check that "
        "the Hub is running."
    )


async def test_a_hub_that_does_not_answer_in_time_is_a_sentence() -> None:
    # A listening socket that never answers: the Hub hung, say.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hub/api"
        identity = HubIdentity(api_url=url, request_timeout=0.5)
        try:
            with pytest.raises(HubUnavailable, match=r"did not answer within 0\.5 seconds"):
                await identity.username_for(secrets.token_hex(32))
        finally:
            await identity.close()


def test_a_missing_jupyterhub_package_is_a_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    # As on a host where the service was installed without the [hub] extra.
    monkeypatch.setitem(sys.modules, "jupyterhub.services.auth", None)
    identity = HubIdentity(api_url="http://127.0.0.1:8081/hub/api")
    with pytest.raises(HubNotConfigured, match=r"pip install 'jupyter_gpu_containers\[hub\]'"):
        identity.check()


def test_bad_traits_are_refused_with_sentences() -> None:
    with pytest.raises(TraitError, match="must be the Hub's http"):
        HubIdentity(api_url="127.0.0.1:8081/hub/api")
    with pytest.raises(TraitError, match="must be more than 0 seconds"):
        HubIdentity(cache_max_age=0)


@needs_students
def test_students_servers_cannot_open_the_docker_socket(servers: dict[str, int]) -> None:
    docker_gid = grp.getgrnam("docker").gr_gid
    # The control: the socket is there, and root's process can connect to it.
    assert connect_to_docker_socket() == "connected"
    for user, pid in servers.items():
        uid, gid, groups = process_credentials(pid)
        assert uid == pwd.getpwnam(user).pw_uid
        assert docker_gid not in groups and gid != docker_gid, (user, groups)
        # Exactly the server process's credentials: its uid, gid and supplementary groups.
        assert connect_to_docker_socket(pid) == "denied 13", user
        # And as the account, the way an administrator would try it.
        as_account = subprocess.run(
            ["runuser", "-u", user, "--", sys.executable, "-c", CONNECT, DOCKER_SOCKET],
            capture_output=True,
            text=True,
            cwd="/",
            timeout=60,
        )
        assert as_account.stdout.strip() == "denied 13", (user, as_account.stderr)


def test_nothing_but_hubauth_imports_jupyterhub() -> None:
    """Users' servers do not need the jupyterhub package: only service/hubauth.py may import it."""
    from test_architecture import MODULES, imports

    assert sorted(m for m in MODULES if "jupyterhub" in imports(m)[1]) == ["service.hubauth"]


@needs_students
async def test_concurrent_checks_all_get_answers(hub: Hub, servers: dict[str, int]) -> None:
    """Many requests at once (a classroom opening its notebooks) each get the Hub's answer."""
    tokens = [hub.new_token(STUDENT_A, scopes=[f"access:services!service={SERVICE_NAME}"])]
    tokens.append(server_api_token(servers[STUDENT_A]))
    tokens.append(server_api_token(servers[STUDENT_B]))
    async with identity_for(hub) as identity:
        answers = await asyncio.gather(*(identity.username_for(t) for t in tokens * 10))
    assert answers == [STUDENT_A, STUDENT_A, None] * 10


@needs_students
def test_a_killed_hub_leaves_no_process_behind() -> None:
    """The helper's own promise: its Hub killed with -9 (its proxy and users' servers orphaned),
    stopping it still ends them, by pid."""
    with running_hub([STUDENT_A]) as hub:
        server = hub.start_server(STUDENT_A)
        proxy = int((hub.home / "proxy.pid").read_text())
        assert hub.process is not None
        os.kill(hub.process.pid, signal.SIGKILL)
        hub.process.wait(30)
        assert _alive(server) and _alive(proxy)
        hub.stop()
        assert not _alive(server) and not _alive(proxy)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
