"""After a restart, a reattached kernel's notebook gets its session again (recovery.py's
restore_sessions), with jupyter_server's own session and kernel managers: a session is made only
for a kernel the server runs, never by starting one, and never over a notebook's own session."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from jupyter_server.services.contents.filemanager import AsyncFileContentsManager
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from jupyter_server.services.sessions.sessionmanager import SessionManager

from jupyter_gpu_containers.server.recovery import restore_sessions


def managers(tmp_path: Path) -> SessionManager:
    kernels = AsyncMappingKernelManager(root_dir=str(tmp_path))
    contents = AsyncFileContentsManager(root_dir=str(tmp_path))
    return SessionManager(kernel_manager=kernels, contents_manager=contents)


async def test_a_kernel_the_server_does_not_run_gets_no_session_and_none_is_started(
    tmp_path: Path,
) -> None:
    sessions = managers(tmp_path)
    gone = str(uuid.uuid4())
    restored = await restore_sessions(sessions, {gone: "lab.ipynb"}, logging.getLogger("t"))
    assert restored == 0
    assert await sessions.list_sessions() == []
    assert sessions.kernel_manager.list_kernel_ids() == []  # nothing was started for it
    sessions.close()


async def test_a_notebook_with_a_session_keeps_it_and_another_gets_its_kernels(
    tmp_path: Path,
) -> None:
    sessions = managers(tmp_path)
    kernels = sessions.kernel_manager
    first = await kernels.start_kernel(kernel_name="python3")
    second = await kernels.start_kernel(kernel_name="python3")
    try:
        own = await sessions.create_session(
            path="open.ipynb", name="open.ipynb", type="notebook", kernel_id=first
        )
        log = logging.getLogger("t")
        # A notebook opened since (its own session, its own kernel) keeps them.
        assert await restore_sessions(sessions, {second: "open.ipynb"}, log) == 0
        # A notebook without one gets the reattached kernel's.
        assert await restore_sessions(sessions, {second: "sub/lab.ipynb"}, log) == 1
        listed = {
            s["path"]: (s["name"], s["type"], s["kernel"]["id"])
            for s in await sessions.list_sessions()
        }
        assert listed == {
            "open.ipynb": ("open.ipynb", "notebook", first),
            "sub/lab.ipynb": ("lab.ipynb", "notebook", second),
        }
        assert (await sessions.get_session(path="open.ipynb"))["id"] == own["id"]
        assert sorted(kernels.list_kernel_ids()) == sorted([first, second])
    finally:
        await kernels.shutdown_all(now=True)
        sessions.close()
