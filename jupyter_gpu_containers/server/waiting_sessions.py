"""jupyter_server's session manager, listing a session whose kernel waits for a GPU.

A start through the stock sessions API (the Launcher, opening a notebook) that waits in the GPU
queue (gpuqueue.py), or in the engine's own scheduler (a Slurm job that pends: the placement's
scheduler_waiting_ids), has no session row yet: jupyter_server saves the row once the kernel runs.
A page polling ``GET /api/sessions`` meanwhile would not know the notebook is starting at all,
so its session is listed with its kernel's ``execution_state`` "waiting for a GPU", under the
kernel id the start will have (chosen here, before the start, so that the two agree). Once the
wait ends, the session stays listed, "starting", until jupyter_server saves its row: a page that
saw it wait and then found it missing (a cluster's container takes seconds to start after its
job does) would take the session for ended, and drop its kernel and the cells run meanwhile.

A waiting session is its notebook's, whatever path the request named: JupyterLab asks for a
session under a path of its own making (``<folder>/<uuid>``, the notebook's file name beside it)
and moves the session to the notebook's path once it has it. So the listing names the notebook's
path (a reload, a second tab, the file browser find it), and a request for a session of a
notebook whose start is under way joins that start, never a second one: its answer is the
waiting session, under the request's own path (JupyterLab shuts down a session that comes back
under another path than it asked for, taking it for an older request's).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from jupyter_client.multikernelmanager import DuplicateKernelError
from jupyter_server.services.sessions.sessionmanager import KernelName, ModelName, SessionManager
from jupyter_server.utils import ensure_async
from tornado import web

from ..gpus.notebook_requests import api_path_of_session

WAITING_STATE = "waiting for a GPU"
_CANCEL_FIRST = (
    "This notebook's kernel is waiting for a GPU: cancel that start (the GPU Containers "
    "panel's queue, or Shut Down) before choosing another kernel."
)
# A start that waited, whose kernel launches now (JupyterLab's own word for it).
LAUNCHING_STATE = "starting"


class StartsUnderWay:
    """A kernel manager's starts under way, from their first step to their end, and how each is
    listed: "waiting for a GPU" while it waits; "starting" once it waited, until its kernel runs
    (a page that saw it wait and then missed it would take the kernel for ended, and drop it and
    the cells run meanwhile); not at all if it never waited (the stock APIs list a kernel once
    it runs)."""

    def __init__(self) -> None:
        # kernel id → (kernel name, when the start began)
        self._starts: dict[str, tuple[str, str]] = {}
        self._seen_waiting: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __contains__(self, kernel_id: object) -> bool:
        return kernel_id in self._starts

    def begin(self, kernel_id: str, kernel_name: str) -> None:
        self._starts[kernel_id] = (kernel_name, datetime.now(timezone.utc).isoformat())

    def end(self, kernel_id: str) -> None:
        self._starts.pop(kernel_id, None)
        self._seen_waiting.discard(kernel_id)

    def state(self, kernel_id: str, waits: bool) -> str | None:
        """How the start of ``kernel_id`` is listed, ``waits`` saying whether it waits now."""
        if kernel_id not in self._starts:
            return None
        if waits:
            self._seen_waiting.add(kernel_id)
            return WAITING_STATE
        return LAUNCHING_STATE if kernel_id in self._seen_waiting else None

    def states(self, waiting: set[str], running: Any = ()) -> dict[str, str]:
        """The starts to list, by kernel id, with their state; ``waiting``: the kernel ids
        that wait now; ``running``: those whose kernel runs already (listed as kernels)."""
        states = {}
        for kernel_id in list(self._starts):
            if kernel_id in running:
                continue
            state = self.state(kernel_id, kernel_id in waiting)
            if state is not None:
                states[kernel_id] = state
        return states

    def model(self, kernel_id: str, state: str) -> dict[str, Any]:
        """The start's kernel as the kernels API lists a kernel."""
        name, since = self._starts.get(kernel_id, ("", ""))
        return {
            "id": kernel_id,
            "name": name,
            "last_activity": since,
            "execution_state": state,
            "connections": 0,
        }


@dataclass(frozen=True)
class _Starting:
    session_id: str
    path: str
    name: str
    type: str
    kernel_id: str
    kernel_name: str
    # The notebook's contents path (its session's path once it runs); "" when the session is
    # no notebook's (a console).
    notebook: str = ""

    @property
    def listed_path(self) -> str:
        return self.notebook or self.path


