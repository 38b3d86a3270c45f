"""Building an image of the user's own from their workspace (images/saves.py's builds):

- ``POST /gpu-containers/builds`` ``{"path": "envs/nlp/Dockerfile", "name": "nlp"?,
  "base": "<image>"?}``: start building the Dockerfile (or the requirements.txt, into ``base``)
  at ``path`` of the caller's workspace, its folder the build's context; 202 with the build
  (a save of kind "build": ``GET``/``DELETE /gpu-containers/saves/<id>`` follow and cancel it),
  ``Location`` its URL. Refused in a sentence, before anything is built, when builds are not
  allowed here or for the caller, when the recipe cannot be built (recipes.py: the one parse of
  it, which the service's own builder runs), and when a base
  it names is not one the administrator allows (ImageSaves.allowed_bases, the allow-list), not
  on this host, or another user's private image.
"""

from __future__ import annotations

import asyncio
import json
import os

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..base.errors import BuildsNotSupported, ContainerKernelError, ImageNotAllowed, Refusal
from ..base.records import ImageRecord
from ..host import build_context
from ..images import recipes
from ..images.saves import BuildSource, check_name, default_name
from ..kernel.admission import admit_image
from .base import json_object
from .packages import PackagesBase


async def build_refusal(handler: PackagesBase) -> Refusal:
    """Why the caller may not build images from their workspace here, none when they may: the
    server's settings (ImageSaves), then a kernel service's ServiceApp.build_policy."""
    why = handler.services.saves.build_refusal_here()
    if why or handler.kernel_user is None:
        return why
    policy = getattr(handler.serverapp, "build_policy", "nobody")
    if policy == "everyone" or await handler.is_admin():
        return Refusal()
    if policy == "admins":
        return Refusal(
            "Only the administrators of this kernel service may build images. Ask one of them "
            "to build it.",
            "ServiceApp.build_policy",
        )
    return Refusal(
        "This kernel service builds no images from users' workspaces (a build runs its steps "
        "as root on the host's engine). Ask the administrator for the image, or to allow "
        "builds.",
        "ServiceApp.build_policy",
    )


class BuildsHandler(PackagesBase):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        await self.require_permission("write", "kernels")
        body = json_object(self)
        path, name, base = body.get("path"), body.get("name"), body.get("base")
        if not isinstance(path, str) or not path.strip():
            raise web.HTTPError(
                400, '"path" is the Dockerfile or requirements.txt to build, in your workspace.'
            )
        for key, value in (("name", name), ("base", base)):
            if value is not None and not isinstance(value, str):
                raise web.HTTPError(400, f'"{key}" is a string.')
        if name:
            name = check_name(name)
        engine = self.services.backend.build_refusal()
        if engine:
            raise BuildsNotSupported(engine)
        why = await build_refusal(self)
        if why:
            raise ImageNotAllowed(why.sentence, setting=why.setting)
        folders, file_name = build_context.split_path(path)
        kind = recipes.kind_of(file_name)
        if not kind:
            raise web.HTTPError(
                400,
                f"{file_name[:200]} is not a recipe this server builds: build from a Dockerfile "
                "(or a file named Dockerfile.<something> or <something>.Dockerfile) or a "
                "requirements.txt.",
            )
        shown = "/".join((*folders, file_name))
        workspace, uid, on_host = self.workspace()
        if not on_host:
            raise ContainerKernelError(
                "This service cannot see your workspace volume, so it cannot build from it.",
                status=501,
            )

        def read() -> str:
            fd = build_context.open_folder(
                workspace, uid, folders, "/".join(folders) or "the top of your workspace"
            )
            try:
                return build_context.read_recipe(
                    fd, file_name, uid, shown, recipes.MAX_RECIPE_BYTES
                )
            finally:
                os.close(fd)

        text = await asyncio.to_thread(read)
        if kind == "dockerfile":
            if base:
                raise web.HTTPError(
                    400, 'A Dockerfile names its own base (FROM): leave "base" out.'
                )
            # The one parse of the text: what it says is what the builder runs.
            recipe = recipes.check_dockerfile(text)
            named, final = recipe.images, recipe.final_base
        else:
            if not base:
                raise web.HTTPError(
                    400,
                    'Choose the image to install the requirements into ("base"): one of the '
                    "images of the GPU Containers panel.",
                )
            named, final = [base], base
        images: dict[str, ImageRecord] = {}
        for ref in dict.fromkeys(named):
            refusal = self.services.saves.base_refusal(ref)
            if refusal:
                raise ImageNotAllowed(refusal.sentence, setting=refusal.setting)
            images[ref] = await admit_image(
                self.services,
                ref,
                own_command=True,
                uid=self.kernel_user.uid if self.kernel_user is not None else None,
            )
        final_image = images.get(final)
        assert final_image is not None  # FROM scratch: refused by recipes.py
        if kind == "requirements":
            # The service's own instructions, on the admitted image's id.
            instructions = recipes.requirements_recipe(final_image.id, final_image.user)
            bases = {final_image.id: final_image.id}
        else:
            instructions = recipe
            # Each image the recipe names runs as the id admitted for it here: the builder
            # never asks the engine to resolve a name.
            bases = {ref: image.id for ref, image in images.items()}
        source = BuildSource(
            recipe=shown,
            folders=tuple(folders),
            instructions=instructions,
            bases=bases,
            base=final,
            base_id=final_image.id if final_image else "",
            base_digest=(
                final_image.repo_digests[0].rsplit("@", 1)[-1]
                if final_image and final_image.repo_digests
                else ""
            ),
            base_size=final_image.size if final_image else 0,
            workspace=workspace,
            uid=uid,
        )
        default = folders[-1] if folders else default_name(final)
        build = await self.services.saves.start_build(
            source,
            name or _name_from(default, final),
            self.whose,
            self.private_owner,
        )
        self.log.info("Building %s from %s at its user's word.", build.image, shown)
        self.set_status(202)
        self.set_header("Location", self.base_url.rstrip("/") + f"/gpu-containers/saves/{build.id}")
        self.finish(json.dumps(build.snapshot()))


def _name_from(candidate: str, base: str) -> str:
    """The folder's name as an image name where it can be one, else the base's."""
    try:
        return check_name(default_name(candidate))
    except ContainerKernelError:
        return default_name(base)
