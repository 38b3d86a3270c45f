"""Who a request comes from, under JupyterHub: the kernel service checks a token with the Hub.

Under JupyterHub the kernel service (``jupyter gpu-containers serve``) is a JupyterHub service,
named ``gpu-containers`` by default. Each user's Jupyter server sends its own API token (the
``JUPYTERHUB_API_TOKEN`` the Hub gave it) as the gateway token; the service asks the Hub whose token
it is with JupyterHub's own client (:class:`jupyterhub.services.auth.HubAuth`, its cache
included) and accepts it only when

- the token is a user's (a service's token names no account), and
- its scopes give access to this service: ``access:services!service=<name>`` (or the unfiltered
  ``access:services``), as JupyterHub defines them.

A single-user server's token does not have that scope by default (its default scopes are the
``server`` role's: ``users:activity!user`` and ``access:servers!server=<user>/<server>``). The
Hub's administrator grants it to the users who may have container kernels, and asks for it in
the servers' tokens; see docs (the admin guide) and :class:`HubIdentity`'s help::

    c.JupyterHub.load_roles = [{
        "name": "gpu-containers-users",
        "scopes": ["access:services!service=gpu-containers"],
        "groups": ["gpu-users"],   # or "users": [...]
    }]
    c.Spawner.server_token_scopes = [
        "users:activity!user",
        "access:servers!server",
        "access:services!service=gpu-containers",
    ]

A Hub that cannot be reached (or answers with an error) is :class:`HubUnavailable` with a
sentence (the service answers 503 with it), never a stack trace. Nothing outside this module
imports ``jupyterhub``: users' servers do not need it (``pip install
'jupyter_gpu_containers[hub]'`` installs it where the service runs).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any
from urllib.parse import urlsplit

from tornado.web import HTTPError
from traitlets import Float, TraitError, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from ..base.errors import ContainerKernelError

DEFAULT_SERVICE_NAME = "gpu-containers"
# JupyterHub's own default for a service's HubAuth.api_url.
DEFAULT_API_URL = "http://127.0.0.1:8081/hub/api"


class HubUnavailable(ContainerKernelError):
    """JupyterHub did not answer: nobody's token can be checked until it does."""

    status = 503
    reason_phrase = "JupyterHub unavailable"


class HubNotConfigured(ContainerKernelError):
    """The service lacks what it needs to ask the Hub: the jupyterhub package."""

    status = 503
    reason_phrase = "JupyterHub authentication not configured"


def access_scope(service_name: str) -> str:
    """The scope, as JupyterHub writes it, that gives access to the service ``service_name``."""
    return f"access:services!service={service_name}"


