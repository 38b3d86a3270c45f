"""Whose kernel this is, in a kernel service: the account a launch runs as, and its workspace.

In direct mode a kernel belongs to the server's own user (its uid, its root_dir). A kernel service
(``jupyter gpu-containers serve``, service.py) launches for many users: it authenticates each
request, and the launch runs with the :class:`KernelUser` the authenticated name resolves to
here as its launch request's user (kernel/launch_request.py). The provisioner keeps that user
for the kernel's whole life (restarts included), so nothing a client sends later decides whose
kernel it is.

A name resolves through the administrator's map first (``UserDirectory.accounts``), else the
system account database. Root and system accounts are never kernel users, and the workspace is
the administrator's template, resolved and checked: a directory the user owns.

Blocking (the account database, the file system): worker threads only.
"""

from __future__ import annotations

import os
import pwd
import re
import stat
from dataclasses import dataclass

from traitlets import Bool, Dict, Int, Unicode, validate
from traitlets.config import LoggingConfigurable

from ..base.errors import ContainerKernelError

# POSIX's portable user names, plus what JupyterHub's usernames commonly hold ('@', '.').
_USERNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}")
_IDS = re.compile(r"([0-9]+):([0-9]+)")


class UnknownUser(ContainerKernelError):
    """The authenticated name is no kernel user of this host."""

    status = 403
    reason_phrase = "Not a kernel user here"


@dataclass(frozen=True)
class KernelUser:
    """The account a kernel runs as, and the workspace it mounts."""

    username: str
    uid: int
    gid: int
    workspace: str  # resolved: a directory owned by uid
    # False: the workspace is a cluster's volume (UserDirectory.workspace_on_host), not a
    # directory of this host.
    on_host: bool = True


def check_username(name: object) -> str:
    if not isinstance(name, str) or not _USERNAME.fullmatch(name):
        raise UnknownUser(f"{str(name)[:80]!r} is not a user name this service accepts.")
    return name


class UserDirectory(LoggingConfigurable):
    """Who may have kernels on this service, as which uid:gid, with which workspace."""

    workspace_template = Unicode(
        "/home/{username}",
        config=True,
        help="""Each user's workspace: mounted read-write into their kernels at
        ContainerProvisioner.workspace_mount_path, and where notebooks' directories must lie.
        "{username}" is replaced by the user's name. It must resolve to a directory the user
        owns; anything else refuses the user's kernels with a sentence.""",
    )

    workspace_on_host = Bool(
        True,
        config=True,
        help="""Whether workspaces are directories of this host, which must exist and belong to
        their user. False where kernels' workspaces are volumes of a cluster
        (KubernetesBackend.workspace_volume): workspace_template then only names the path
        notebooks' directories are given under. The kernel service sets it False with
        ServiceApp.backend "kubernetes" unless it is configured.""",
    )

    accounts = Dict(
        value_trait=Unicode(),
        key_trait=Unicode(),
        config=True,
        help="""Users without a system account, or whose kernels run as other ids than their
        account's: {"username": "uid:gid"}. Looked up before the system account database.
        Root and uids below min_uid are refused here too.""",
    )

    min_uid = Int(
        1000,
        config=True,
        help="""The smallest uid a kernel may run as: system accounts (and root, always) never
        run kernels, whatever name a token maps to.""",
    )

    @validate("min_uid")
    def _min_uid_positive(self, proposal: dict[str, int]) -> int:
        if proposal["value"] < 1:
            raise ValueError("UserDirectory.min_uid must be 1 or more: root never runs kernels.")
        return proposal["value"]

    def resolve(self, username: str) -> KernelUser:
        """The kernel user ``username`` is, or UnknownUser with the reason. Blocking."""
        name = check_username(username)
        mapped = self.accounts.get(name)
        if mapped is not None:
            m = _IDS.fullmatch(mapped)
            if m is None:
                raise UnknownUser(
                    f"The administrator's map of accounts gives {name!r} the ids {mapped!r}, "
                    'which are not written as "uid:gid" (e.g. "2001:2001"): ask an '
                    "administrator to correct it.",
                    setting="UserDirectory.accounts",
                )
            uid, gid = int(m.group(1)), int(m.group(2))
        else:
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                raise UnknownUser(
                    f"There is no account {name!r} on this host, so it cannot have kernels here. "
                    "An administrator can map it to an account.",
                    setting="UserDirectory.accounts",
                ) from None
            uid, gid = entry.pw_uid, entry.pw_gid
        if uid < self.min_uid or gid == 0:
            raise UnknownUser(
                f"The account {name!r} (uid {uid}, gid {gid}) is a system account: its kernels "
                f"are refused (kernels run as uid {self.min_uid} or above, never as gid 0).",
                setting="UserDirectory.min_uid",
            )
        return KernelUser(name, uid, gid, self.workspace_of(name, uid), self.workspace_on_host)

    def workspace_of(self, username: str, uid: int) -> str:
        """The user's workspace, resolved; refused unless it is a directory ``uid`` owns."""
        template = self.workspace_template.replace("{username}", username)
        if not os.path.isabs(template):
            raise ContainerKernelError(
                f"The workspace this service gives {username!r} is {template!r}, not an absolute "
                "path: ask an administrator to correct where workspaces are.",
                setting="UserDirectory.workspace_template",
            )
        real = os.path.realpath(template)
        if not self.workspace_on_host:
            return real
        try:
            info = os.stat(real)
        except OSError:
            raise UnknownUser(
                f"The workspace of {username!r} ({template}) does not exist. An administrator "
                "must create it (owned by the user) before their kernels can start."
            ) from None
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
            raise UnknownUser(
                f"The workspace of {username!r} ({template}, which is {real}) is not a directory "
                "owned by that user, so it is not mounted into their kernels."
            )
        return real
