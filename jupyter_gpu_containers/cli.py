"""``jupyter gpu-containers``: list container kernels, install a static kernel spec, set up a
host."""

from __future__ import annotations

import json
import os
import sys
import tempfile

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_core.application import JupyterApp
from traitlets import Bool, Unicode

from . import __version__
from .errors import ContainerKernelError
from .hoststate import DEFAULT_GROUP, DEFAULT_STATE_DIR, TMPFILES_PATH, provision, tmpfiles_entry
from .kernelspecs import ContainerKernelSpecManager, kernel_name_for, kernel_spec_dict
from .services import Services


class ListApp(JupyterApp):
    name = "jupyter-gpu-containers-list"
    description = """List the local images offered as container kernels, with their kernel names,
    and the images that are not offered because they cannot run a kernel (found by a short probe
    container per image, cached)."""
    version = __version__

    json_output = Bool(False, config=True, help="Print JSON instead of a table.")
    flags = {"json": ({"ListApp": {"json_output": True}}, "Print JSON.")}

    def start(self) -> None:
        ksm = ContainerKernelSpecManager(parent=self)
        try:
            self._list(ksm)
        finally:
            ksm.close()

    def _list(self, ksm: ContainerKernelSpecManager) -> None:
        ksm.refresh()
        if ksm.engine_error:
            print(ksm.engine_error, file=sys.stderr)
            self.exit(1)
        rows = []
        for name, (ref, _image) in sorted(ksm.image_entries().items(), key=lambda kv: kv[1][0]):
            spec = ksm.get_kernel_spec(name)
            rows.append({"name": name, "image": ref, "display_name": spec.display_name})
        if self.json_output:
            print(json.dumps(rows, indent=2))
            return
        if not rows:
            print(
                "No local images are offered as kernels "
                "(see ContainerKernelSpecManager.image_include)."
            )
            return
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            print(f"{r['name']:<{width}}  {r['display_name']}")
        if ksm.not_ready:
            print("\nNot offered, because they cannot run a kernel:")
            for ref, reason in sorted(ksm.not_ready.items()):
                print(f"  {ref}: {reason}")


class InstallKernelSpecApp(JupyterApp):
    name = "jupyter-gpu-containers-install-kernelspec"
    description = """Write a static kernel spec that runs IMAGE in a container. It works in any
    jupyter_client front end (VS Code, nbclient, jupyter console) where this package is
    installed, with or without the server extension."""
    version = __version__

    image = Unicode("", config=True, help="The image reference.")
    kernel_name = Unicode("", config=True, help="Kernel name (default: derived from the image).")
    display_name = Unicode("", config=True, help="Display name (default: from the image).")
    user = Bool(False, config=True, help="Install for the current user only.")
    prefix = Unicode("", config=True, help="Install under this prefix (e.g. sys.prefix).")

    aliases = {
        "image": "InstallKernelSpecApp.image",
        "name": "InstallKernelSpecApp.kernel_name",
        "display-name": "InstallKernelSpecApp.display_name",
        "prefix": "InstallKernelSpecApp.prefix",
    }
    flags = {
        "user": ({"InstallKernelSpecApp": {"user": True}}, "Install for the current user."),
        "sys-prefix": (
            {"InstallKernelSpecApp": {"prefix": sys.prefix}},
            "Install into this Python environment (sys.prefix).",
        ),
    }

    def start(self) -> None:
        if not self.image:
            print(
                "Give the image: jupyter gpu-containers install-kernelspec --image IMAGE",
                file=sys.stderr,
            )
            self.exit(2)
        record = None
        services = Services(parent=self)
        try:
            try:
                record = services.backend.inspect_image_sync(self.image)
            except ContainerKernelError as e:
                print(
                    f"warning: {e} The spec is written without the image's details.",
                    file=sys.stderr,
                )
            # A readiness probe's answer already cached names the Python or framework version.
            known = services.probe.cached(record.id) if record else None
        finally:
            services.close()
        spec = kernel_spec_dict(self.image, record, probe=known)
        if self.display_name:
            spec["display_name"] = self.display_name
        name = self.kernel_name or kernel_name_for(self.image)
        with tempfile.TemporaryDirectory() as tmp:
            with open(os.path.join(tmp, "kernel.json"), "w") as f:
                json.dump(spec, f, indent=1)
            dest = KernelSpecManager(parent=self).install_kernel_spec(
                tmp, kernel_name=name, user=self.user, prefix=self.prefix or None
            )
        print(f"Installed kernel spec {name} ({spec['display_name']}) in {dest}")


class SetupHostApp(JupyterApp):
    name = "jupyter-gpu-containers-setup-host"
    description = """As root, once per host: create the host state directory that every Jupyter
    server on the host shares (the GPU allocation lock, which servers are alive), owned by root
    with the group of the users who run kernels and mode 1770, and a systemd-tmpfiles entry that
    makes it again at every boot (/run is emptied). Without it, GPU kernels are refused."""
    version = __version__

    state_dir = Unicode(DEFAULT_STATE_DIR, config=True, help="The directory to create.")
    group = Unicode(
        DEFAULT_GROUP,
        config=True,
        help="""The group whose members run kernels (direct mode: those who may use the Docker
        engine; a kernel service: its service account's group).""",
    )
    tmpfiles = Unicode(
        TMPFILES_PATH, config=True, help="Where to write the tmpfiles.d entry ('' for nowhere)."
    )

    aliases = {
        "state-dir": "SetupHostApp.state_dir",
        "group": "SetupHostApp.group",
        "tmpfiles": "SetupHostApp.tmpfiles",
    }

    def start(self) -> None:
        if os.geteuid() != 0:
            print(
                "setup-host makes a directory only root may own: run it as root "
                "(sudo jupyter gpu-containers setup-host).",
                file=sys.stderr,
            )
            self.exit(1)
        try:
            print(provision(self.state_dir, self.group))
        except ContainerKernelError as e:
            print(e.sentence, file=sys.stderr)
            self.exit(1)
        if self.tmpfiles:
            os.makedirs(os.path.dirname(self.tmpfiles), exist_ok=True)
            with open(self.tmpfiles, "w") as f:
                f.write(
                    "# jupyter_gpu_containers: the host state directory, made at every boot.\n"
                    + tmpfiles_entry(self.state_dir, self.group)
                )
            print(f"wrote {self.tmpfiles}")


class GPUContainersApp(JupyterApp):
    name = "jupyter-gpu-containers"
    description = "Jupyter kernels inside GPU framework containers."
    version = __version__
    subcommands = {
        "list": (ListApp, ListApp.description.splitlines()[0]),
        "install-kernelspec": (InstallKernelSpecApp, "Install a static kernel spec for an image."),
        "setup-host": (SetupHostApp, "As root: create the host state directory."),
    }

    def start(self) -> None:
        if self.subapp is None:
            print(f"Subcommands: {', '.join(self.subcommands)}. Add --help for details.")
            self.exit(1)
        super().start()


main = GPUContainersApp.launch_instance
if __name__ == "__main__":
    main()
