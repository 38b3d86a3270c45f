"""``jupyter gpu-containers``: list container kernels, install a static kernel spec, set up a
host, manage the kernel service's per-user tokens."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_core.application import JupyterApp
from traitlets import Bool, Unicode

from . import __version__
from .base.errors import ContainerKernelError
from .base.safefiles import owner_name
from .gpus.inventory import GPU, GPUInventory, Inventory
from .host.hoststate import (
    DEFAULT_GROUP,
    DEFAULT_STATE_DIR,
    TMPFILES_PATH,
    provision,
    tmpfiles_entry,
)
from .host.tokens import ServiceTokens, add_token, list_tokens, revoke_tokens
from .kernel.kernelspecs import ContainerKernelSpecManager, kernel_name_for, kernel_spec_dict
from .services import ContainerEngine, Services, backend_class


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
                    f"warning: {e.log_text} The spec is written without the image's details.",
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
            print(e.log_text, file=sys.stderr)  # an administrator's command: the option named
            self.exit(1)
        if self.tmpfiles:
            os.makedirs(os.path.dirname(self.tmpfiles), exist_ok=True)
            with open(self.tmpfiles, "w") as f:
                f.write(
                    "# jupyter_gpu_containers: the host state directory, made at every boot.\n"
                    + tmpfiles_entry(self.state_dir, self.group)
                )
            print(f"wrote {self.tmpfiles}")


def _binary(size: int) -> str:
    """Bytes in binary units, as nvidia-smi's MiB and the GPU panel's GiB."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _gpu_lines(gpu: GPU, indent: str) -> list[str]:
    used = "unknown" if gpu.memory_used is None else _binary(gpu.memory_used)
    total = _binary(gpu.memory_total) if gpu.memory_total else "unknown"
    util = "unknown" if gpu.utilization is None else f"{gpu.utilization} %"
    mig = f"on, {len(gpu.mig_instances)} instance(s)" if gpu.mig_enabled else "off"
    lines = [
        f"{indent}GPU {gpu.index}: {gpu.name}" + (f" ({gpu.brand})" if gpu.brand else ""),
        f"{indent}  uuid:               {gpu.uuid}",
        f"{indent}  compute capability: {gpu.compute_capability or 'unknown'}",
        f"{indent}  memory:             {used} used of {total}",
        f"{indent}  utilisation:        {util}",
    ]
    if not gpu.parent_uuid:
        lines.append(f"{indent}  MIG:                {mig}")
    if gpu.processes:
        lines.append(f"{indent}  processes:")
        for p in gpu.processes:
            sm = "" if p.sm_util is None else f", SM {p.sm_util} %"
            lines.append(f"{indent}    pid {p.pid}: {_binary(p.memory_used)}{sm}")
    else:
        lines.append(f"{indent}  processes:          none")
    for instance in gpu.mig_instances:
        lines.extend(_gpu_lines(instance, indent + "  "))
    return lines


def _gpu_dict(gpu: GPU) -> dict[str, Any]:
    return {
        **gpu.to_dict(),
        "mig_instances": [_gpu_dict(m) for m in gpu.mig_instances],
        "processes": [
            {"pid": p.pid, "memory_used": p.memory_used, "sm_util": p.sm_util}
            for p in gpu.processes
        ],
    }


def inventory_text(inventory: Inventory) -> str:
    """The inventory as an admin reads it (what ``jupyter gpu-containers gpus`` prints)."""
    sources = {
        "nvml": "the NVIDIA driver (NVML)",
        "static": "the static inventory (GPUInventory.static_gpus)",
        "none": "none",
    }
    lines = [f"Source: {sources.get(inventory.source, inventory.source)}"]
    if inventory.driver_version or inventory.cuda_driver_version:
        lines.append(
            f"Driver: {inventory.driver_version or 'unknown'}, "
            f"CUDA {inventory.cuda_driver_version or 'unknown'}"
        )
    if not inventory.gpus:
        lines.append(inventory.reason or "No GPUs are listed.")
    for gpu in inventory.gpus:
        lines.extend(_gpu_lines(gpu, ""))
    return "\n".join(lines)