def _echoed(model: dict[str, Any], path: str) -> dict[str, Any]:
    """A session's model under the path its request named (JupyterLab shuts down a session that
    comes back under another path than it asked for, taking it for an older request's)."""
    if not path:
        return model
    model = {**model, "path": path}
    if isinstance(model.get("notebook"), dict):
        model["notebook"] = {**model["notebook"], "path": path}
    return model


class WaitingSessionManager(SessionManager):
    """SessionManager whose list includes sessions whose kernel start waits for a GPU.

    What is under way is the kernel manager's to say, through two methods (a session manager
    beside a kernel manager without them lists nothing more than jupyter_server's):
    ``starts_under_way()``, the kernel ids of the starts to list with their state (waiting for a
    GPU, or starting once they waited), and ``cancel_wait(kernel_id, why)``, which ends a start
    that waits. A start whose kernel id is chosen here reaches the kernel manager through
    :meth:`_start_kernel`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._starting: dict[str, _Starting] = {}

    async def session_exists(self, path: str) -> bool:
        """A notebook whose kernel start waits for a GPU has its session: asking the sessions
        API for one (a page that lost its own, a second tab) answers that one rather than
        starting a second kernel."""
        if await self._waiting_start(path=path) is not None:
            return True
        return bool(await super().session_exists(path))

    async def get_session(self, **kwargs: Any) -> dict[str, Any]:
        found = await self._waiting_start(**kwargs)
        if found is not None:
            return self._model(*found)
        model: dict[str, Any] = await super().get_session(**kwargs)
        return model

    async def _start_states(self) -> dict[str, str]:
        """The kernel manager's starts to list, by kernel id, with their state; none while
        nothing starts here."""
        if not self._starting:
            return {}
        states = getattr(self.kernel_manager, "starts_under_way", None)
        if not callable(states):
            return {}
        found: dict[str, str] = await ensure_async(states())
        return found

    async def _waiting_start(self, **kwargs: Any) -> tuple[_Starting, str] | None:
        """The start listed as waiting for a GPU (or starting, once it waited) whose session
        matches every column in ``kwargs``, with its state."""
        if not kwargs:
            return None
        states = await self._start_states()
        for start in list(self._starting.values()):
            columns = {
                "session_id": start.session_id,
                "path": start.listed_path,
                "name": start.name,
                "type": start.type,
                "kernel_id": start.kernel_id,
            }
            state = states.get(start.kernel_id)
            if state is not None and all(
                column in columns and columns[column] == value for column, value in kwargs.items()
            ):
                return start, state
        return None

    async def create_session(
        self,
        path: str | None = None,
        name: ModelName | None = None,
        type: str | None = None,
        kernel_name: KernelName | None = None,
        kernel_id: str | None = None,
    ) -> dict[str, Any]:
        """A session for a notebook whose kernel start is under way (waiting for a GPU, or
        launching once it waited) is that start's: the request joins it, under the request's own
        path, whatever kernel it named. Anything else starts as jupyter_server starts it."""
        notebook = self._notebook_of(path, name, type)
        if notebook:
            states = await self._start_states()
            for start in list(self._starting.values()):
                state = states.get(start.kernel_id)
                if start.notebook == notebook and state is not None:
                    return self._model(start, state, path=path or "", name=name or "")
            if kernel_id:
                # A page taking up the notebook's session by its kernel (a tab that had none
                # while the notebook's wait ended): that session, not a second row for it.
                rows: list[dict[str, Any]] = await ensure_async(super().list_sessions())
                for session in rows:
                    kernel = session.get("kernel") or {}
                    if session.get("path") == notebook and kernel.get("id") == kernel_id:
                        return _echoed(session, path or "")
        # Saved under the notebook's path (the kernel starts in the same folder, with the same
        # JPY_SESSION_NAME, as under the request's): a page that looks for the notebook's
        # session between the start's end and JupyterLab's move of it finds it. The answer
        # names the request's own path.
        model: dict[str, Any] = await super().create_session(
            path=notebook or path,
            name=name,
            type=type,
            kernel_name=kernel_name,
            kernel_id=kernel_id,
        )
        return _echoed(model, path or "") if notebook else model

    async def update_session(self, session_id: str, **kwargs: Any) -> None:
        """A session whose start is under way has no row yet: its path and name are its
        notebook's, and a page's move of it there (JupyterLab's, after its start) changes
        nothing; its kernel cannot change until it runs."""
        start = self._starting.get(session_id)
        if start is None:
            await super().update_session(session_id, **kwargs)
            return
        if "kernel_id" in kwargs and kwargs["kernel_id"] != start.kernel_id:
            raise web.HTTPError(409, _CANCEL_FIRST, reason="GPU wait under way")

    def _notebook_of(self, path: str | None, name: ModelName | None, type: str | None) -> str:
        """The contents path of the notebook a session request is for: jupyter_server's own
        reading of it (the kernel's JPY_SESSION_NAME), back under the server's root; "" for a
        session of no notebook."""
        if type != "notebook" or not path:
            return ""
        try:
            session_name = self.get_kernel_env(path, name)["JPY_SESSION_NAME"]
        except Exception:
            return ""
        root = getattr(self.contents_manager, "root_dir", "") or getattr(
            self.kernel_manager, "root_dir", ""
        )
        return api_path_of_session(session_name, str(root))

    async def start_kernel_for_session(
        self,
        session_id: str,
        path: str | None,
        name: ModelName | None,
        type: str | None,
        kernel_name: KernelName | None,
        kernel_id: str | None = None,
    ) -> str:
        if session_id in self._starting:
            # Another kernel for a session whose start is under way (a page's kernel change).
            raise DuplicateKernelError(_CANCEL_FIRST)
        if kernel_id and any(s.kernel_id == kernel_id for s in self._starting.values()):
            # A page asking for a session on a kernel that is still starting: never a second
            # kernel under the same id.
            raise DuplicateKernelError(
                f"Kernel {kernel_id} is still starting (it may wait for a GPU): ask for its "
                "notebook's session again once it runs."
            )
        new_id = str(uuid.uuid4())
        self._starting[session_id] = _Starting(
            session_id,
            path or "",
            name or "",
            type or "",
            kernel_id or new_id,
            kernel_name or "",
            self._notebook_of(path, name, type),
        )
        try:
            # SessionManager.start_kernel_for_session's own steps, with the kernel id chosen
            # here: its kernel_id argument is newer than the jupyter_server versions allowed.
            kernel_path = await ensure_async(self.contents_manager.get_kernel_path(path=path))
            kernel_env = self.get_kernel_env(path, name)
            return await self._start_kernel(
                kernel_id, new_id, path=kernel_path, kernel_name=kernel_name, env=kernel_env
            )
        finally:
            # Nothing awaited from here to jupyter_server's saving of the session's row
            # (create_session): no listing finds the session in neither place.
            self._starting.pop(session_id, None)

    async def _start_kernel(self, existing: str | None, new_id: str, **kwargs: Any) -> str:
        """Start the session's kernel: ``existing``, the kernel the request named, else a new
        one under ``new_id`` (the id its start is listed under while it waits)."""
        started: str = await self.kernel_manager.start_kernel(
            kernel_id=existing or new_id, **kwargs
        )
        return started

    async def waiting_kernel(self, session_id: str) -> str | None:
        """The kernel id of ``session_id``'s start, while it waits for a GPU; else None."""
        start = self._starting.get(session_id)
        if start is None:
            return None
        states = await self._start_states()
        return start.kernel_id if states.get(start.kernel_id) == WAITING_STATE else None

    async def delete_session(self, session_id: str) -> None:
        """Deleting a session whose kernel waits for a GPU cancels the wait (JupyterLab's Shut
        Down, closing the notebook); the start then ends with 409 "GPU wait cancelled"."""
        kernel_id = await self.waiting_kernel(session_id)
        cancel = getattr(self.kernel_manager, "cancel_wait", None)
        if kernel_id is not None and callable(cancel):
            await cancel(kernel_id, "its session was deleted")
            return
        await super().delete_session(session_id)

    async def list_sessions(self) -> list[dict[str, Any]]:
        sessions: list[dict[str, Any]] = await ensure_async(super().list_sessions())
        states = await self._start_states()
        listed = {s["id"] for s in sessions}
        for start in list(self._starting.values()):
            state = states.get(start.kernel_id)
            if state is not None and start.session_id not in listed:
                sessions.append(self._model(start, state))
        return sessions

    @staticmethod
    def _model(start: _Starting, state: str, path: str = "", name: str = "") -> dict[str, Any]:
        """The start's session as the sessions API lists it: under its notebook's path, or
        ``path`` and ``name`` (a request that joins it, answered under its own)."""
        path = path or start.listed_path
        name = name or start.name
        model: dict[str, Any] = {
            "id": start.session_id,
            "path": path,
            "name": name,
            "type": start.type,
            "kernel": {
                "id": start.kernel_id,
                "name": start.kernel_name,
                "last_activity": None,
                "execution_state": state,
                "connections": 0,
            },
        }
        if start.type == "notebook":
            model["notebook"] = {"path": path, "name": name}
        return model