class HubIdentity(LoggingConfigurable):
    """The kernel service's check of a JupyterHub token: whose it is, and whether it may use this
    service. Managed by the Hub (a ``services`` entry with a ``command``), the service finds
    everything here in the environment the Hub gives it (JUPYTERHUB_API_URL,
    JUPYTERHUB_API_TOKEN, JUPYTERHUB_SERVICE_NAME); run by the administrator (an external
    service, e.g. under systemd), set the traits. Options of JupyterHub's client itself (TLS
    between the service and the Hub: HubAuth.certfile, HubAuth.keyfile, HubAuth.client_ca) are
    read from the same config as ``c.HubAuth.*``."""

    api_url = Unicode(
        config=True,
        help="""The Hub's API URL, as the service reaches it, e.g.
        "http://127.0.0.1:8081/hub/api". Default: $JUPYTERHUB_API_URL (set by the Hub for a
        service it manages), else JupyterHub's own default, http://127.0.0.1:8081/hub/api.""",
    )

    api_token = Unicode(
        config=True,
        help="""The service's own API token with the Hub: the "api_token" of its entry in the
        Hub's c.JupyterHub.services. Checking a user's token needs no scopes of the service's
        own (the Hub is asked with the user's token itself), but JupyterHub's client sends it in
        its other requests. Default: $JUPYTERHUB_API_TOKEN. Keep it out of world-readable
        files; it is never logged.""",
    )

    service_name = Unicode(
        config=True,
        help="""The service's name in the Hub's c.JupyterHub.services. A user's token is accepted
        only if its scopes include access:services!service=<this name> (or access:services).
        Default: $JUPYTERHUB_SERVICE_NAME, else "gpu-containers".""",
    )

    cache_max_age = Float(
        60.0,
        config=True,
        help="""Seconds the Hub's answer about a token is reused (JupyterHub's
        HubAuth.cache_max_age). Longer spares the Hub; shorter makes a stopped server's revoked
        token, or a scope taken away, stop working sooner.""",
    )

    request_timeout = Float(
        10.0,
        config=True,
        help="""Seconds to wait for the Hub's answer about a token before the request is refused
        as "JupyterHub unavailable" (503).""",
    )

    @default("api_url")
    def _default_api_url(self) -> str:
        return os.environ.get("JUPYTERHUB_API_URL") or DEFAULT_API_URL

    @default("api_token")
    def _default_api_token(self) -> str:
        return os.environ.get("JUPYTERHUB_API_TOKEN", "")

    @default("service_name")
    def _default_service_name(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_NAME") or DEFAULT_SERVICE_NAME

    @validate("api_url")
    def _valid_api_url(self, proposal: dict[str, str]) -> str:
        url: str = proposal["value"]
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise TraitError(
                f"HubIdentity.api_url must be the Hub's http(s) API URL, such as "
                f"{DEFAULT_API_URL}; it is {url!r}."
            )
        return url.rstrip("/")

    @validate("cache_max_age", "request_timeout")
    def _positive(self, proposal: dict[str, Any]) -> float:
        value = float(proposal["value"])
        if value <= 0:
            raise TraitError(f"HubIdentity.{proposal['trait'].name} must be more than 0 seconds.")
        return value

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Read the environment's values now, at the service's start, not at the first request.
        for name in ("api_url", "api_token", "service_name"):
            getattr(self, name)
        self._hub_auth: Any = None
        # Users whose refusal for want of the scope was logged: once each, not per request.
        self._warned: set[str] = set()
        # Whether the Hub's last answer about each user said they are its admin (admin_view.py).
        self._admins: dict[str, bool] = {}

    @property
    def required_scopes(self) -> set[str]:
        return {access_scope(self.service_name)}

    def check(self) -> None:
        """At the service's start: HubNotConfigured, with its sentence, if the jupyterhub
        package is missing (rather than at the first request)."""
        self._client()

    def _client(self) -> Any:
        """JupyterHub's client, built at first use (with the jupyterhub package's import)."""
        if self._hub_auth is None:
            try:
                from jupyterhub.services.auth import HubAuth
            except ImportError:
                raise HubNotConfigured(
                    "The kernel service is set to check JupyterHub tokens, but the jupyterhub "
                    "package is not installed where it runs: pip install "
                    "'jupyter_gpu_containers[hub]'."
                ) from None
            # Not HubAuth.instance(): a singleton would share its token and cache with anything
            # else in the process. parent=self: c.HubAuth.* (TLS to the Hub) applies.
            self._hub_auth = HubAuth(
                parent=self,
                api_url=self.api_url,
                api_token=self.api_token,
                access_scopes=self.required_scopes,
                cache_max_age=self.cache_max_age,
            )
        return self._hub_auth

    async def username_for(self, token: str) -> str | None:
        """The name of the user whose token this is, if it may use this service; None if the Hub
        knows no such token, or the token is not a user's, or lacks the service's access scope.
        HubUnavailable when the Hub cannot answer."""
        if not token:
            return None
        hub_auth = self._client()
        model = await self._ask_hub(hub_auth, token)
        if not isinstance(model, dict):
            return None
        name = model.get("name")
        if model.get("kind") != "user" or not isinstance(name, str) or not name:
            # A service's or an anonymous token: it names no account to run kernels as.
            self.log.warning(
                "Refused a JupyterHub token of a %s (%r): only users' tokens can have kernels.",
                model.get("kind", "non-user"),
                name,
            )
            return None
        scopes = model.get("scopes")
        if not isinstance(scopes, list) or not hub_auth.check_scopes(
            hub_auth.access_scopes, {"scopes": scopes}
        ):
            if name not in self._warned:
                self._warned.add(name)
                self.log.warning(
                    "Refused %s's JupyterHub token: its scopes do not include %s. The Hub's "
                    "administrator grants it (a role) and asks for it in servers' tokens "
                    "(c.Spawner.server_token_scopes). (Logged once per user.)",
                    name,
                    access_scope(self.service_name),
                )
            return None
        self._admins[name] = model.get("admin") is True
        return name

    def is_admin(self, name: str) -> bool:
        """Whether JupyterHub said ``name`` is one of its admins when it last checked their
        token (their user model's "admin")."""
        return self._admins.get(name, False)

    async def _ask_hub(self, hub_auth: Any, token: str) -> Any:
        try:
            return await asyncio.wait_for(
                hub_auth.user_for_token(token, sync=False), timeout=self.request_timeout
            )
        except asyncio.TimeoutError:
            raise HubUnavailable(
                f"JupyterHub did not answer within {self.request_timeout:g} seconds at "
                f"{self.api_url}, so the kernel service cannot check who you are. Try again in a "
                "moment; if it persists, an administrator should check that the Hub is running."
            ) from None
        except HTTPError as e:
            message = e.log_message or ""
            if message.startswith("Failed to connect"):
                sentence = (
                    f"The kernel service cannot reach JupyterHub at {self.api_url}, so it cannot "
                    "check who you are. Try again in a moment; if it persists, an administrator "
                    "should check that the Hub is running."
                )
            else:
                sentence = (
                    f"JupyterHub at {self.api_url} could not check a token ({message or e}). Try "
                    "again in a moment; if it persists, an administrator should read the Hub's log."
                )
            self.log.warning("%s", sentence)
            raise HubUnavailable(sentence) from None

    async def close(self) -> None:
        """Release the connections JupyterHub's client keeps open (on the running loop)."""
        self._hub_auth = None
        try:
            from jupyterhub.httpclient import JupyterHubHTTPClient
        except ImportError:
            return
        await JupyterHubHTTPClient.loop_instance().close()