class GPUsApp(JupyterApp):
    name = "jupyter-gpu-containers-gpus"
    description = """Print the GPUs the server sees: where they come from (the NVIDIA driver or
    the static inventory), the driver and the CUDA version it supports, and per GPU its index,
    name, UUID, compute capability, memory, utilisation, MIG state and processes. It reads the
    server's configuration (jupyter_server_config), so GPUInventory settings there apply. Exits
    with 1 when NVML fails on a host that has a driver."""
    version = __version__
    # The server's own configuration files, so that this prints what the server would see.
    config_file_name = Unicode("jupyter_server_config", config=True, help="Config file to load.")

    json_output = Bool(False, config=True, help="Print JSON instead of text.")
    flags = {"json": ({"GPUsApp": {"json_output": True}}, "Print JSON.")}

    def start(self) -> None:
        inventory = GPUInventory(parent=self).read_sync()
        if self.json_output:
            out = {
                "source": inventory.source,
                "driver_version": inventory.driver_version,
                "cuda_driver_version": inventory.cuda_driver_version,
                "reason": inventory.reason,
                "failed": inventory.failed,
                "gpus": [_gpu_dict(gpu) for gpu in inventory.gpus],
            }
            print(json.dumps(out, indent=2))
        else:
            print(inventory_text(inventory))
        if inventory.failed:
            self.exit(1)


# The kernel service's config file (service.py's ServiceApp): the token commands read it too, so
# that a ServiceTokens.tokens_file configured there is the file they change.
SERVICE_CONFIG_FILE = "jupyter_gpu_containers_serve_config"


class _TokenCommand(JupyterApp):
    """What the token commands share: the service's config, --tokens-file, one sentence on
    failure (never a traceback)."""

    version = __version__
    classes = [ServiceTokens]
    aliases = {
        "tokens-file": "ServiceTokens.tokens_file",
        "config": "JupyterApp.config_file",
        "log-level": "Application.log_level",
    }

    def _config_file_name_default(self) -> str:
        return SERVICE_CONFIG_FILE

    def tokens_path(self) -> str:
        return str(ServiceTokens(parent=self).tokens_file)

    def username_argument(self, usage: str) -> str:
        if len(self.extra_args) != 1:
            print(f"Give one user name: {usage}", file=sys.stderr)
            self.exit(2)
        return str(self.extra_args[0])

    def fail(self, error: ContainerKernelError) -> None:
        print(error.log_text, file=sys.stderr)  # an administrator's command: the option named
        self.exit(1)

    def say_whose(self, path: str) -> None:
        """Root may change a service account's file (it stays theirs): say who may use it."""
        owner = os.stat(path, follow_symlinks=False).st_uid
        if owner != os.geteuid():
            print(
                f"{path} belongs to {owner_name(owner)}: only a service running as "
                f"{owner_name(owner)} (or root) accepts it.",
                file=sys.stderr,
            )


class TokenAddApp(_TokenCommand):
    name = "jupyter-gpu-containers-token-add"
    description = """Give USERNAME a new token for the kernel service, and print it (only this
    once: the file keeps its hash). Creates the token file if it does not exist. The user's
    server sends it to the service: jupyter lab --gateway-url=URL with
    JUPYTER_GATEWAY_AUTH_TOKEN=<token> (or GatewayClient.auth_token). A running service accepts
    it within a second."""

    note = Unicode("", config=True, help="A note kept with the token (which machine, why).")
    aliases = {**_TokenCommand.aliases, "note": "TokenAddApp.note"}

    def start(self) -> None:
        username = self.username_argument("jupyter gpu-containers token add USERNAME")
        path = self.tokens_path()
        try:
            token, entry = add_token(path, username, self.note)
        except ContainerKernelError as e:
            self.fail(e)
            return
        print(
            f"Added token {entry.token_id} for {username} to {path}. It is shown only this "
            "once; the user's server sends it as its gateway token (JUPYTER_GATEWAY_AUTH_TOKEN).",
            file=sys.stderr,
        )
        self.say_whose(path)
        print(token)


