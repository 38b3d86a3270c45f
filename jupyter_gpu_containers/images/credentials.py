"""Registry credentials: from the administrator's config, or from a user, in memory only.

Seed 001's users type ``docker login nvcr.io`` with ``$oauthtoken``, which writes the token to
``~/.docker/config.json``. This project never writes a credential anywhere: admin credentials come
from config (or a file the admin keeps), a user's own credentials live in this server's memory
until it stops, and both reach the engine only as the ``auth_config`` of one pull. No endpoint
returns them and no log line contains them (see :class:`Credential`'s ``repr``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traitlets import Dict, Int, validate
from traitlets.config import LoggingConfigurable

from ..base.errors import ContainerKernelError


@dataclass(frozen=True)
class Credential:
    registry: str
    username: str
    # repr=False: a Credential printed in a log or a traceback never shows the secret.
    password: str = field(repr=False)
    source: str = "user"  # "admin" or "user"

    def auth_config(self) -> dict[str, str]:
        """docker-py's ``auth_config`` for one pull."""
        return {"username": self.username, "password": self.password}

    def describe(self) -> dict[str, str]:
        """What an endpoint may say about it: never the secret."""
        return {"registry": self.registry, "username": self.username, "source": self.source}


class RegistryCredentials(LoggingConfigurable):
    """Credentials per registry: the admin's, and each user's own for this server's lifetime."""

    registry_auth = Dict(
        config=True,
        help="""Credentials per registry host for pulls, e.g.
        {"nvcr.io": {"username": "$oauthtoken", "password_file": "/etc/jupyter/ngc-key"}}.
        Give "password" inline or "password_file" (read at each pull, so the secret stays out of
        the config file). Keys are registry hosts as in image references ("nvcr.io",
        "127.0.0.1:5000", "docker.io"). Never logged, never returned by any endpoint.""",
    )

    max_per_user = Int(
        16,
        config=True,
        help="""Registries one user may keep a login for on this server (in its memory, for
        its lifetime): one more is refused with 429 and a sentence until they remove one.""",
    )

    @validate("registry_auth")
    def _check_registry_auth(self, proposal: Any) -> dict[str, Any]:
        value = proposal["value"]
        for registry, entry in value.items():
            if not isinstance(entry, dict) or "username" not in entry:
                raise ValueError(
                    f"RegistryCredentials.registry_auth[{registry!r}] needs a username and a "
                    "password or password_file."
                )
            if "password" not in entry and "password_file" not in entry:
                raise ValueError(
                    f"RegistryCredentials.registry_auth[{registry!r}] needs a password or "
                    "password_file."
                )
        return dict(value)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # (whose, registry) -> the credential: whose is a kernel service's user name, "" for
        # the one user of a user's own server.
        self._user: dict[tuple[str, str], Credential] = {}
        self._lock = threading.Lock()

    def set_user(self, registry: str, username: str, password: str, whose: str = "") -> Credential:
        """Keep ``whose``'s login for ``registry`` (replacing theirs for it); refused with 429
        and a sentence past ``max_per_user`` registries of theirs."""
        credential = Credential(registry, username, password, "user")
        with self._lock:
            mine = sum(1 for (w, r) in self._user if w == whose and r != registry)
            if mine >= max(0, self.max_per_user):
                raise ContainerKernelError(
                    f"You have logins for {mine} registries on this server, as many as it keeps "
                    "for one user: remove one you no longer need before you add another.",
                    status=429,
                    setting="RegistryCredentials.max_per_user",
                )
            self._user[(whose, registry)] = credential
        return credential

    def forget_user(self, registry: str, whose: str = "") -> bool:
        with self._lock:
            return self._user.pop((whose, registry), None) is not None

    def user_credential(self, registry: str, whose: str = "") -> Credential | None:
        """A user's own credential for ``registry``, if they gave one (memory only). ``whose``:
        a kernel service's user ("": the server's own user)."""
        with self._lock:
            return self._user.get((whose, registry))

    def for_registry(self, registry: str, whose: str = "") -> Credential | None:
        """A user's own credential wins over the admin's for that user's pulls. Blocking when
        the admin's comes from a password_file: call from a worker thread."""
        with self._lock:
            own = self._user.get((whose, registry))
        if own is not None:
            return own
        return self.admin_credential(registry)

    def admin_credential(self, registry: str) -> Credential | None:
        """The administrator's credential for ``registry`` alone (a scheduled pre-pull's:
        prepull.py), never a user's. Blocking with a password_file: a worker thread."""
        entry = self.registry_auth.get(registry)
        if entry is None:
            return None
        password = entry.get("password")
        if password is None:
            path = Path(entry["password_file"])
            try:
                password = path.read_text().strip()
            except OSError as e:
                raise ContainerKernelError(
                    f"The password file the administrator gave this server for {registry} cannot "
                    f"be read: {e.strerror}. Ask an administrator to check it.",
                    setting="RegistryCredentials.registry_auth",
                ) from e
        return Credential(registry, str(entry["username"]), str(password), "admin")

    def listing(self, whose: str = "") -> list[dict[str, str]]:
        """Which registries have credentials for ``whose``, and whose; no secrets (and not the
        admin's usernames either: an account name is half a login)."""
        with self._lock:
            own = {r: c for (w, r), c in self._user.items() if w == whose}
        rows = [c.describe() for c in own.values()]
        rows += [
            {"registry": r, "username": "", "source": "admin"}
            for r, e in self.registry_auth.items()
            if r not in own
        ]
        return sorted(rows, key=lambda row: row["registry"])


def scrub(text: str, secrets: list[str]) -> str:
    """Remove any secret from text bound for a log or a response (engine errors quote what they
    were sent in rare cases; this is the last line of defence, not the first)."""
    for secret in secrets:
        if len(secret) >= 3:
            text = text.replace(secret, "••••")
    return text
