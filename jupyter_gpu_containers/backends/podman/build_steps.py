"""The container primitives the service's own builder (images/builder.py) executes a build with,
on Podman (backend.BuildSteps): a stage's container, its steps as execs, tars in and out, the
writable layer's size, and one commit with the config the service computed. Podman never reads a
Dockerfile: ``podman build`` is not used at all.

- A stage is a container of the image id the service admitted (never a name Podman resolves),
  created with the kernel's own options (podman_args.run_options: every capability dropped,
  no-new-privileges, the pids and memory limits, ulimits Podman may set, rotated logs), a CPU
  limit, no environment of Podman's own (``--unsetenv-all``: a step sees exactly the
  environment the service gives it), and no network, or one of the container's own
  (:meth:`PodmanBuildSteps.network`). Rootless under cgroups v1, where Podman sets no cgroup
  limit, the processes are bound by RLIMIT_NPROC instead. Its PID 1 is Podman's init (which
  reaps what a step leaves behind) over ``/bin/sh -c 'read _'``, whose stdin conmon holds open
  (``--interactive``, never attached): idle until the container is removed. Podman's default
  user namespace: rootless, root in a step is the user's own uid on the host; as root, uid 0
  without a capability.
- A step is ``podman exec`` with ``--user=``, ``--workdir=`` and the environment on podman's
  stdin (``--env-file=/dev/stdin``: a build's arguments are never on a command line, which every
  account reads in /proc); its output is read in bounded lines; a cancel kills the container's
  PID 1, which ends every process of the step with it.
- A tar goes in by ``podman cp --archive=false -`` (the owners the service wrote stay) and comes
  out by ``podman cp <container>:<path> -``, whose entries Podman gives to the caller's own uid
  (the builder sets the owners of what it copies itself, as Docker's COPY does).
- The commit: ``podman commit`` merges the base image's config and the container's own (its
  labels, Podman's environment, the idle command) into the image, and nothing in its --change
  lines can take a label or a variable out. So the committed image is only a step: its new
  layer is pushed into a private OCI layout (the base's layers there already, as empty files, so
  Podman writes the new layer only), the service writes the image's config and manifest there
  itself, and ``podman load`` makes the image (its layers shared with the base's; its id the
  digest of the config the service wrote). The step's image and the load's name are removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from typing import IO, Any, BinaryIO

from ...base import labels as L
from ...base.errors import ContainerKernelError, EngineRefused, EngineUnavailable, ValueRefused
from ...base.records import ContainerSpec
from ..backend import ImageConfig, StepLimits
from ..docker_formats import as_image_id, short
from ..podman_args import env_lines, run_options
from .cli import PodmanCLI, PodmanFailed, end_process, last_words
from .containers import image_labels, image_missing

# A stage's PID 1: idle until the container goes (its stdin is held open by conmon).
IDLE = ["/bin/sh", "-c", "read _"]
# The longest output line told as one (a step that prints without line breaks is cut).
LINE_BYTES = 64 * 1024
# Where a commit's OCI layout is written: Podman's own default place for image copies, on disk
# (the runtime directory is a small tmpfs, and a layer may be gigabytes).
COMMIT_SPOOL = "/var/tmp"

_HEX_ID = re.compile(r"(?:sha256:)?([0-9a-f]{64})")


class BuildStepRefused(ContainerKernelError):
    """Podman would not do a build's step (a sentence; 400: what the build asked for)."""

    status = 400
    reason_phrase = "Build step refused"


def bare_id(image_id: str) -> str:
    """``image_id`` as Podman names an image by its id alone: 64 hex digits (a name or a short
    prefix, which Podman would resolve its own way, is refused)."""
    found = _HEX_ID.fullmatch(image_id)
    if not found:
        raise EngineRefused(
            f"A build step names the image {short(image_id, 80)!r}, which is not an image id: "
            "the builder gives Podman ids only."
        )
    return found.group(1)


def env_file(env: list[str]) -> bytes:
    """``env`` ("NAME=value") as podman's ``--env-file`` lines, through the one place that
    writes them for every container (podman_args.env_lines: refused where podman would read
    them otherwise, a name alone included, which podman would take from its own environment)."""
    pairs: dict[str, str] = {}
    for item in env:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueRefused(
                f"A build step's environment variable {short(name, 80)!r} has no value: "
                "podman would take one from its own environment."
            )
        pairs[name] = value
    return env_lines(pairs, whose="A build step's")


