"""A real JupyterHub for tests: the Hub (PyPI ``jupyterhub``) with its real proxy (npm
``configurable-http-proxy``), on loopback only, run as root as an administrator runs it.

Users' servers are spawned by the stock LocalProcessSpawner as the real system accounts (their
homes exist), running ``jupyterhub-singleuser`` from the test venv. Nobody logs in: tests drive
the Hub's REST API with an admin service's token (start and stop servers, make users' tokens).
The Hub knows the kernel service as the JupyterHub service ``gpu-containers`` (an external
service: the test starts it, at the URL it gives), with the configuration the admin guide
documents:

- users granted the service get ``access:services!service=gpu-containers`` from a role, and
- servers' own tokens (JUPYTERHUB_API_TOKEN, which a user's server sends as its gateway token)
  ask for it in ``c.Spawner.server_token_scopes``: by default they hold only the ``server``
  role's ``users:activity!user`` and ``access:servers!server``.

Everything lives in a temporary directory (database, cookie secret, proxy token, logs, each
user's Jupyter runtime/config/data directories: nothing is written to users' homes but what their
server writes there itself). Processes are stopped by pid: the Hub, then whatever of its proxy and
users' servers outlived it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hostusers import ids_of
from servers import VENV_BIN, free_port

REPO = Path(__file__).resolve().parent.parent
PROXY_BIN = REPO / "node_modules" / ".bin" / "configurable-http-proxy"
SERVICE_NAME = "gpu-containers"
ADMIN_SERVICE = "jgc-test-admin"
# What a user's server needs in its own token to use the kernel service, on top of the default
# `server` role's scopes (which a server token must keep: activity reports, access to itself).
SERVER_TOKEN_SCOPES = [
    "users:activity!user",
    "access:servers!server",
    f"access:services!service={SERVICE_NAME}",
]

STUDENT_A = os.environ.get("JGC_TEST_STUDENT_A", "")
STUDENT_B = os.environ.get("JGC_TEST_STUDENT_B", "")

needs_students = pytest.mark.skipif(
    os.getuid() != 0 or not (STUDENT_A and STUDENT_B),
    reason="needs root and the student accounts JGC_TEST_STUDENT_A / JGC_TEST_STUDENT_B "
    "(scripts/test.sh creates them)",
)

# Generous: on a 2-core machine a Hub's start, and a user server's, can take tens of seconds.
START_TIMEOUT = 180.0
STOP_TIMEOUT = 60.0


def hub_config(hub: Hub) -> str:
    """The Hub's jupyterhub_config.py: every value below is what the admin guide documents,
    plus the test's own ports, paths and admin service."""
    services: list[dict[str, Any]] = [
        {"name": SERVICE_NAME, "api_token": hub.service_token, "display": False},
        {"name": ADMIN_SERVICE, "api_token": hub.admin_token},
    ]
    if hub.service_url:
        services[0]["url"] = hub.service_url
    roles = [
        {
            # The users who may have container kernels.
            "name": "gpu-containers-users",
            "scopes": [f"access:services!service={SERVICE_NAME}"],
            "users": sorted(hub.service_users),
        },
        {
            # The tests' admin: start/stop servers, read their state (pid), make users' tokens.
            # It may use the kernel service too, so tests can show that a service's token is
            # refused there all the same (it names no account).
            "name": "jgc-test-admin",
            "scopes": [
                "admin:users",
                "admin:servers",
                "tokens",
                "read:hub",
                f"access:services!service={SERVICE_NAME}",
            ],
            "services": [ADMIN_SERVICE],
        },
    ]
    users_root = str(hub.users_root)
    return f"""\
import json

c = get_config()  # noqa: F821 - JupyterHub's config loader provides it

c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {hub.port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub.hub_port}
c.JupyterHub.db_url = {f"sqlite:///{hub.home / 'jupyterhub.sqlite'}"!r}
c.JupyterHub.cookie_secret_file = {str(hub.home / "jupyterhub_cookie_secret")!r}
c.JupyterHub.pid_file = {str(hub.home / "jupyterhub.pid")!r}
c.JupyterHub.cleanup_servers = True
c.JupyterHub.cleanup_proxy = True

c.ConfigurableHTTPProxy.command = [{str(PROXY_BIN)!r}]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{hub.proxy_api_port}"
c.ConfigurableHTTPProxy.auth_token = {hub.proxy_token!r}
c.ConfigurableHTTPProxy.pid_file = {str(hub.home / "proxy.pid")!r}

c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allowed_users = set({sorted(hub.users)!r})

c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = [{str(VENV_BIN / "jupyterhub-singleuser")!r}]
c.Spawner.args = {list(hub.server_args)!r}
c.Spawner.server_token_scopes = {hub.server_token_scopes!r}
c.Spawner.start_timeout = {int(START_TIMEOUT)}
c.Spawner.http_timeout = {int(START_TIMEOUT)}
c.Spawner.environment = json.loads({json.dumps(hub.spawner_env)!r})

USERS_ROOT = {users_root!r}


def per_user_jupyter_dirs(spawner):
    # Each user's Jupyter directories in the test's temporary tree, not in their home.
    base = USERS_ROOT + "/" + spawner.user.name
    spawner.environment.update(
        JUPYTER_CONFIG_DIR=base + "/config",
        JUPYTER_DATA_DIR=base + "/data",
        JUPYTER_RUNTIME_DIR=base + "/runtime",
        IPYTHONDIR=base + "/ipython",
        # jupyter-lsp asks npm where global modules are; npm logs that to its cache directory.
        npm_config_cache=base + "/npm",
    )


c.Spawner.pre_spawn_hook = per_user_jupyter_dirs

GATEWAY_URL = {hub.gateway_url!r}
if GATEWAY_URL:
    # Users' servers use the kernel service through Jupyter Server's gateway client, and
    # authenticate there with their own Hub token (the one in JUPYTERHUB_API_TOKEN).
    c.Spawner.environment["JUPYTER_GATEWAY_URL"] = GATEWAY_URL
    c.Spawner.environment["JUPYTER_GATEWAY_AUTH_TOKEN"] = lambda spawner: spawner.api_token

{hub.extra_config}

c.JupyterHub.services = json.loads({json.dumps(services)!r})
c.JupyterHub.load_roles = json.loads({json.dumps(roles)!r})
"""


