"""Live kernel specs: one per local image, following the engine as images come and go.

A spec's name is derived from the image reference alone (a readable slug plus a short hash), so a
notebook's ``metadata.kernelspec.name`` maps back to the same image after any restart. Specs are
served from an in-memory map that a background thread keeps in step with the engine's image
events; ``get_kernel_spec`` is called synchronously by jupyter_client, so it must never wait on
Docker itself.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import re
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from traitlets import Bool, Dict, Float, List, Unicode

from ..base.errors import ContainerKernelError, EngineUnavailable, ImageMissing
from ..base.records import ImageRecord
from ..base.references import normalize_reference
from ..images import privateimages
from ..images.catalog import Framework, Retirement, describe_image, framework_with_probe
from ..images.probe import ProbeResult
from ..images.saves import lineage
from ..policy.admin_policy import image_allowed
from ..services import Services, services_for


class NoImageKernel(ContainerKernelError, NoSuchKernel):
    """No offered image has this kernel name: still a NoSuchKernel to jupyter_client."""

    status = 404
    reason_phrase = "No such kernel"


class HostKernelHidden(ContainerKernelError, NoSuchKernel):
    """A spec that does not run in a container, on a server that offers only container kernels
    (ContainerKernelSpecManager.show_host_kernels is False)."""

    status = 404
    reason_phrase = "No such kernel"


PROVISIONER_NAME = "gpu-containers-provisioner"
NAME_PREFIX = "gpuc-"
RESOURCES_DIR = str(Path(__file__).parent / "kernel_resources")
# A framework's own resource directory (its logo-svg.svg) under RESOURCES_DIR; RESOURCES_DIR
# itself holds the generic logo for every other image.
FRAMEWORK_RESOURCES = {
    "PyTorch": "pytorch",
    "TensorFlow": "tensorflow",
    "JAX": "jax",
    "RAPIDS": "rapids",
}
IPYKERNEL_ARGV = ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"]


def kernel_name_for(ref: str) -> str:
    """Stable kernel name for an image reference: ``gpuc-<slug>-<hash6>``.

    The slug keeps names readable in notebook metadata; the hash keeps references that slug alike
    (``a/b:c`` and ``a-b:c``, or tags differing only in case) apart.
    """
    ref = normalize_reference(ref)
    slug = re.sub(r"[^a-z0-9._-]+", "-", ref.lower()).strip("-.")[:80]
    digest = hashlib.sha256(ref.encode()).hexdigest()[:6]
    return f"{NAME_PREFIX}{slug}-{digest}"


def resource_dir_for(ref: str, framework: Framework | None) -> str:
    """The kernel spec's resource directory: its framework's logo where one is known (PyTorch,
    TensorFlow, JAX, RAPIDS), else the generic one. RAPIDS is no framework to the catalog (no
    single package says it): its images are known by their repository (``rapidsai/...``)."""
    key = FRAMEWORK_RESOURCES.get(framework.name) if framework else None
    if key is None:
        repository = normalize_reference(ref).split("@", 1)[0].rsplit(":", 1)[0].lower()
        if re.search(r"(?<![a-z0-9])rapids(?:ai)?(?![a-z0-9])", repository):
            key = "rapids"
    return str(Path(RESOURCES_DIR) / key) if key else RESOURCES_DIR


def display_name_for(ref: str, image: ImageRecord | None, probe: ProbeResult | None = None) -> str:
    """The Launcher's label: the framework and its version, else the Python version the readiness
    probe found, then the reference ("PyTorch 24.05 · nvcr.io/…", "Python 3.11 · jgc/demo:…");
    for an image a user saved, its name and what it was saved from.
    ``probe`` is an answer already known (never waited for); without one: "Python 3"."""
    env = image.env if image else {}
    labels = image.labels if image else {}
    framework = framework_with_probe(ref, env, labels, probe)
    if framework:
        head = framework.label()
    else:
        python = re.match(r"\d+\.\d+", probe.python_version) if probe else None
        head = f"Python {python.group(0)}" if python else "Python 3"
    saved = lineage(labels)
    if saved:  # a user's own saved (or built) image: its name, and what it came from
        how = "built on" if saved["recipe"] else "saved from"
        return f"{head} · {ref.rsplit('/', 1)[-1]} ({how} {saved['image']})"
    return f"{head} · {ref}"


def kernel_spec_dict(
    ref: str,
    image: ImageRecord | None,
    overrides: dict[str, Any] | None = None,
    probe: ProbeResult | None = None,
    listed: Mapping[str, Any] | None = None,
    retired: Retirement | None = None,
) -> dict[str, Any]:
    """The kernel.json content for an image: the provisioner with the image in its config.
    ``probe``: the readiness probe's answer for the image, when one is known already;
    ``listed``: the administrator's list entry for it (ImageCatalog), if any; ``retired``:
    whether the administrator retired it (the Launcher hides the spec of a retired image, and
    its notebooks offer the move; see ImageCatalog.deprecated_images)."""
    overrides = dict(overrides or {})
    env = image.env if image else {}
    framework = framework_with_probe(ref, env, image.labels if image else {}, probe)
    # The images list and the cluster view describe the image the same way (on Kubernetes, where
    # no engine reads the image's environment, its list entry is what says it is a GPU build).
    gpu_build = describe_image(ref, env, listed).gpu
    # The admin default GPU count: 1 for GPU builds, 0 for CPU ones (image_overrides may change it).
    provisioner_config = {"image": ref, "gpus": 1 if gpu_build else 0}
    provisioner_config.update(overrides.pop("provisioner", {}))
    spec: dict[str, Any] = {
        "argv": IPYKERNEL_ARGV,
        "display_name": display_name_for(ref, image, probe),
        "language": "python",
        "interrupt_mode": "signal",
        "env": {},
        "metadata": {
            "kernel_provisioner": {
                "provisioner_name": PROVISIONER_NAME,
                "config": provisioner_config,
            },
            "gpu_containers": {
                "image": ref,
                "image_id": image.id if image else "",
                "framework": framework.name if framework else "",
                "framework_version": (framework.version or framework.release) if framework else "",
                "gpu": gpu_build,
            },
        },
    }
    if retired is not None:
        spec["metadata"]["gpu_containers"]["retired"] = retired.to_json()
    for key in ("display_name", "env", "interrupt_mode", "language"):
        if key in overrides:
            spec[key] = overrides[key]
    return spec


@dataclass(frozen=True)
class _Entry:
    ref: str
    image: ImageRecord
    probe: ProbeResult | None = None  # its answer when this listing was made (display names)


class ContainerKernelSpecManager(KernelSpecManager):
    """Kernel specs from files (as usual) plus one per matching local Docker image."""

    image_include = List(
        Unicode(),
        ["*"],
        config=True,
        help="""Glob patterns of image references offered as kernels (matched against every tag
        of an image, e.g. "nvcr.io/nvidia/*" or "*pytorch*"). The default offers every tagged
        local image.""",
    )

    image_exclude = List(
        Unicode(),
        ["registry:*", "*/registry:*", "moby/buildkit:*"],
        config=True,
        help="""Glob patterns of image references never offered as kernels, even when they
        match image_include. Infrastructure images (registries, builders) are excluded by
        default.""",
    )

    image_overrides = Dict(
        config=True,
        help="""Per-image kernel spec overrides, keyed by a glob pattern of image references;
        the first matching pattern wins. Values may set "display_name", "env",
        "interrupt_mode" ("signal" or "message") and "provisioner": options of
        ContainerProvisioner for kernels of that image, e.g.
        {"nvcr.io/nvidia/*": {"provisioner": {"shm_size": "8g",
         "ulimits": {"memlock": -1, "stack": 67108864}}}}.""",
    )

    show_host_kernels = Bool(
        True,
        config=True,
        help="""Offer the kernel specs that run on the host, not in a container: the server's
        own "Python 3 (ipykernel)" (python3, which jupyter_client adds even where no spec is
        installed) and every spec installed on disk without this project's provisioner. False
        offers only container kernels (the specs of local images, and specs installed with
        `jupyter gpu-containers install-kernelspec`) and refuses to start a host kernel, with a
        404 as for a spec that does not exist: for hosts where notebook code must not run
        outside a container. (KernelSpecManager.ensure_native_kernel=False alone does not do
        it: it keeps python3 when ipykernel installed its spec on disk, and still starts it when
        asked by name.)""",
    )

    refresh_after = Float(
        5.0,
        config=True,
        help="""When no engine watcher runs (command-line use), re-list images at most this often,
        in seconds. Inside the Jupyter server a watcher follows the engine's image events.""",
    )

    engine_error = Unicode("", help="Why the last listing of images failed ('' when it worked).")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._entries: dict[str, _Entry] = {}
        self._refreshed_at = 0.0
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._relist_queued = threading.Event()
        self._watcher: threading.Thread | None = None
        # Reference -> why its image cannot run a kernel (the readiness probe's reason).
        self.not_ready: dict[str, str] = {}

    _own_services: Services | None = None

    @property
    def services(self) -> Services:
        """The server's shared objects (services.py); outside a server (the command line), a
        set of this manager's own, closed by :meth:`close`."""
        found = services_for(self)
        if found is not None:
            return found
        if self._own_services is None:
            self._own_services = Services(parent=self)
        return self._own_services

    def close(self) -> None:
        """Stop watching, and close what this manager made for itself outside a server."""
        self.stop_watching()
        own, self._own_services = self._own_services, None
        if own is not None:
            own.close()

    # ---------------------------------------------------------------- engine sync

    def refresh(self, wait_for_probes: bool = True) -> None:
        """Re-list local images (blocking: worker threads and start-up only).

        Images the readiness probe found unable to run a kernel are not offered (the catalog
        shows them, with the reason). Images not probed yet are probed here, a few at a time,
        unless ``wait_for_probes`` is False (server start-up, which must not wait on containers):
        then they are offered until their probe says otherwise. A probe's answer also gives the
        display name its framework or Python version; one arriving later re-lists (_probed).
        """
        with self._refresh_lock:
            try:
                images = self.services.backend.list_images_sync()
            except ContainerKernelError as e:
                self.engine_error = e.sentence
                self._entries = {}
                self._refreshed_at = time.monotonic()
                return
            services = self.services
            self._prune_private_records()
            candidates = [i for i in images if any(self._offered(ref) for ref in i.tags)]
            # Not another user's private pull (privateimages.py). A kernel service lists them
            # all and hides them per request, from each user but their owner (service_routes.py).
            if not self._in_service:
                candidates = privateimages.visible(
                    candidates, services.state, services.listed_images()
                )
            probes = self._probe_all(candidates, wait_for_probes)
            entries: dict[str, _Entry] = {}
            not_ready: dict[str, str] = {}
            for image in candidates:
                found = probes.get(image.id)
                refused = found is not None and found.definitive and not found.ready
                for ref in image.tags:
                    if not self._offered(ref):
                        continue
                    if refused:
                        not_ready[ref] = found.reason if found else ""
                    else:
                        entries[kernel_name_for(ref)] = _Entry(ref, image, found)
            # One atomic swap each: readers never see a half-built map.
            self._entries = entries
            self.not_ready = not_ready
            self.engine_error = ""
            self._refreshed_at = time.monotonic()

    @property
    def _in_service(self) -> bool:
        return bool(getattr(self.parent, "is_kernel_service", False))

    def _prune_private_records(self) -> None:
        """Private pulls' records end once no longer true (privateimages.prune): a kernel
        service settles every user's (its first listing: the pulls of a previous process are
        over), a user's own server its user's."""
        services = self.services
        backend = services.backend

        def current_id(ref: str) -> str | None:
            try:  # the engine's word now: the listing may be older than the record
                return backend.inspect_image_sync(ref).id
            except ImageMissing:
                return ""
            except Exception as e:  # the engine away, or an answer this cannot read
                self.log.warning("A private pull's record of %s stays for now: %s", ref, e)
                return None

        first = not self._private_records_settled
        self._private_records_settled = True
        owners = None if self._in_service else [os.geteuid()]
        try:
            ended = privateimages.prune(
                services.state, current_id, owners, settle=first and self._in_service
            )
        except (ContainerKernelError, OSError) as e:
            self.log.warning("Private pulls' records were not brought up to date: %s", e)
            return
        if ended:
            self.log.info(
                "%d private pull record(s) ended: their references are gone or name other images.",
                ended,
            )

    _private_records_settled = False

    def _probe_all(self, images: list[ImageRecord], wait: bool) -> dict[str, ProbeResult | None]:
        probe = self.services.probe
        results: dict[str, ProbeResult | None] = {i.id: probe.cached(i.id) for i in images}
        unprobed = [i for i in images if results[i.id] is None]
        if not unprobed:
            return results
        futures = [probe.in_background(image) for image in unprobed]
        if not wait:
            # Offered until the probe answers; then the next listing reflects the answer.
            for future in futures:
                future.add_done_callback(self._probed)
            return results
        for image, future in zip(unprobed, futures):  # the probe bounds containers at once
            with contextlib.suppress(Exception):
                # Under the listed id: on Kubernetes the answer's id is the digest the node ran,
                # which the next listing carries.
                results[image.id] = future.result()
        return results

    def _probed(self, _future: Future[ProbeResult]) -> None:
        """A background probe answered: the next read re-lists, or, under a watcher, one
        re-listing runs for all the answers that arrive meanwhile (not one per image)."""
        self._refreshed_at = 0.0
        if self._watcher is None or self._relist_queued.is_set():
            return
        self._relist_queued.set()
        threading.Thread(
            target=self._queued_refresh, name="gpu-containers-relist", daemon=True
        ).start()

    def _queued_refresh(self) -> None:
        self._relist_queued.clear()  # answers arriving from now on queue the next one
        self.refresh(wait_for_probes=False)

    def offers(self, ref: str) -> bool:
        """Whether ``ref`` is an image this server offers as a kernel (once it is found ready):
        the admin's allow-list, ``image_exclude`` and ``image_include`` all let it through."""
        return self._offered(ref)

    def _offered(self, ref: str) -> bool:
        if image_allowed(self.services.policy, ref):
            return False  # the admin's allow-list refuses it: not a kernel anyone may start
        if any(fnmatch.fnmatchcase(ref, pattern) for pattern in self.image_exclude):
            return False
        return any(fnmatch.fnmatchcase(ref, pattern) for pattern in self.image_include)

    def _listed_entry(self, ref: str) -> dict[str, Any] | None:
        """The administrator's list entry for ``ref`` (ImageCatalog), None if it is not listed."""
        return self.services.listed_entry(ref)

    def _overrides_for(self, ref: str) -> dict[str, Any]:
        for pattern, value in self.image_overrides.items():
            if fnmatch.fnmatchcase(ref, pattern):
                return dict(value)
        return {}

    def start_watching(self) -> None:
        """Follow image events in a daemon thread (the server calls this once it runs)."""
        if self._watcher is not None:
            return
        self._stop.clear()
        self._watcher = threading.Thread(
            target=self.services.backend.watch_images,
            args=(self.refresh, self._stop),
            name="gpu-containers-image-watcher",
            daemon=True,
        )
        self._watcher.start()

    def stop_watching(self) -> None:
        """Stop following image events; the watcher's thread ends at once."""
        self._stop.set()
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            self.services.backend.wake_watchers()
            watcher.join(10)

    def _maybe_refresh(self) -> None:
        if self._watcher is None and time.monotonic() - self._refreshed_at > self.refresh_after:
            # Possibly on the event loop (jupyter_client asks for specs synchronously): never
            # wait for probe containers here.
            self.refresh(wait_for_probes=False)

    # ---------------------------------------------------------------- KernelSpecManager API

    def image_entries(self) -> dict[str, tuple[str, ImageRecord]]:
        """Kernel name -> (image reference, image) for every offered image."""
        self._maybe_refresh()
        return {name: (e.ref, e.image) for name, e in self._entries.items()}

    def find_kernel_specs(self) -> dict[str, str]:
        specs = super().find_kernel_specs()
        if not self.show_host_kernels:
            specs = {name: path for name, path in specs.items() if self._on_disk_in_container(name)}
        self._maybe_refresh()
        for name, entry in self._entries.items():
            if self.allowed_kernelspecs and name not in self.allowed_kernelspecs:
                continue
            # A spec installed on disk wins.
            specs.setdefault(name, resource_dir_for(entry.ref, self._framework(entry)))
        return specs

    def _on_disk_in_container(self, kernel_name: str) -> bool:
        """Whether the spec jupyter_client finds under this name (on disk, or the native
        python3) runs in a container; an unreadable one does not count as one."""
        try:
            spec = super().get_kernel_spec(kernel_name)
        except Exception:
            return False
        return runs_in_container(spec)

    @staticmethod
    def _framework(entry: _Entry) -> Framework | None:
        return framework_with_probe(entry.ref, entry.image.env, entry.image.labels, entry.probe)

    def get_kernel_spec(self, kernel_name: str) -> Any:
        try:
            spec = super().get_kernel_spec(kernel_name)
        except NoSuchKernel:
            return self._image_kernel_spec(kernel_name)
        if not self.show_host_kernels and not runs_in_container(spec):
            # Hidden from the listing, and not started when asked for by name either (a
            # notebook whose metadata names python3, a client that asks for it).
            raise HostKernelHidden(
                f"The kernel spec {kernel_name} runs on the host, and this server offers only "
                "kernels that run in containers: choose one of them."
            )
        return spec

    def _image_kernel_spec(self, kernel_name: str) -> Any:
        """The spec of a local image's kernel, for a name no spec on disk has."""
        image_name = kernel_name.lower().startswith(NAME_PREFIX)
        if image_name:
            self._maybe_refresh()
        entry = self._entries.get(kernel_name.lower())
        if entry is None and self.engine_error and image_name:
            # An image's kernel asked for while the engine is away (its spec went with the
            # listing): say that, with a 503, not "no such kernel", which jupyter_server
            # answers with an unhandled 500.
            raise EngineUnavailable(self.engine_error)
        if entry is None and image_name:
            # A 404 with a sentence: jupyter_server answers a bare NoSuchKernel with an
            # unhandled 500.
            raise NoImageKernel(
                f"There is no kernel spec {kernel_name}: its image is not on this host, "
                "cannot run a kernel, or is not offered to you."
            )
        if entry is None or (
            self.allowed_kernelspecs and kernel_name not in self.allowed_kernelspecs
        ):
            raise NoSuchKernel(kernel_name)
        spec = kernel_spec_dict(
            entry.ref,
            entry.image,
            self._overrides_for(entry.ref),
            entry.probe,
            listed=self._listed_entry(entry.ref),
            retired=self.services.catalog.retirement(entry.ref),
        )
        return self.kernel_spec_class(
            resource_dir=resource_dir_for(entry.ref, self._framework(entry)), **spec
        )


def runs_in_container(spec: Any) -> bool:
    """Whether a kernel spec starts its kernel through this project's provisioner."""
    metadata = getattr(spec, "metadata", None)
    provisioner = metadata.get("kernel_provisioner") if isinstance(metadata, dict) else None
    return isinstance(provisioner, dict) and provisioner.get("provisioner_name") == (
        PROVISIONER_NAME
    )
