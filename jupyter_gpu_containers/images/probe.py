"""Is an image kernel-ready? Ask a short-lived container of it, once per image id.

A kernel started on an image without Python or ipykernel fails only after its container ran, and
the Launcher would rather say so up front. So a probe container runs the kernel's own search for
an interpreter (command.find_python_and, after the image's ENTRYPOINT, as the image's
USER), but instead of starting ipykernel it imports it (which proves it works) and reports the
Python and ipykernel versions and the installed framework versions. Framework versions are read
from package metadata, never by importing the frameworks: importing torch or tensorflow takes
seconds and would pull in CUDA.

The answer is one marker-prefixed JSON line on stdout. Entrypoints print banners there too (NGC's
does), so only the marked line is parsed.

An image id names immutable content, so a definitive answer never goes stale: it is kept in
memory and in a per-user cache directory (one JSON file per image id) that outlives the server,
so a restarted server does not probe again. Timeouts and engine failures say nothing about the
image; such answers are never cached as the image's, but an image id whose probe failed so is not
probed again for a while (``failure_backoff``, doubling with each failure in a row, up to
``max_failure_backoff``): whoever asks meanwhile (a launch, the catalog, the kernel specs'
re-listing on every image event) gets that failure, and no container starts (issue 61: a
failing image's probes ran 38 times in 20 s with nobody asking).

An image that carries a key only this project's container records carry (labels.RECORD_KEYS)
is not run at all: its answer is a definitive "cannot run a kernel here", and the kernels,
builds and probes of every path refuse it (kernel/admission.py).

An answer is kept under the id of the image the probe container actually ran, as the backend
reports it (OneshotResult.image_id), else the id it was asked about. On Kubernetes there is no
local engine: a listed image's id is its reference until a pod of it has run, and the node's
content id ("sha256:…") from then on (k8s.py), so there too the answer is per digest, and a tag
that moves to a new image is probed anew.

Probes are containers: at most ``max_concurrent`` of them run at once for this server, and
concurrent requests for one image share one container.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from jupyter_core.paths import jupyter_data_dir
from traitlets import Dict, Float, Int, TraitError, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from ..backends.backend import ContainerBackend
from ..base import labels as L
from ..base.errors import ContainerKernelError
from ..base.records import ImageRecord, OneshotResult
from ..base.safefiles import private_dir, read_json_nofollow, write_json_atomic
from ..host.accounts import MAX_FILE_BYTES
from ..policy.admin_policy import ContainerPolicy
from ..policy.command import NO_PYTHON_MARKER, entrypoint_is_interpreter, find_python_and

MARKER = "JUPYTER_GPU_CONTAINERS_PROBE:"

# Framework -> the distribution names it ships under (CPU/GPU/CUDA-version builds), first found
# wins. Read from metadata only, so a GPU build's version is found on a host without GPUs too.
FRAMEWORK_DISTRIBUTIONS: list[tuple[str, list[str]]] = [
    ("torch", ["torch"]),
    ("tensorflow", ["tensorflow", "tensorflow-gpu", "tensorflow-cpu", "tf-nightly"]),
    ("jax", ["jax"]),
    (
        "mxnet",
        ["mxnet", "mxnet-mkl"]
        + [
            f"mxnet-cu{cuda}{mkl}"
            for cuda in (75, 80, 90, 91, 92, 100, 101, 102, 110, 112, 113, 114, 115, 116, 117, 118)
            for mkl in ("", "mkl")
        ],
    ),
    ("paddlepaddle", ["paddlepaddle", "paddlepaddle-gpu"]),
    ("keras", ["keras"]),
    ("cntk", ["cntk", "cntk-gpu"]),
]

# Runs as `python -c` in the image. Written for every Python an image may have, down to the 3.6 of
# older OpenPAI images and even 2.7: no f-strings, no annotations, importlib.metadata (3.8+) or its
# backport, else pkg_resources.
PROBE_CODE = (
    r"""
import sys

# As the kernel's start does (launchplan.KERNEL_BOOT): nothing is imported from the working
# directory, so the probe's answer is the kernel's.
if sys.path and sys.path[0] == "":
    del sys.path[0]

import json