class HubAPIError(AssertionError):
    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        super().__init__(f"{method} {path}: {status} {body[:500]}")
        self.status = status
        self.body = body


class Hub:
    """A JupyterHub with its proxy, users ``users``, the kernel service ``gpu-containers`` (at
    ``service_url``, if given) whose access role holds ``service_users`` (default: every user),
    ``spawner_env`` added to users' servers' environment (the gateway's URL, say), ``server_args``
    added to their command line, and ``server_token_scopes`` for their own tokens (default:
    SERVER_TOKEN_SCOPES, as the admin guide says; [] leaves the Hub's default). With
    ``gateway_url``, users' servers use the kernel service there as their gateway
    (JUPYTER_GATEWAY_URL), sending their own JUPYTERHUB_API_TOKEN as the gateway token
    (JUPYTER_GATEWAY_AUTH_TOKEN). ``extra_config``: Python lines appended to the Hub's
    configuration file."""

    def __init__(
        self,
        users: list[str],
        *,
        service_url: str = "",
        service_users: list[str] | None = None,
        spawner_env: dict[str, str] | None = None,
        server_args: list[str] | None = None,
        server_token_scopes: list[str] | None = None,
        gateway_url: str = "",
        extra_config: str = "",
    ) -> None:
        self.users = list(users)
        self.service_users = list(users if service_users is None else service_users)
        self.service_url = service_url
        self.spawner_env = dict(spawner_env or {})
        self.server_args = list(server_args or [])
        self.gateway_url = gateway_url
        self.extra_config = extra_config
        # None: what the admin guide says; [] would be the Hub's default (the `server` role).
        self.server_token_scopes = list(
            SERVER_TOKEN_SCOPES if server_token_scopes is None else server_token_scopes
        )
        self.home = Path(tempfile.mkdtemp(prefix="jgc-hub-", dir="/tmp"))  # 0700: the secrets
        # Users' Jupyter directories: a tree they can traverse, each owning their own.
        self.users_root = Path(tempfile.mkdtemp(prefix="jgc-hub-users-", dir="/tmp"))
        self.users_root.chmod(0o755)
        for user in self.users:
            uid, gid = ids_of(user)
            for sub in ("", "config", "data", "runtime", "ipython", "npm"):
                path = self.users_root / user / sub
                path.mkdir(mode=0o700, exist_ok=True)
                os.chown(path, uid, gid)
        self.port = free_port()
        self.hub_port = free_port()
        self.proxy_api_port = free_port()
        self.service_token = secrets.token_hex(32)
        self.admin_token = secrets.token_hex(32)
        self.proxy_token = secrets.token_hex(32)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.home / "hub.log"
        # pid -> start time of each user server this Hub spawned (so a reused pid is never
        # killed), and the proxy's.
        self._spawned: dict[int, str] = {}

    # ------------------------------------------------------------------ where things are

    @property
    def url(self) -> str:
        """The proxy's public URL (what browsers use)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """The Hub's API, as services reach it (HubIdentity.api_url)."""
        return f"http://127.0.0.1:{self.hub_port}/hub/api"

    def service_environment(self) -> dict[str, str]:
        """What a kernel service managed by this Hub would find in its environment."""
        return {
            "JUPYTERHUB_API_URL": self.api_url,
            "JUPYTERHUB_API_TOKEN": self.service_token,
            "JUPYTERHUB_SERVICE_NAME": SERVICE_NAME,
        }

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # ------------------------------------------------------------------ the process

    def start(self) -> None:
        config = self.home / "jupyterhub_config.py"
        config.write_text(hub_config(self))
        log = open(self.log_path, "ab")  # noqa: SIM115 - the process writes it; closed below
        env = {
            "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
        }
        self.process = subprocess.Popen(
            [str(VENV_BIN / "jupyterhub"), "-f", str(config)],
            cwd=self.home,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"JupyterHub exited at start:\n{self.output()[-6000:]}")
            # Through the proxy: the Hub answers there once its routes are in the proxy.
            if self._answers(f"{self.url}/hub/api/") and self._answers(f"{self.api_url}/"):
                self._remember(self._pid_in(self.home / "proxy.pid"))
                return
            time.sleep(0.2)
        raise AssertionError(f"JupyterHub did not become ready:\n{self.output()[-6000:]}")

    @staticmethod
    def _answers(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        """Stop the Hub (which stops its users' servers and its proxy), then whatever of them
        outlived it; by pid, all of it."""
        process = self.process
        if process is not None and process.poll() is None:
            # Users' servers first, through the API, while the Hub can still do it cleanly.
            for user in self.users:
                with contextlib.suppress(AssertionError, OSError):
                    self.stop_server(user)
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        for pid, started in list(self._spawned.items()):
            if _start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                if not _wait_gone(pid, started, 30):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    _wait_gone(pid, started, 10)
            del self._spawned[pid]

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)
        shutil.rmtree(self.users_root, ignore_errors=True)

    def _remember(self, pid: int | None) -> None:
        if pid is not None:
            started = _start_time(pid)
            if started is not None:
                self._spawned[pid] = started

    @staticmethod
    def _pid_in(path: Path) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text().strip())
        return None

    # ------------------------------------------------------------------ the REST API

    def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        """The Hub's REST API as the tests' admin service (or as ``token``'s owner)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.api_url}/{path.lstrip('/')}",
            data=data,
            method=method,
            headers={
                "Authorization": f"token {token or self.admin_token}",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as e:
            raise HubAPIError(e.code, method, path, e.read().decode(errors="replace")) from None
        return json.loads(text) if text else None

    def server_model(self, user: str) -> dict[str, Any] | None:
        model = self.api("GET", f"users/{user}")
        server = model.get("servers", {}).get("")
        return server if isinstance(server, dict) else None

    def start_server(self, user: str) -> int:
        """Start ``user``'s default server through the Hub and wait until the Hub says it is
        ready; its pid (the jupyterhub-singleuser process, running as the user)."""
        try:
            self.api("POST", f"users/{user}/server")
        except HubAPIError as e:
            if e.status != 400 or "already running" not in e.body:
                raise
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            server = self.server_model(user)
            if server is not None:
                self._remember(server.get("state", {}).get("pid"))
                if server.get("ready"):
                    return int(server["state"]["pid"])
                if not server.get("pending"):
                    raise AssertionError(
                        f"{user}'s server stopped while starting:\n{self.output()[-6000:]}"
                    )
            elif self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"JupyterHub exited:\n{self.output()[-6000:]}")
            time.sleep(0.2)
        raise AssertionError(f"{user}'s server did not become ready:\n{self.output()[-6000:]}")

    def stop_server(self, user: str) -> None:
        """Stop ``user``'s default server (if running) and wait until the Hub says it stopped."""
        if self.server_model(user) is None:
            return
        self.api("DELETE", f"users/{user}/server")
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.server_model(user) is None:
                return
            time.sleep(0.2)
        raise AssertionError(f"{user}'s server did not stop:\n{self.output()[-6000:]}")

    def new_token(self, user: str, scopes: list[str] | None = None) -> str:
        """A new API token of ``user``'s with ``scopes`` (None: the Hub's default for a token
        a user makes, their own permissions), expiring in an hour."""
        body: dict[str, Any] = {"note": "jupyter_gpu_containers test", "expires_in": 3600}
        if scopes is not None:
            body["scopes"] = scopes
        return str(self.api("POST", f"users/{user}/tokens", body)["token"])


