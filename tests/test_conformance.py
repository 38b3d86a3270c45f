"""jupyter_kernel_test's conformance suite (``KernelTests``: the messaging protocol as
jupyter_kernel_test checks it for the IPython kernel) against container kernels, both ways a
client reaches one:

- **directly**: jupyter_client's ``KernelManager`` starts the kernel from a kernel spec on disk
  that names this project's provisioner (the Debian test image), and its ``BlockingKernelClient``
  talks ZMQ to the container, as nbclient or VS Code would;
- **through the kernel service**: a real ``jupyter gpu-containers serve`` process, a student
  account outside the docker group with a token of its own, the kernel started with
  ``POST /api/kernels`` and every message over the service's kernel websocket, by the stock
  ``GatewayKernelClient`` of jupyter_server (what a user's server with ``--gateway-url`` uses),
  given the student's token.

One kernel per class (setUpClass), shared by its tests, as jupyter_kernel_test intends.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, ClassVar

# The module, never its classes, in this module's namespace: pytest would collect KernelTests
# itself, which starts the host's own python3 kernel.
import jupyter_kernel_test
import websocket
from conftest import DEBIAN_IMAGE, install_spec, kernel_name
from hostusers import MALLORY, needs_accounts
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from jupyter_client.utils import run_sync  # type: ignore[attr-defined]
from jupyter_server.gateway.managers import GatewayKernelClient
from service_process import KernelService, ServiceUser
from traitlets.config import Config

# A user of the service outside the docker group: a student when the test set-up made them.
STUDENT = os.environ.get("JGC_TEST_STUDENT_A") or MALLORY
START_TIMEOUT = 120


class PythonKernelSamples:
    """What jupyter_kernel_test checks of an IPython kernel: the samples of its own test of
    ipykernel (``test_ipykernel.py``), which container kernels must pass as a local one does."""

    language_name = "python"
    file_extension = ".py"
    code_hello_world = "print('hello, world')"
    code_stderr = "import sys; print('test', file=sys.stderr)"
    completion_samples: ClassVar[list[dict[str, Any]]] = [{"text": "zi", "matches": {"zip"}}]
    complete_code_samples: ClassVar[list[str]] = [
        "1",
        "print('hello, world')",
        "def f(x):\n  return x*2\n\n\n",
    ]
    incomplete_code_samples: ClassVar[list[str]] = ["print('''hello", "def f(x):\n  x*2"]
    invalid_code_samples: ClassVar[list[str]] = ["import = 7q"]
    code_page_something = "zip?"
    code_generate_error = "raise"
    code_execute_result: ClassVar[list[dict[str, str]]] = [
        {"code": "1+2+3", "result": "6"},
        {"code": "[n*n for n in range(1, 4)]", "result": "[1, 4, 9]"},
    ]
    code_display_data: ClassVar[list[dict[str, str]]] = [
        {
            "code": "from IPython.display import HTML, display; display(HTML('<b>test</b>'))",
            "mime": "text/html",
        },
        {
            "code": "from IPython.display import Math, display; display(Math('\\\\frac{1}{2}'))",
            "mime": "text/latex",
        },
    ]
    code_history_pattern = "1?2*"
    # As jupyter_kernel_test checks ipykernel itself: a "range" of the running session reads the
    # history database, which ipykernel writes behind, so a local kernel fails it too.
    supported_history_operations = ("tail", "search")
    code_inspect_sample = "zip"
    code_clear_output = "from IPython.display import clear_output; clear_output()"


# How long a message of an execution may take to arrive once jupyter_kernel_test waits for it.
OUTPUT_PATIENCE = 30.0


class PatientOutputs:
    """jupyter_kernel_test's ``execute_helper`` reads an execution's IOPub messages (busy, its
    outputs, idle) with a 0.1 s (busy: 1 s) timeout each, once the shell reply is in. The
    protocol promises their order on each channel, not their timing across channels: on a
    loaded machine, and through the service's websocket above all, idle can come later than
    that after the reply. Within ``execute_helper`` every read expects a message (it stops at
    idle), so each may wait OUTPUT_PATIENCE seconds; elsewhere (``flush_channels``, which
    reads until nothing comes) the suite's own timeouts stand."""

    kc: Any

    def execute_helper(self, *args: Any, **kwargs: Any) -> Any:
        channel = self.kc.iopub_channel
        get_msg = channel.get_msg

        def patient(timeout: float | None) -> float | None:
            return None if timeout is None else max(timeout, OUTPUT_PATIENCE)

        if inspect.iscoroutinefunction(get_msg):  # the gateway client's channels are async

            async def waiting(*a: Any, timeout: float | None = None, **k: Any) -> Any:
                return await get_msg(*a, timeout=patient(timeout), **k)

            channel.get_msg = waiting
        else:
            channel.get_msg = lambda *a, timeout=None, **k: get_msg(
                *a, timeout=patient(timeout), **k
            )
        try:
            return super().execute_helper(*args, **kwargs)  # type: ignore[misc]
        finally:
            channel.get_msg = get_msg