class TokenRevokeApp(_TokenCommand):
    name = "jupyter-gpu-containers-token-revoke"
    description = """Revoke USERNAME's tokens for the kernel service: all of them, or the one
    --id names (`token list` shows the ids). A running service refuses them within a second;
    kernels the user already runs keep running."""

    token_id = Unicode("", config=True, help="Revoke only the token with this id.")
    aliases = {**_TokenCommand.aliases, "id": "TokenRevokeApp.token_id"}

    def start(self) -> None:
        username = self.username_argument("jupyter gpu-containers token revoke USERNAME [--id ID]")
        path = self.tokens_path()
        try:
            gone = revoke_tokens(path, username, self.token_id or None)
        except ContainerKernelError as e:
            self.fail(e)
            return
        ids = ", ".join(entry.token_id for entry in gone)
        print(f"Revoked {len(gone)} token(s) of {username} ({ids}) in {path}.")


class TokenListApp(_TokenCommand):
    name = "jupyter-gpu-containers-token-list"
    description = """List the kernel service's tokens: user, id, when created, note. The
    tokens themselves are never stored, and their hashes are not shown."""

    json_output = Bool(False, config=True, help="Print JSON instead of a table.")
    flags = {"json": ({"TokenListApp": {"json_output": True}}, "Print JSON.")}

    def start(self) -> None:
        if self.extra_args:
            print("token list takes no arguments.", file=sys.stderr)
            self.exit(2)
        path = self.tokens_path()
        try:
            entries = list_tokens(path)
        except ContainerKernelError as e:
            self.fail(e)
            return
        rows = [entry.public() for entry in entries]
        if self.json_output:
            print(json.dumps(rows, indent=2))
            return
        if not rows:
            print(f"No tokens in {path}.")
            return
        width = max(len(r["username"]) for r in rows)
        for r in rows:
            print(f"{r['username']:<{width}}  {r['id']}  {r['created']}  {r['note']}".rstrip())


class TokenApp(JupyterApp):
    name = "jupyter-gpu-containers-token"
    description = """The kernel service's per-user tokens (without JupyterHub): add, revoke,
    list. Run as root or as the token file's owner."""
    version = __version__
    subcommands = {
        "add": (TokenAddApp, "Give a user a new token (printed once)."),
        "revoke": (TokenRevokeApp, "Revoke a user's tokens, or one of them."),
        "list": (TokenListApp, "List the tokens (never their hashes)."),
    }

    def start(self) -> None:
        if self.subapp is None:
            print(
                f"Subcommands: {', '.join(self.subcommands)}. Add --help for details.",
                file=sys.stderr,
            )
            self.exit(1)
        super().start()


class DoctorApp(JupyterApp):
    name = "jupyter-gpu-containers-doctor"
    description = """Say what the configured engine (ContainerEngine.backend: Docker, or your own
    rootless Podman) needs that this host or your account lacks, and how to fix each: exit status
    1 when kernels cannot start until something is fixed."""
    version = __version__

    def start(self) -> None:
        name = ContainerEngine(parent=self).backend
        backend = backend_class(name)(parent=self)
        try:
            findings = backend.diagnose_sync()
        finally:
            backend.close()
        print(f"Engine: {name} (ContainerEngine.backend)")
        for finding in findings:
            mark = "problem" if finding.problem else "ok"
            print(f"  [{'blocking' if finding.blocking else mark}] {finding.sentence}")
        if any(f.blocking for f in findings):
            print("Kernels cannot start on this engine until the blocking problems are fixed.")
            self.exit(1)


class GPUContainersApp(JupyterApp):
    name = "jupyter-gpu-containers"
    description = "Jupyter kernels inside GPU framework containers."
    version = __version__
    subcommands = {
        "list": (ListApp, ListApp.description.splitlines()[0]),
        "install-kernelspec": (InstallKernelSpecApp, "Install a static kernel spec for an image."),
        "setup-host": (SetupHostApp, "As root: create the host state directory."),
        "token": (TokenApp, "The kernel service's per-user tokens: add, revoke, list."),
        "gpus": (GPUsApp, "Print the GPUs the server sees (NVML or the static inventory)."),
        "doctor": (DoctorApp, "Say what the configured engine lacks here, and how to fix it."),
        "serve": (
            "jupyter_gpu_containers.service.service.ServiceApp",
            "The kernel service of a shared host: kernels for many users' Jupyter servers.",
        ),
    }

    def start(self) -> None:
        if self.subapp is None:
            print(f"Subcommands: {', '.join(self.subcommands)}. Add --help for details.")
            self.exit(1)
        super().start()


main = GPUContainersApp.launch_instance
if __name__ == "__main__":
    main()