class _Output(io.RawIOBase):
    """A podman command's stdout, read as a stream; at its end, the command's failure raised as
    a sentence (``what`` says what it was doing). ``close`` ends the command."""

    def __init__(self, process: subprocess.Popen[bytes], errors: IO[bytes], what: str) -> None:
        self._process = process
        self._errors = errors
        self._what = what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        assert self._process.stdout is not None
        read = self._process.stdout.readinto(buffer)  # type: ignore[attr-defined]
        if read:
            return int(read)
        code = self._process.wait()
        if code != 0:
            self._errors.seek(0)
            said = last_words(self._errors.read(64 * 1024).decode("utf-8", "replace"))
            raise EngineRefused(f"Podman could not {self._what}: {short(said)}")
        return 0

    def close(self) -> None:
        if not self.closed:
            end_process(self._process)
            self._errors.close()
        super().close()


class PodmanBuildSteps:
    """backend.BuildSteps on this Podman (the server's own; root's for a kernel service)."""

    def __init__(
        self,
        cli: PodmanCLI,
        *,
        rootless: bool,
        ulimits: Callable[[dict[str, tuple[int, int]]], dict[str, tuple[int, int]]],
        tun_usable: Callable[[], bool],
        log: logging.Logger | logging.LoggerAdapter[Any],
    ) -> None:
        self._cli = cli
        self._rootless = rootless
        self._ulimits = ulimits
        self._tun_usable = tun_usable
        self._log = log

    # ------------------------------------------------------------------ containers

    def _no_cgroup_limits(self) -> bool:
        """Whether Podman cannot limit a container's processes through cgroups: rootless on a
        host of cgroups v1 (no unified hierarchy)."""
        return self._rootless and not os.path.exists("/sys/fs/cgroup/cgroup.controllers")

    def network(self, limits: StepLimits) -> str:
        """The network of a build's containers: "none" unless ``limits.network``; then
        slirp4netns, as root and rootless alike: a network of the container's own, made and
        ended with it, through a user-mode stack (the container's connections leave from the
        host's network as the slirp4netns process's), so no other container, build or kernel,
        shares a segment with it, and the host's loopback is not reachable (Podman 4.3's
        slirp4netns has allow_host_loopback off). It needs /dev/net/tun: where that cannot be
        opened, a step with a network is refused (the host's network is never a build's)."""
        if not limits.network:
            return "none"
        if not self._tun_usable():
            raise BuildStepRefused(
                "A build step may reach a network here, but Podman can give it one of its own "
                "only through /dev/net/tun, which this account may not open; the host's network "
                "is never a build's. Ask an administrator to make /dev/net/tun usable, or to "
                "build without a network.",
                setting="ImageSaves.build_network",
            )
        return "slirp4netns"

    def _create(
        self, image_id: str, labels: dict[str, str], limits: StepLimits, *, network: str
    ) -> str:
        target = bare_id(image_id)
        spec = ContainerSpec(
            image=target,
            command=list(IDLE),
            name=f"jgc-build-{secrets.token_hex(6)}",
            # Podman merges the image's labels into the container's: every key of the
            # project's namespace the base carries is set "" (labels.container_labels, the one
            # rule for every container), so no build container passes for a kernel's record.
            labels=L.container_labels(dict(labels), image_labels(self._cli, target)),
            environment={},
            network_mode=network,
            mem_limit=str(limits.memory) if limits.memory else None,
            pids_limit=limits.pids or None,
            # An init as PID 1 (Podman's catatonit), the idle shell its child: it reaps what a
            # step left running, whose ended processes would count against the pids bound.
            init=True,
            entrypoint=[],
            cap_add=[],
            no_new_privileges=True,
        )
        # The kernel's own options (podman_args.run_options: one place for the hardening), in
        # Podman's default user namespace (rootless: root in a step is the user's uid).
        args = ["create", "--pull=never", "--name", spec.name, "--interactive", "--unsetenv-all"]
        # Rootless under cgroups v1, Podman sets no pids, memory or CPU limit (doctor.py says
        # so): the processes of a step are then bound by RLIMIT_NPROC, which counts them in the
        # user's own namespace (root in it is the user).
        asked = {"nproc": (limits.pids, limits.pids)} if self._no_cgroup_limits() else {}
        args += run_options(spec, network=network, userns="", ulimits=self._ulimits(asked))
        if limits.cpus:
            args += [f"--cpus={limits.cpus:g}"]
        args += [target, *spec.command]
        try:
            out = self._cli.run(args, what=f"create a build container of {image_id[:19]}")
        except PodmanFailed as e:
            if e.image_not_known:
                raise image_missing(image_id) from e
            raise EngineRefused(
                f"Podman refused to create a build container of {image_id[:19]}: {short(e.said)}"
            ) from e
        return out.strip().splitlines()[-1]

    def create_stage(self, image_id: str, *, labels: dict[str, str], limits: StepLimits) -> str:
        container = self._create(image_id, labels, limits, network=self.network(limits))
        try:
            try:
                self._cli.run(["start", container], what="start a build container")
            except PodmanFailed as e:
                raise EngineRefused(
                    f"Podman refused to start a build container of {image_id[:19]}: {short(e.said)}"
                ) from e
            try:
                # The idle shell runs (or its init has ended, for want of it): asked, not timed.
                self._cli.run(["exec", container, "/bin/sh", "-c", ":"], what="check a stage")
            except PodmanFailed as e:
                raise BuildStepRefused(
                    f"The image {image_id[:19]} has no /bin/sh, which the builder keeps a "
                    f"stage's container running with ({short(e.said, 200)}): build on an "
                    "image that has one."
                ) from e
        except BaseException:
            self.remove_container(container)
            raise
        return container

    def create_source(self, image_id: str, *, labels: dict[str, str]) -> str:
        # Never started: no network, the smallest limits.
        return self._create(image_id, labels, StepLimits(pids=16), network="none")

    def image_config(self, image_id: str) -> ImageConfig:
        target = bare_id(image_id)
        try:
            found = self._cli.json(["image", "inspect", target], what="inspect a build's base")
        except PodmanFailed as e:
            if e.image_not_known:
                raise image_missing(image_id) from e
            raise
        data = (found or [{}])[0]
        config = data.get("Config") or {}

        def strings(value: Any) -> tuple[str, ...] | None:
            return None if value is None else tuple(str(v) for v in value)

        return ImageConfig(
            env=strings(config.get("Env")) or (),
            cmd=strings(config.get("Cmd")),
            entrypoint=strings(config.get("Entrypoint")),
            workdir=str(config.get("WorkingDir") or ""),
            user=str(config.get("User") or ""),
            labels={str(k): str(v) for k, v in (config.get("Labels") or {}).items()},
            exposed_ports=tuple(sorted(config.get("ExposedPorts") or {})),
            volumes=tuple(sorted(config.get("Volumes") or {})),
            stop_signal=str(config.get("StopSignal") or ""),
            # An OCI image has no shell (Docker's format only): None where there is none.
            shell=strings(config.get("Shell")),
        )

    def remove_container(self, container: str) -> None:
        try:
            self._cli.run(
                ["rm", "--force", "--volumes", "--time=0", container],
                what="remove a build container",
            )
        except PodmanFailed as e:
            if not e.not_found:
                raise

    def remove_image(self, image_id: str) -> None:
        try:
            self._cli.run(["rmi", bare_id(image_id)], what="remove a build's image")
        except PodmanFailed as e:
            if not e.image_not_known:
                raise

    # ------------------------------------------------------------------ steps

    def exec_step(
        self,
        container: str,
        argv: list[str],
        *,
        user: str,
        workdir: str,
        env: list[str],
        on_line: Callable[[str], None],
        cancelled: threading.Event,
    ) -> int:
        if not argv:
            raise BuildStepRefused("A build step has no command to run.")
        args = ["exec", "--env-file=/dev/stdin"]
        if user:
            args.append(f"--user={user}")
        if workdir:
            args.append(f"--workdir={workdir}")
        args += [container, *argv]
        environment = env_file(env)
        try:
            process = subprocess.Popen(
                [*self._cli.command, *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=self._cli.environment(),
                start_new_session=True,
            )
        except FileNotFoundError as e:
            raise self._cli.unavailable(e) from e
        finished = threading.Event()
        watcher = threading.Thread(
            target=self._end_when_cancelled,
            args=(container, process, cancelled, finished),
            name="gpu-containers-build-step-cancel",
            daemon=True,
        )
        watcher.start()
        try:
            assert process.stdin is not None and process.stdout is not None
            with contextlib.suppress(BrokenPipeError):
                process.stdin.write(environment)
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()
            while True:
                line = process.stdout.readline(LINE_BYTES)
                if not line:
                    break
                on_line(line.decode("utf-8", "replace").rstrip("\r\n"))
            return process.wait()
        finally:
            finished.set()
            end_process(process)
            watcher.join()

    def _end_when_cancelled(
        self,
        container: str,
        process: subprocess.Popen[bytes],
        cancelled: threading.Event,
        finished: threading.Event,
    ) -> None:
        """Once ``cancelled`` is set while the step runs: the stage's PID 1 killed (every
        process of the step goes with the container's PID namespace), then podman's exec."""
        while not finished.is_set():
            if cancelled.wait(0.5):
                with contextlib.suppress(ContainerKernelError):
                    self._cli.run(["kill", "--signal=KILL", container], what="cancel a step")
                end_process(process)
                return

    def put_archive(self, container: str, path: str, data: bytes | BinaryIO) -> None:
        if not path.startswith("/"):
            raise BuildStepRefused(f"A build step puts files at {short(path, 80)!r}: not a path.")
        args = [*self._cli.command, "cp", "--archive=false", "-", f"{container}:{path}"]
        with tempfile.TemporaryFile() as errors:
            try:
                process = subprocess.Popen(
                    args,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=errors,
                    env=self._cli.environment(),
                    start_new_session=True,
                )
            except FileNotFoundError as e:
                raise self._cli.unavailable(e) from e
            try:
                assert process.stdin is not None
                with contextlib.suppress(BrokenPipeError):
                    if isinstance(data, bytes | bytearray):
                        process.stdin.write(data)
                    else:
                        shutil.copyfileobj(data, process.stdin, 1 << 20)
                    process.stdin.close()
                code = process.wait(timeout=self._cli.settings.api_timeout * 10)
            except subprocess.TimeoutExpired as e:
                raise EngineUnavailable(
                    "Podman did not finish copying files into a build container in time."
                ) from e
            finally:
                end_process(process)
            if code != 0:
                errors.seek(0)
                said = last_words(errors.read(64 * 1024).decode("utf-8", "replace"))
                raise EngineRefused(f"Podman could not copy files to {path}: {short(said)}")

    def get_archive(self, container: str, path: str) -> BinaryIO:
        if not path.startswith("/"):
            raise BuildStepRefused(f"A build step reads {short(path, 80)!r}: not a path.")
        errors = tempfile.TemporaryFile()  # noqa: SIM115 (the stream's own, closed with it)
        try:
            process = subprocess.Popen(
                [*self._cli.command, "cp", f"{container}:{path}", "-"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=errors,
                env=self._cli.environment(),
                start_new_session=True,
            )
        except FileNotFoundError as e:
            errors.close()
            raise self._cli.unavailable(e) from e
        except BaseException:
            errors.close()
            raise
        reader = _Output(process, errors, f"read {short(path, 200)} from a build container")
        return io.BufferedReader(reader, 1 << 16)

    def layer_size(self, container: str) -> int:
        found = self._cli.json(
            ["container", "inspect", "--size", container],
            what="measure a build container",
            timeout=self._cli.settings.api_timeout * 5,
        )
        data = (found or [{}])[0]
        return int(data.get("SizeRw") or 0)

    # ------------------------------------------------------------------ the commit

    def commit(self, container: str, config: ImageConfig, labels: dict[str, str]) -> str:
        """``container`` as an untagged image whose config is exactly ``config`` with
        ``labels`` as its labels (the module's docstring says how); its id."""
        step = self._cli.run(
            ["commit", "--pause=false", "--quiet", "--format=oci", container],
            what="commit a build container",
            timeout=self._cli.settings.api_timeout * 10,
        ).strip()
        step_id = bare_id(step.splitlines()[-1] if step else "")
        try:
            return self._with_config(step_id, config, labels)
        finally:
            try:
                self.remove_image(step_id)
            except ContainerKernelError as e:  # its own sweep is the engine's prune
                self._log.warning("Could not remove a build's step image %s: %s", step_id, e)

    def _with_config(self, step_id: str, config: ImageConfig, labels: dict[str, str]) -> str:
        found = self._cli.json(["image", "inspect", step_id], what="inspect a committed build")
        layers = list(((found or [{}])[0].get("RootFS") or {}).get("Layers") or [])
        if not layers:
            raise EngineRefused("Podman committed a build container as an image of no layers.")
        folder = _private_folder()
        try:
            layout = os.path.join(folder, "image")
            blobs = os.path.join(layout, "blobs", "sha256")
            os.makedirs(blobs)
            # The base's layers are Podman's already: as empty files here, the push takes them
            # for written and writes the new layer only. None of them is read again: the load
            # finds each in Podman's store by its digest (a layer it does not find fails the
            # load, its empty file matching no digest).
            for digest in layers[:-1]:
                name = digest.removeprefix("sha256:")
                if not re.fullmatch(r"[0-9a-f]{64}", name):
                    raise EngineRefused(f"Podman names a layer {short(digest, 80)!r}.")
                with open(os.path.join(blobs, name), "xb"):
                    pass
            self._cli.run(
                ["push", "--quiet", step_id, f"oci:{layout}"],
                what="write a committed build's layer",
                timeout=self._cli.settings.api_timeout * 10,
            )
            image_id = _write_config(layout, config, labels)
            loaded = self._cli.run(
                ["load", "--quiet", "--input", layout],
                what="load a committed build",
                timeout=self._cli.settings.api_timeout * 10,
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        # The load names the image after the layout's path: that name goes, the image stays.
        for line in loaded.splitlines():
            name = line.partition("Loaded image:")[2].strip()
            if name and not name.startswith("sha256:"):
                try:
                    self._cli.run(["untag", image_id, name], what="untag a committed build")
                except PodmanFailed as e:
                    self._log.warning("Could not untag %s: %s", name, e.said)
        return f"sha256:{image_id}"


def _private_folder() -> str:
    """A new folder of this process's own (0700) in COMMIT_SPOOL. Its name is lowercase hex:
    ``podman load`` names what it loads after the layout's path, and refuses a path that is no
    image name (mkdtemp's letters may be capitals and "_")."""
    for _ in range(10):
        path = os.path.join(COMMIT_SPOOL, f"jgc-commit-{secrets.token_hex(8)}")
        try:
            os.mkdir(path, 0o700)  # fails where anything has the name: never another's
        except FileExistsError:
            continue
        return path
    raise EngineUnavailable(f"No private folder could be made in {COMMIT_SPOOL} for a commit.")


def _oci_config(config: ImageConfig, labels: dict[str, str]) -> dict[str, Any]:
    """The image's runtime config as OCI names its fields: ``config`` and ``labels`` (all of
    them: ``config.labels`` is the builder's, ``labels`` the image's in full), nothing else."""
    out: dict[str, Any] = {}
    if config.user:
        out["User"] = config.user
    if config.exposed_ports:
        out["ExposedPorts"] = {(p if "/" in p else f"{p}/tcp"): {} for p in config.exposed_ports}
    if config.env:
        out["Env"] = list(config.env)
    if config.entrypoint is not None:
        out["Entrypoint"] = list(config.entrypoint)
    if config.cmd is not None:
        out["Cmd"] = list(config.cmd)
    if config.volumes:
        out["Volumes"] = {v: {} for v in config.volumes}
    if config.workdir:
        out["WorkingDir"] = config.workdir
    if labels:
        out["Labels"] = dict(labels)
    if config.stop_signal:
        out["StopSignal"] = config.stop_signal
    return out


def _put_blob(blobs: str, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    return f"sha256:{digest}", len(data)


def _write_config(layout: str, config: ImageConfig, labels: dict[str, str]) -> str:
    """Replace the pushed image's config in the OCI layout ``layout`` by one the service
    writes: the pushed one's layers, history and platform, and ``config``/``labels`` as the
    runtime config. Its digest (the image id Podman will give it) without "sha256:"."""
    blobs = os.path.join(layout, "blobs", "sha256")

    def blob(digest: str) -> Any:
        name = digest.removeprefix("sha256:")
        if not re.fullmatch(r"[0-9a-f]{64}", name):
            raise EngineRefused(f"Podman's layout names a blob {short(digest, 80)!r}.")
        with open(os.path.join(blobs, name), "rb") as f:
            return json.load(f)

    with open(os.path.join(layout, "index.json"), "rb") as f:
        index = json.load(f)
    (entry,) = index["manifests"]
    manifest = blob(entry["digest"])
    pushed = blob(manifest["config"]["digest"])
    written: dict[str, Any] = {
        "created": pushed.get("created"),
        "architecture": pushed.get("architecture"),
        "os": pushed.get("os"),
        **({"variant": pushed["variant"]} if pushed.get("variant") else {}),
        "config": _oci_config(config, labels),
        "rootfs": pushed["rootfs"],
        "history": pushed.get("history") or [],
    }
    config_digest, config_size = _put_blob(
        blobs, json.dumps(written, separators=(",", ":")).encode()
    )
    manifest["config"] = {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": config_digest,
        "size": config_size,
    }
    manifest_digest, manifest_size = _put_blob(
        blobs, json.dumps(manifest, separators=(",", ":")).encode()
    )
    index["manifests"] = [
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
        }
    ]
    with open(os.path.join(layout, "index.json"), "w", encoding="utf-8") as out:
        json.dump(index, out)
    return as_image_id(config_digest).removeprefix("sha256:")