def ipykernel_answer(out):
    try:
        import ipykernel.kernelapp  # what ipykernel_launcher imports: zmq, tornado, IPython too
        import ipykernel
        out["ipykernel_version"] = str(getattr(ipykernel, "__version__", "") or "unknown")
    except BaseException as e:  # whatever the import raises is the answer
        text = str(e)
        if not (isinstance(e, ImportError) and text):
            text = "%s: %s" % (type(e).__name__, text)
        out["ipykernel_error"] = text


def version_lookup():
    try:
        from importlib.metadata import version
        return version
    except ImportError:
        pass
    try:
        from importlib_metadata import version
        return version
    except ImportError:
        pass
    try:
        import pkg_resources
    except BaseException:
        return None
    return lambda name: pkg_resources.get_distribution(name).version


def frameworks():
    found = {}
    lookup = version_lookup()
    if lookup is None:
        return found
    for key, names in @FRAMEWORKS@:
        for name in names:
            for candidate in (name, name.replace("-", "_")):
                try:
                    version = lookup(candidate)
                except BaseException:  # not installed: each metadata library says so its way
                    version = None
                if version:
                    found[key] = str(version)
                    break
            if key in found:
                break
    return found


def accounts():
    # The image's own account files, for the kernel's copies of them (accounts.py).
    found = {}
    for name in ("passwd", "group"):
        try:
            with open("/etc/" + name, "rb") as f:
                found[name] = f.read(@MAX_BYTES@).decode("utf-8", "replace")
        except BaseException:
            pass
    return found


