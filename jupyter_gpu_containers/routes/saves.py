"""Saving a kernel's environment as an image (images/saves.py), from the kernel's own view:

- ``POST /gpu-containers/kernels/<kernel_id>/save`` ``{"name": "pytorch-nlp"?}``: start saving
  the image the caller's kernel runs and their packages for it as an image of their own; 202
  with the save, ``Location`` its URL. Refused in a sentence when it cannot be made here (the
  engine, the administrator's settings, nothing to save, another save of theirs under way).
- ``GET /gpu-containers/saves``: the caller's saves and builds (routes/builds.py), and why
  neither can be made here ("" when they can); ``GET /gpu-containers/saves/<id>``: one (state,
  files and bytes copied, the build's lines, the new image); ``DELETE`` cancels it.
- ``DELETE /gpu-containers/saved-images?image=<ref>``: remove one of the caller's saved images
  (only theirs: a reference under their own repository), and its private record.
"""

from __future__ import annotations

import asyncio
import json

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..base.errors import BuildsNotSupported, ContainerKernelError, ImageNotAllowed, SaveRefused
from ..host import user_packages
from ..host.user_packages import packages_key
from ..images.saves import Save, SaveSource, check_name, default_name
from .base import json_object
from .builds import build_refusal
from .kernel_view import current_container, find_kernel
from .packages import PackagesBase


class KernelSaveHandler(PackagesBase):
    @web.authenticated
    @authorized
    async def post(self, kernel_id: str) -> None:
        await self.require_permission("write", "kernels")
        body = json_object(self)
        name = body.get("name")
        if name is not None and not isinstance(name, str):
            raise web.HTTPError(400, '"name" is the new image\'s name, e.g. "pytorch-nlp".')
        if name:
            name = check_name(name)  # a name that cannot be one: said before anything is done
        _km, provisioner = find_kernel(self.kernel_manager, kernel_id, self.kernel_user)
        saves = self.services.saves
        engine = self.services.backend.build_refusal()
        if engine:
            raise BuildsNotSupported(engine)  # 501: said before the kernel's image is read
        why = saves.refusal()
        if why:
            raise ImageNotAllowed(why.sentence, setting=why.setting)
        details = await current_container(self.services.backend, provisioner)
        if details is None:
            raise web.HTTPError(
                409, "The kernel is between two containers (restarting): save it once it runs."
            )
        base = provisioner.run_image
        image = await self.services.backend.inspect_image(details.image_id)
        workspace, uid, on_host = self.workspace()
        facts = provisioner.launch_facts
        if facts is not None and self.kernel_user is None:
            workspace = facts.root  # the workspace this kernel mounted
        if not on_host:
            raise ContainerKernelError(
                "This service cannot see your workspace volume, where your packages are, so it "
                "cannot save them into an image.",
                status=501,
            )
        policy = self.services.policy
        key = packages_key(base)
        with self.one_at_a_time():  # a measure of the workspace, as the packages route's
            folders = await asyncio.to_thread(
                user_packages.list_folders, workspace, uid, policy.user_packages_dir
            )
        if not any(f.key == key and (f.packages or not f.complete) for f in folders):
            raise SaveRefused(
                f"There are no packages of yours for {base} to save: install some in this kernel "
                f"first (%pip install …); they are kept in {policy.user_packages_dir} of your "
                "workspace, and saved with the image."
            )
        source = SaveSource(
            base=base,
            base_id=image.id,
            base_digest=image.repo_digests[0].rsplit("@", 1)[-1] if image.repo_digests else "",
            workspace=workspace,
            uid=uid,
            packages_dir=policy.user_packages_dir,
            key=key,
        )
        save = await saves.start(source, name or default_name(base), self.whose, self.private_owner)
        self.log.info(
            "Kernel %s: saving its environment (%s) as %s at its user's word.",
            kernel_id,
            base,
            save.image,
        )
        self.set_status(202)
        self.set_header("Location", self.base_url.rstrip("/") + f"/gpu-containers/saves/{save.id}")
        self.finish(json.dumps(save.snapshot()))


class SavesHandler(PackagesBase):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        saves = self.services.saves
        self.finish(
            json.dumps(
                {
                    "saves": saves.listing(self.whose),
                    **self.refusal_fields("refusal", saves.refusal()),
                    **self.refusal_fields("build_refusal", await build_refusal(self)),
                }
            )
        )


class SavedImageHandler(PackagesBase):
    @web.authenticated
    @authorized
    async def delete(self) -> None:
        await self.require_permission("write", "kernels")
        ref = self.get_query_argument("image", "")
        if not ref:
            raise web.HTTPError(400, "Name the saved image to remove: ?image=<reference>.")
        _workspace, uid, _on_host = self.workspace()
        services = self.services
        saves = services.saves
        shared = services.backend.images_shared

        def remove() -> None:
            saves.remove_sync(ref, uid, self.private_owner, services.state if shared else None)

        await asyncio.to_thread(remove)
        self.set_status(204)
        self.finish()


class SaveHandler(PackagesBase):
    def _save(self, save_id: str) -> Save:
        save = self.services.saves.get(save_id, self.whose)
        if save is None:
            raise web.HTTPError(
                404,
                f"There is no save {save_id!r} of yours (finished saves are kept for a while, "
                "then forgotten).",
            )
        return save

    @web.authenticated
    @authorized
    async def get(self, save_id: str) -> None:
        self.finish(json.dumps(self._save(save_id).snapshot()))

    @web.authenticated
    @authorized
    async def delete(self, save_id: str) -> None:
        save = self._save(save_id)
        saves = self.services.saves
        # On the event loop, which owns the queue: a cancel only sets the build's event (the
        # builder's thread ends its step and removes its containers).
        saves.cancel(save)
        await saves.wait(save)
        self.finish(json.dumps(save.snapshot()))
