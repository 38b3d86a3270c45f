"""``/gpu-containers/packages``: the caller's own packages, one folder per image in their workspace
(host/user_packages.py): each folder's size, and its reset.

One measure or reset per user at a time (a second is answered 409): each walks up to
user_packages.MAX_ENTRIES entries of the user's workspace on a worker thread, and a kernel
service's users must not fill its threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..base.errors import PathRefused
from ..host import user_packages
from .base import GPUContainersHandler

# Where the server keeps who has a measure or reset under way (handlers live one request).
_BUSY_KEY = "gpu_containers_packages_busy"


class PackagesBase(GPUContainersHandler):
    """What both routes need: the caller's workspace, the images' names, one at a time."""

    def workspace(self) -> tuple[str, int, bool]:
        """The caller's workspace, uid, and whether the workspace is a directory of this host."""
        user = self.kernel_user
        if user is not None:
            return user.workspace, user.uid, user.on_host
        # On a user's own server: the workspace its kernels mount (the kernel manager's
        # root_dir, the server's; resolved off the event loop, where it is used) and the
        # server's user.
        return self.kernel_manager.root_dir, os.getuid(), True

    def image_names(self) -> dict[str, str]:
        """Folder key -> image reference, for the images this server offers or lists."""
        refs = {entry["image"] for entry in self.services.catalog.listed()}
        entries = getattr(self.kernel_spec_manager, "image_entries", None)
        if entries is not None:
            refs.update(ref for ref, _image in entries().values())
        return {user_packages.packages_key(ref): ref for ref in refs}

    @contextlib.contextmanager
    def one_at_a_time(self) -> Iterator[None]:
        """The caller's measure or reset; 409 while another of theirs is under way."""
        busy: set[str] = self.settings.setdefault(_BUSY_KEY, set())
        key = self.whose or str(os.getuid())
        if key in busy:
            raise web.HTTPError(
                409, "Your packages are being measured or reset already; try again in a moment."
            )
        busy.add(key)
        try:
            yield
        finally:
            busy.discard(key)


class PackagesHandler(PackagesBase):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        policy = self.services.policy
        workspace, uid, on_host = self.workspace()
        answer: dict[str, Any] = {
            "enabled": policy.user_packages,
            "dir": policy.user_packages_dir,
            "max_bytes": policy.user_packages_max_bytes,
            "measured": on_host,
            "folders": [],
            "message": "",
        }
        if not policy.user_packages:
            answer["message"] = (
                "Packages installed in a kernel are not kept on this server: the administrator "
                "turned that off."
            )
            if self.reads_settings:
                answer["setting"] = "ContainerPolicy.user_packages"
        elif not on_host:
            answer["message"] = (
                f"Your packages are kept in your workspace volume, in {policy.user_packages_dir}, "
                "one folder per image; this service cannot see that volume to measure them. "
                "Remove a folder there to reset it."
            )
        if not policy.user_packages or not on_host:
            self.finish(json.dumps(answer))
            return
        with self.one_at_a_time():
            try:
                names = await asyncio.to_thread(self.image_names)
                folders = await asyncio.to_thread(
                    user_packages.list_folders, workspace, uid, policy.user_packages_dir
                )
            except PathRefused as e:
                answer["message"] = str(e)
                folders = []
        limit = policy.user_packages_max_bytes
        answer["folders"] = [
            {
                "key": f.key,
                "image": names.get(f.key, ""),
                "bytes": f.bytes,
                "entries": f.entries,
                "packages": f.packages,
                "complete": f.complete,
                "modified": f.modified,
                "over_limit": limit > 0 and f.bytes > limit,
            }
            for f in folders
        ]
        self.finish(json.dumps(answer))


class PackagesFolderHandler(PackagesBase):
    """One folder: ``DELETE`` resets it (the packages installed for that image are removed; the
    next kernel of the image starts with the image's own)."""

    @web.authenticated
    @authorized
    async def delete(self, key: str) -> None:
        policy = self.services.policy
        workspace, uid, on_host = self.workspace()
        if not on_host:
            raise web.HTTPError(
                409,
                "This service cannot see your workspace volume: remove the folder "
                f"{policy.user_packages_dir}/{key} there to reset it.",
            )
        with self.one_at_a_time():
            removed = await asyncio.to_thread(
                user_packages.reset_folder, workspace, uid, policy.user_packages_dir, key
            )
        if not removed:
            raise web.HTTPError(404, "You have no packages kept for that image.")
        self.log.info("Packages folder %s of %s reset at its user's word.", key, self.whose or uid)
        self.set_status(204)
        self.finish()