out = {
    "python": sys.executable or sys.argv[-1],
    "python_version": "%d.%d.%d" % tuple(sys.version_info[:3]),
}
ipykernel_answer(out)
out["frameworks"] = frameworks()
out["accounts"] = accounts()
sys.stdout.write("\n" + "@MARKER@" + json.dumps(out, sort_keys=True) + "\n")
sys.stdout.flush()
""".replace("@FRAMEWORKS@", repr(FRAMEWORK_DISTRIBUTIONS))
    .replace("@MARKER@", MARKER)
    .replace("@MAX_BYTES@", str(MAX_FILE_BYTES))
)

# The kernel's own interpreter search, so the probe finds exactly the Python a kernel would use;
# only the final exec differs. The code comes as $1 and the name the interpreter was found by as
# its argument (for a Python that cannot tell its own sys.executable).
PROBE_SCRIPT = find_python_and('exec "$py" -c "$1" "$py"')
PROBE_COMMAND = ["sh", "-c", PROBE_SCRIPT, "jupyter-gpu-containers-probe", PROBE_CODE]

# Cache files carry the probe they came from: a changed probe (more frameworks, say) asks again.
PROBE_FORMAT = hashlib.sha256((PROBE_SCRIPT + PROBE_CODE).encode()).hexdigest()[:16]

_IMAGE_ID = re.compile(r"([a-z0-9]+):([0-9a-f]{16,128})")


@dataclass(frozen=True)
class ProbeResult:
    """What a probe found out about one image (by id)."""

    image_id: str
    ready: bool  # a kernel can start on this image
    reason: str  # "" when ready; else a sentence saying why not, or why there is no answer
    python: str  # the interpreter a kernel would use, as an absolute path
    python_version: str
    ipykernel_version: str
    frameworks: dict[str, str]  # e.g. {"torch": "2.4.0"}, from package metadata
    probed_at: float  # unix time of the probe (for a cached answer: of the original probe)
    definitive: bool  # False for timeouts and engine errors: never cached, asked again next time
    # The image's /etc/passwd and /etc/group as read by the probe ({} when unknown), for the
    # kernel's own copies (accounts.py). Image metadata: hostile until accounts.py parses it.
    accounts: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ProbeResult:
        """The inverse of to_dict; ValueError for anything that is not one."""
        kinds: dict[str, type | tuple[type, ...]] = {
            "image_id": str,
            "ready": bool,
            "reason": str,
            "python": str,
            "python_version": str,
            "ipykernel_version": str,
            "frameworks": dict,
            "probed_at": (int, float),
            "definitive": bool,
            "accounts": dict,
        }
        if not isinstance(data, dict) or set(data) != set(kinds):
            raise ValueError(f"expected an object with the fields {sorted(kinds)}")
        for name, kind in kinds.items():
            if not isinstance(data[name], kind):
                raise ValueError(f"{name} has the wrong type")
        frameworks = data["frameworks"]
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in frameworks.items()):
            raise ValueError("frameworks must map names to versions")
        accounts = data["accounts"]
        if not all(k in ("passwd", "group") and isinstance(v, str) for k, v in accounts.items()):
            raise ValueError("accounts must map passwd and group to their text")
        return cls(**{**data, "probed_at": float(data["probed_at"])})


class KernelReadinessProbe(LoggingConfigurable):
    """Answers "can a kernel start on this image?" with a short-lived container per image id.

    One per server (services.py): the concurrency bound and the in-memory cache are per
    instance.
    """

    timeout = Float(
        30.0,
        config=True,
        help="""Seconds a probe container may run (the image's ENTRYPOINT, then Python importing
        ipykernel) before it is killed. A timed-out probe is not cached as the image's answer;
        it is tried again once KernelReadinessProbe.failure_backoff has passed.""",
    )

    failure_backoff = Float(
        60.0,
        config=True,
        help="""Seconds an image whose probe failed without an answer about the image (a
        timeout, a crash, the engine's refusal) is not probed again: requests meanwhile get
        that failure. Each further failure in a row doubles it, up to max_failure_backoff. 0
        probes again on the next request.""",
    )

    max_failure_backoff = Float(
        3600.0,
        config=True,
        help="""The longest KernelReadinessProbe.failure_backoff grows to, in seconds.""",
    )

    max_concurrent = Int(
        2,
        config=True,
        help="""Probe containers this server runs at once; further probes wait their turn. Each
        one loads Python and ipykernel, so a small host should not start many together.""",
    )

    extra_labels = Dict(
        config=True,
        help="""Extra labels for probe containers. The project's own labels
        (org.jupyter.gpu-containers.*) cannot be overridden.""",
    )

    cache_dir = Unicode(
        config=True,
        help="""Directory for probe answers, one JSON file per image id, kept across server
        restarts: this user's own, mode 0700 (created so; one that is not is not used). Empty
        means <jupyter data dir>/gpu_containers/probes.""",
    )

    @default("cache_dir")
    def _default_cache_dir(self) -> str:
        return os.path.join(jupyter_data_dir(), "gpu_containers", "probes")

    @validate("timeout")
    def _validate_timeout(self, proposal: Any) -> float:
        if proposal["value"] <= 0:
            raise TraitError("KernelReadinessProbe.timeout must be positive")
        return float(proposal["value"])

    @validate("max_concurrent")
    def _validate_max_concurrent(self, proposal: Any) -> int:
        if proposal["value"] < 1:
            raise TraitError("KernelReadinessProbe.max_concurrent must be at least 1")
        return int(proposal["value"])

    def __init__(
        self,
        *,
        backend: ContainerBackend,
        policy: ContainerPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # The backend Services built (services.py), or a test's own: the probe never builds an
        # engine. The policy: the server's, else one of its own.
        self.backend: ContainerBackend = backend
        self.policy = policy or ContainerPolicy(parent=self)
        self._lock = threading.Lock()
        self._memory: dict[str, ProbeResult] = {}
        # Image id -> the answer being worked out, shared by everyone asking meanwhile, and the
        # reference it was asked under (see _earlier_for_the_reference).
        self._inflight: dict[str, Future[ProbeResult]] = {}
        self._inflight_refs: dict[str, str] = {}
        # Image id -> its last failed answer, until when it stands (monotonic), failures in a
        # row: one per image id the engine listed, replaced, never more.
        self._failures: dict[str, tuple[ProbeResult, float, int]] = {}
        self._slots = threading.BoundedSemaphore(self.max_concurrent)
        self._executor_instance: ThreadPoolExecutor | None = None

    @property
    def _executor(self) -> ThreadPoolExecutor:
        # Its own pool: a probe blocks its thread for up to `timeout`, which must not starve the
        # engine's pool that kernel starts and the REST API share.
        with self._lock:
            if self._executor_instance is None:
                self._executor_instance = ThreadPoolExecutor(
                    max_workers=self.max_concurrent, thread_name_prefix="gpu-containers-probe"
                )
            return self._executor_instance

    # ---------------------------------------------------------------- public API

    def cached(self, image_id: str) -> ProbeResult | None:
        """A definitive answer already known (memory, then disk), without starting anything."""
        hit = self._memory.get(image_id)
        if hit is None:
            hit = self._read_cache_file(image_id)
            if hit is not None:
                with self._lock:
                    self._memory[image_id] = hit
        return hit

    def probe_sync(self, image: ImageRecord) -> ProbeResult:
        """The answer for ``image``: cached, or from a probe container. Blocking (for up to the
        timeout plus the wait for a free slot): call from a worker thread only."""
        hit = self._memory.get(image.id)
        if hit is not None:
            return hit
        future, owner = self._claim(image)
        if owner:
            self._resolve(image, future)
        return future.result()

    def in_background(self, image: ImageRecord) -> Future[ProbeResult]:
        """The answer for ``image`` as a future, worked out on the probe's own threads; never
        blocks the caller."""
        hit = self._memory.get(image.id)
        if hit is not None:
            done: Future[ProbeResult] = Future()
            done.set_result(hit)
            return done
        future, owner = self._claim(image)
        if owner:
            try:
                self._executor.submit(self._resolve, image, future)
            except RuntimeError as e:  # the pool was shut down: nobody else will answer
                self._settle(image.id, future, e)
        return future

    async def probe(self, image: ImageRecord) -> ProbeResult:
        """:meth:`probe_sync`, off the event loop."""
        # Waiters hold no thread: only the owner's probe occupies one.
        return await asyncio.wrap_future(self.in_background(image))

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no probe is in flight (each then has removed its container); False when
        some still run after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                pending = list(self._inflight.values())
            if not pending:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            wait(pending, timeout=remaining)

    def wait_for(self, image_id: str, timeout: float) -> bool:
        """Wait (blocking) for the probe of ``image_id`` under way, if any, to end (its container
        removed with it); whether there was one."""
        with self._lock:
            future = self._inflight.get(image_id)
        if future is None:
            return False
        wait([future], timeout=timeout)
        return True

    def close(self) -> None:
        """Let the probe threads end once idle. Probes already asked for still run (someone
        waits for each), and every probe removes its container."""
        with self._lock:
            executor, self._executor_instance = self._executor_instance, None
        if executor is not None:
            executor.shutdown(wait=False)

    # ---------------------------------------------------------------- one answer per image id

    def _claim(self, image: ImageRecord) -> tuple[Future[ProbeResult], bool]:
        """The in-flight answer for ``image``, and whether the caller must work it out."""
        with self._lock:
            future = self._inflight.get(image.id)
            if future is not None:
                return future, False
            future = Future()
            # Running from the start, so that no waiter's cancellation can cancel it for all.
            future.set_running_or_notify_cancel()
            # Dicts keep insertion order: the claims made before this one come first.
            self._inflight[image.id] = future
            self._inflight_refs[image.id] = image.tags[0] if image.tags else ""
            return future, True

    def _earlier_for_the_reference(self, image: ImageRecord) -> list[Future[ProbeResult]]:
        """The answers in flight for other ids of ``image``'s reference, claimed before it. On
        Kubernetes a probe asked under the reference tells the backend the digest its node ran
        before the answer is kept under that digest: a listing meanwhile asks for the digest,
        whose answer is the one on its way. Only earlier claims: two never wait on each other."""
        ref = image.tags[0] if image.tags else ""
        with self._lock:
            earlier = []
            for image_id, future in self._inflight.items():
                if image_id == image.id:
                    break
                if ref and self._inflight_refs.get(image_id) == ref:
                    earlier.append(future)
            return earlier

    def _settle(
        self, image_id: str, future: Future[ProbeResult], outcome: ProbeResult | BaseException
    ) -> None:
        """Hand ``outcome`` to everyone waiting; the next request for the image starts afresh
        (and finds a definitive answer in the caches)."""
        with self._lock:
            if self._inflight.get(image_id) is future:
                del self._inflight[image_id]
                self._inflight_refs.pop(image_id, None)
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    def _resolve(self, image: ImageRecord, future: Future[ProbeResult]) -> None:
        try:
            earlier = self._earlier_for_the_reference(image)
            if earlier:
                wait(earlier, timeout=self.timeout + 60)  # each ends by its own timeout
            result = self.cached(image.id) or self._recent_failure(image.id)
            if result is None:
                result = self._run_probe(image)
        except BaseException as e:  # a bug, not an answer: every waiter sees it
            self._settle(image.id, future, e)
            if not isinstance(e, Exception):
                raise
            return
        self._settle(image.id, future, result)

    def _recent_failure(self, image_id: str) -> ProbeResult | None:
        """The failed answer ``image_id`` got less than its backoff ago, if any."""
        with self._lock:
            found = self._failures.get(image_id)
        if found is None or time.monotonic() >= found[1]:
            return None
        return found[0]

    def _remember(self, result: ProbeResult, asked: str) -> None:
        """Keep ``result``: a definitive one for good (memory and disk), a failure for its
        backoff (memory)."""
        with self._lock:
            if result.definitive:
                self._memory[result.image_id] = result
                self._failures.pop(asked, None)
            else:
                count = self._failures.get(asked, (result, 0.0, 0))[2] + 1
                wait = min(self.failure_backoff * 2 ** min(count - 1, 30), self.max_failure_backoff)
                self._failures[asked] = (result, time.monotonic() + wait, count)
        if result.definitive:
            self._write_cache_file(result)

    def _run_probe(self, image: ImageRecord) -> ProbeResult:
        ref = image.tags[0] if image.tags else image.id
        forged = L.image_record_labels(image.labels)
        if forged:
            # Never run: its labels would pass for this service's records (issue 61).
            result = _no_answer(
                image.id,
                "The image carries labels that only this service's own containers may carry "
                f"({', '.join(forged)[:300]}): build it without labels named "
                "org.jupyter.gpu-containers.*.",
                definitive=True,
            )
            self._remember(result, image.id)
            return result
        container_labels = {
            **{str(k): str(v) for k, v in self.extra_labels.items()},
            L.PROBE: "true",
            L.IMAGE: ref,
            L.OWNER_PROCESS: L.OwnerProcess.current().token(),
            L.UID: str(os.getuid()),
        }
        policy = self.policy
        with self._slots:
            started = time.monotonic()
            try:
                # By id, not tag: the answer is cached under the id, and a tag may move meanwhile
                # (a backend that can only run the tag says which content ran: output.image_id).
                output = self.backend.run_oneshot_sync(
                    image.id,
                    PROBE_COMMAND,
                    labels=container_labels,
                    timeout=self.timeout,
                    # As the kernel starts: the image's ENTRYPOINT unless it is the interpreter.
                    entrypoint=[] if entrypoint_is_interpreter(image.entrypoint) else None,
                    user=None,  # the image's USER
                    # The kernels' hardening: a probe that passes predicts a kernel that starts.
                    cap_add=list(policy.cap_add),
                    no_new_privileges=policy.no_new_privileges,
                    # A probe sees no GPU: CUDA images default to "all", and on a host whose
                    # default runtime is NVIDIA's the probe would briefly see every GPU.
                    environment={"NVIDIA_VISIBLE_DEVICES": "void"},
                )
            except ContainerKernelError as e:  # ImageMissing, EngineRefused, EngineUnavailable
                # The engine's sentence, naming the image as users know it rather than by id.
                result = _no_answer(image.id, e.sentence.replace(image.id, ref))
            else:
                # The answer is the content's that ran: on Kubernetes the node resolves a
                # reference (or a tag moved since the listing), and only its pod tells which
                # image that was.
                result = interpret(output.image_id or image.id, output, self.timeout)
            elapsed = time.monotonic() - started
        self.log.info(
            "Readiness probe of %s took %.2f s: %s",
            ref,
            elapsed,
            "ready" if result.ready else result.reason,
        )
        self._remember(result, image.id)
        return result

    # ---------------------------------------------------------------- disk cache

    def _cache_dir_or_none(self) -> str | None:
        """The cache directory, if it is a directory of this user's that no one else can write."""
        path = self.cache_dir or self._default_cache_dir()
        try:
            return private_dir(path, what="readiness probe cache (KernelReadinessProbe.cache_dir)")
        except (OSError, ContainerKernelError) as e:
            self.log.warning("Readiness probe answers are not kept on disk: %s", e)
            return None

    def _cache_path(self, image_id: str, directory: str) -> str | None:
        m = _IMAGE_ID.fullmatch(image_id)
        return os.path.join(directory, f"{m[1]}-{m[2]}.json") if m else None

    def _read_cache_file(self, image_id: str) -> ProbeResult | None:
        directory = self._cache_dir_or_none()
        path = self._cache_path(image_id, directory) if directory else None
        if path is None:
            return None
        try:
            data = read_json_nofollow(path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            self.log.warning("Ignoring readiness probe cache file %s: %s", path, e)
            return None
        if not isinstance(data, dict) or data.get("format") != PROBE_FORMAT:
            return None  # written by another version of the probe
        try:
            result = ProbeResult.from_dict(data.get("result"))
        except ValueError as e:
            self.log.warning("Ignoring readiness probe cache file %s: %s", path, e)
            return None
        if result.image_id != image_id or not result.definitive:
            return None
        return result

    def _write_cache_file(self, result: ProbeResult) -> None:
        directory = self._cache_dir_or_none()
        path = self._cache_path(result.image_id, directory) if directory else None
        if directory is None or path is None:
            return
        try:
            # Atomic: a reader (another server of this user) sees the old file or the new one.
            write_json_atomic(
                directory,
                os.path.basename(path),
                {"format": PROBE_FORMAT, "result": result.to_dict()},
            )
        except OSError as e:
            self.log.warning("Could not write readiness probe cache file %s: %s", path, e)


def parse_answer(stdout: str) -> dict[str, Any] | None:
    """The probe's JSON answer: the last marked line (banners may precede it, even on its line)."""
    for line in reversed(stdout.splitlines()):
        at = line.rfind(MARKER)
        if at < 0:
            continue
        try:
            data = json.loads(line[at + len(MARKER) :])
        except ValueError:
            continue
        if isinstance(data, dict):
            return data
    return None


def interpret(image_id: str, output: OneshotResult, timeout: float) -> ProbeResult:
    """A probe container's output, as an answer."""
    if output.timed_out:
        return _no_answer(
            image_id,
            f"The probe timed out after {timeout:g} s: the image's ENTRYPOINT or its Python did "
            "not finish in time. It will be tried again.",
        )
    answer = parse_answer(output.stdout)
    if answer is None:
        for line in output.stderr.splitlines():
            if NO_PYTHON_MARKER in line:
                looked = line.split(NO_PYTHON_MARKER, 1)[1].strip()  # "in this image (looked …)"
                return _no_answer(
                    image_id,
                    f"No Python interpreter {looked}. Choose an image with Python and "
                    "ipykernel, or set JUPYTER_GPU_CONTAINERS_PYTHON in the kernel spec's env.",
                    definitive=True,  # the image itself lacks Python: worth remembering
                )
        tail = "\n".join((output.stderr.strip() or output.stdout.strip()).splitlines()[-10:])
        said = f" Last lines of its output:\n{tail}" if tail else " It printed nothing."
        # Not definitive: an OOM kill or a crash may be this run's, not the image's.
        return _no_answer(
            image_id,
            f"The probe container exited with code {output.exit_code} before Python answered."
            f"{said}",
        )
    python = str(answer.get("python") or "")
    version = str(answer.get("python_version") or "")
    ipykernel_version = str(answer.get("ipykernel_version") or "")
    found = answer.get("frameworks")
    frameworks = {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}
    read = answer.get("accounts")
    accounts = {
        k: v[:MAX_FILE_BYTES]
        for k, v in (read.items() if isinstance(read, dict) else ())
        if k in ("passwd", "group") and isinstance(v, str)
    }
    reason = ""
    if not ipykernel_version:
        error = str(answer.get("ipykernel_error") or "unknown error")
        reason = (
            f"Python {version} at {python} cannot import ipykernel: {error}. "
            "Install ipykernel in the image (pip install ipykernel)."
        )
    return ProbeResult(
        image_id=image_id,
        ready=not reason,
        reason=reason,
        python=python,
        python_version=version,
        ipykernel_version=ipykernel_version,
        frameworks=frameworks,
        probed_at=time.time(),
        definitive=True,
        accounts=accounts,
    )


def _no_answer(image_id: str, reason: str, definitive: bool = False) -> ProbeResult:
    """Not ready, with no Python facts; by default not definitive (this run's failure)."""
    return ProbeResult(
        image_id=image_id,
        ready=False,
        reason=reason,
        python="",
        python_version="",
        ipykernel_version="",
        frameworks={},
        probed_at=time.time(),
        definitive=definitive,
    )