class TestContainerKernelDirectly(
    PatientOutputs, PythonKernelSamples, jupyter_kernel_test.KernelTests
):
    """A container kernel started by jupyter_client alone, from a kernel spec on disk."""

    spec_dir: ClassVar[Path]

    @classmethod
    def setUpClass(cls) -> None:
        cls.spec_dir = Path(tempfile.mkdtemp(prefix="jgc-conformance-"))
        name = install_spec(cls.spec_dir, "jgc-conformance", DEBIAN_IMAGE)
        (cls.spec_dir / "work").mkdir()
        ksm = KernelSpecManager(kernel_dirs=[str(cls.spec_dir / "kernels")])
        # As root (sessions, CI) the kernel runs as root too, which must be allowed explicitly.
        allow_root = Config({"ContainerPolicy": {"allow_root": os.getuid() == 0}})
        cls.km = KernelManager(kernel_name=name, kernel_spec_manager=ksm, config=allow_root)
        try:
            cls.km.start_kernel(cwd=str(cls.spec_dir / "work"))
            cls.kc = cls.km.client()
            cls.kc.start_channels()
            cls.kc.wait_for_ready(timeout=START_TIMEOUT)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            if getattr(cls, "kc", None) is not None:
                cls.kc.stop_channels()
            if cls.km.has_kernel:
                cls.km.shutdown_kernel()
        finally:
            shutil.rmtree(cls.spec_dir, ignore_errors=True)


class ServiceKernelClient(GatewayKernelClient):
    """jupyter_server's stock client of a kernel behind a gateway (messages over the kernel's
    websocket), with the two things jupyter_kernel_test needs of it: the user's token on the
    websocket (the stock client takes its URL and token from the GatewayClient singleton of a
    server, which a test has none of), and blocking calls where jupyter_kernel_test makes them
    (it calls ``get_shell_msg`` without awaiting it; channel reads it runs to completion
    itself)."""

    def __init__(self, kernel_id: str, url: str, token: str, **kwargs: Any) -> None:
        super().__init__(kernel_id=kernel_id, **kwargs)
        self.ws_url = f"ws{url.removeprefix('http')}/api/kernels/{kernel_id}/channels"
        self.token = token

    def start_channels_blocking(self) -> None:
        self.channel_socket = websocket.create_connection(
            self.ws_url,
            header=[f"Authorization: token {self.token}"],
            timeout=START_TIMEOUT,
            enable_multithread=True,
        )
        # What GatewayKernelClient.start_channels does once it has its socket.
        super(GatewayKernelClient, self).start_channels()
        self.response_router = threading.Thread(target=self._route_responses, daemon=True)
        self.response_router.start()

    def get_shell_msg(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return run_sync(self._async_get_shell_msg)(*args, **kwargs)  # type: ignore[no-any-return]


@needs_accounts
class TestContainerKernelThroughTheService(
    PatientOutputs, PythonKernelSamples, jupyter_kernel_test.KernelTests
):
    """A container kernel of a student (outside the docker group), started through a real kernel
    service's kernels API and reached over its websocket only."""

    service: ClassVar[KernelService]
    user: ClassVar[ServiceUser]
    kernel_id: ClassVar[str] = ""

    @classmethod
    def setUpClass(cls) -> None:
        cls.service = KernelService()
        try:
            cls.user = cls.service.add_user(STUDENT)
            cls.service.start()
            cls.kernel_id = asyncio.run(
                cls.service.start_kernel(cls.user, kernel_name(DEBIAN_IMAGE))
            )
            client = ServiceKernelClient(cls.kernel_id, cls.service.url, cls.user.token)
            cls.kc = client  # type: ignore[assignment]
            client.start_channels_blocking()
            run_sync(client.wait_for_ready)(timeout=START_TIMEOUT)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            client = getattr(cls, "kc", None)
            if client is not None and client.response_router is not None:
                with contextlib.suppress(websocket.WebSocketException, OSError):
                    client.stop_channels()
            if cls.kernel_id:
                code, said = asyncio.run(
                    cls.service.answer(cls.user, "DELETE", f"api/kernels/{cls.kernel_id}")
                )
                assert code == 204, (code, said)
        finally:
            cls.service.close()