def server_api_token(pid: int) -> str:
    """The JUPYTERHUB_API_TOKEN the Hub gave the server process ``pid`` (read as root)."""
    return process_environment(pid)["JUPYTERHUB_API_TOKEN"]


def process_environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {key.decode(): value.decode(errors="replace") for key, value in pairs}


def process_credentials(pid: int) -> tuple[int, int, list[int]]:
    """The real uid, real gid and supplementary groups of process ``pid``."""
    fields: dict[str, list[str]] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return int(fields["Uid"][0]), int(fields["Gid"][0]), [int(g) for g in fields["Groups"]]


DOCKER_SOCKET = "/var/run/docker.sock"
# Connects to the Unix socket argv[1]: prints "connected", or "denied <errno>".
CONNECT = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_UNIX)\n"
    "try:\n"
    "    s.connect(sys.argv[1])\n"
    "except PermissionError as e:\n"
    "    print('denied', e.errno)\n"
    "else:\n"
    "    print('connected')\n"
)


def connect_to_docker_socket(pid: int | None = None) -> str:
    """What connecting to the Docker socket gives with exactly process ``pid``'s credentials
    (its uid, gid and supplementary groups, read from /proc; None: this process's own):
    "connected", or "denied 13" (EACCES)."""
    import sys

    command = [sys.executable, "-c", CONNECT, DOCKER_SOCKET]
    if pid is not None:
        uid, gid, groups = process_credentials(pid)
        groups_option = [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
        command = ["setpriv", f"--reuid={uid}", f"--regid={gid}", *groups_option, *command]
    tried = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        timeout=60,
    )
    assert tried.returncode == 0, tried.stderr
    return tried.stdout.strip()


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, ended but not yet reaped by its parent, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/<pid>/stat): with the pid, it names one
    process, never a later one that reused the pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None  # a zombie has ended; only its parent's wait remains
    return fields[19]


def _wait_gone(pid: int, started: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _start_time(pid) != started:
            return True
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it, if it is ours
        time.sleep(0.1)
    return _start_time(pid) != started


@contextlib.contextmanager
def running_hub(users: list[str], **options: Any) -> Iterator[Hub]:
    """A started Hub (see :class:`Hub` for ``options``), stopped and removed afterwards, the test
    failed or not."""
    hub = Hub(users, **options)
    try:
        hub.start()
        yield hub
    finally:
        hub.close()
