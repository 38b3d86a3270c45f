"""``/gpu-containers/registries``: a user's own registry logins, kept in this server's memory
only and never returned.
"""

from __future__ import annotations

import json
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..base.references import BadReference, parse_reference
from ..images.credentials import Credential
from .base import GPUContainersHandler, json_body

# What a login may be: a host name's length, and room for a cloud's JSON key as a password.
MAX_REGISTRY = 255
MAX_USERNAME = 256
MAX_PASSWORD = 16 * 1024


class RegistriesHandler(GPUContainersHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        store = self.services.credentials
        self.finish(json.dumps({"registries": store.listing(self.whose)}))


class RegistryCredentialsHandler(GPUContainersHandler):
    """A user's own login for one registry, in this server's memory only."""

    @web.authenticated
    @authorized
    async def put(self, registry: str) -> None:
        credential = credential_from(json_body(self), registry=registry)
        self.services.credentials.set_user(
            credential.registry, credential.username, credential.password, self.whose
        )
        self.set_status(204)
        self.finish()

    @web.authenticated
    @authorized
    async def delete(self, registry: str) -> None:
        if not self.services.credentials.forget_user(registry, self.whose):
            raise web.HTTPError(404, f"You have no credentials for {registry} on this server.")
        self.set_status(204)
        self.finish()


def registry_of_image(image: str) -> str:
    """The registry an image reference names; 400 with the parser's sentence for a bad one."""
    try:
        return parse_reference(image).registry
    except BadReference as e:
        raise web.HTTPError(400, str(e)) from e


def credential_from(body: Any, *, registry: str) -> Credential:
    """A registry login for ``registry`` from a request's JSON body; 400 with a sentence for a
    malformed one."""
    if not isinstance(body, dict):
        raise web.HTTPError(400, 'Give {"username": "…", "password": "…"}.')
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not username or not isinstance(password, str):
        raise web.HTTPError(400, 'Give {"username": "…", "password": "…"} (both strings).')
    if len(username) > MAX_USERNAME or len(password) > MAX_PASSWORD:
        raise web.HTTPError(
            400,
            f"A registry login is at most {MAX_USERNAME} characters of username and "
            f"{MAX_PASSWORD} of password (a service account's JSON key fits).",
        )
    if (
        not registry
        or len(registry) > MAX_REGISTRY
        or "/" in registry
        or any(ch.isspace() for ch in registry)
    ):
        raise web.HTTPError(400, f"{registry[:100]!r} is not a registry host (e.g. nvcr.io).")
    return Credential(registry, username, password, "user")
