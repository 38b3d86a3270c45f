"""Talk to a kernel the way JupyterLab does: start it through the REST API, then talk to it over
the server's kernel websocket."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError


@dataclass
class ExecResult:
    status: str = ""
    stdout: str = ""
    stderr: str = ""
    ename: str = ""
    evalue: str = ""
    outputs: list[dict[str, Any]] = field(default_factory=list)


def execute_request(code: str, session: str, stop_on_error: bool = True) -> dict[str, Any]:
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": "execute_request",
            "username": "test",
            "session": session,
            "date": "",
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": stop_on_error,
        },
        "channel": "shell",
        "buffers": [],
    }


async def send_execute(ws: Any, code: str, stop_on_error: bool = True) -> str:
    """Send ``code`` to run; its request's id. ``stop_on_error=False`` for code that will be
    interrupted: with True, ipykernel aborts the requests that arrive until it has finished
    handling the error, and whether the next one does is a race."""
    msg = execute_request(code, session=uuid.uuid4().hex, stop_on_error=stop_on_error)
    await ws.write_message(json.dumps(msg))
    return str(msg["header"]["msg_id"])


async def collect(ws: Any, msg_id: str, timeout: float = 30) -> ExecResult:
    """Gather outputs of one request until its execute_reply and its idle status both arrived."""
    result = ExecResult()
    replied = idle = False

    async def loop() -> None:
        nonlocal replied, idle
        while not (replied and idle):
            raw = await ws.read_message()
            if raw is None:
                raise ConnectionError("kernel websocket closed")
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                if content["name"] == "stdout":
                    result.stdout += content["text"]
                else:
                    result.stderr += content["text"]
            elif kind == "error":
                result.ename, result.evalue = content["ename"], content["evalue"]
            elif kind == "execute_reply":
                result.status = content["status"]
                replied = True
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True
            result.outputs.append(msg)

    await asyncio.wait_for(loop(), timeout)
    return result


async def execute(ws: Any, code: str, timeout: float = 30) -> ExecResult:
    return await collect(ws, await send_execute(ws, code), timeout)


async def execute_in(
    jp_ws_fetch: Any, kernel_id: str, code: str, timeout: float = 30
) -> ExecResult:
    """Run ``code`` in a kernel of the in-process test server, over a websocket of its own."""
    ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels")
    try:
        return await execute(ws, code, timeout)
    finally:
        ws.close()


async def json_output(jp_ws_fetch: Any, kernel_id: str, code: str) -> dict[str, Any]:
    """What ``code``, which prints one JSON object, printed; the run must succeed."""
    result = await execute_in(jp_ws_fetch, kernel_id, code)
    assert result.status == "ok", result
    return dict(json.loads(result.stdout))


async def start_kernel(jp_fetch: Any, name: str, **body: Any) -> str:
    """Start a kernel of spec ``name`` through the stock REST API (more body fields as given);
    its id."""
    response = await jp_fetch(
        "api", "kernels", method="POST", body=json.dumps({"name": name, **body})
    )
    return str(json.loads(response.body)["id"])


async def refusal(request: Awaitable[Any]) -> tuple[int, str]:
    """The HTTP error a request to the test server must end in: its code and its message."""
    with pytest.raises(HTTPClientError) as info:
        await request
    assert info.value.response is not None
    return info.value.code, json.loads(info.value.response.body)["message"]


async def start_refusal(jp_fetch: Any, name: str, **body: Any) -> tuple[int, str]:
    """Why a kernel of spec ``name`` does not start: the error's code and message."""
    return await refusal(start_kernel(jp_fetch, name, **body))
