"""A user reads plain words; the option that decided a refusal is an administrator's to read
(issue 62, item 9). errors.py's rule: a sentence says what an administrator can change and
never names a configuration option; the error carries the option apart (``setting``), which
the server's log names always and a JSON answer only to an administrator. Here: that mechanism
on a real tornado server (the extension's handler base, with a user and an admin check of the
test's own), and a guard over the package's source that keeps option names out of the
sentences."""

from __future__ import annotations

import ast
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_server.auth import IdentityProvider, User
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

import jupyter_gpu_containers
from jupyter_gpu_containers.base.errors import ContainerKernelError, ImageNotAllowed, Refusal
from jupyter_gpu_containers.routes.base import GPUContainersHandler
from jupyter_gpu_containers.server.kernelmanager import as_http
from jupyter_gpu_containers.server.stock_routes import SettingInLog

# A configuration option as the administrator writes it: Class.trait.
OPTION = re.compile(r"\b[A-Z][A-Za-z0-9]+\.[a-z][a-z0-9_]+\b")
PACKAGE = Path(jupyter_gpu_containers.__file__).parent
# A refusal an option decided (images/pulls.py's, where pulls are turned off).
PULLS_OFF = Refusal(
    "Pulling images is turned off on this server: ask an administrator to pull the image for you.",
    "ContainerPolicy.allow_user_pulls",
)


def test_a_refusal_carries_its_option_apart_from_its_sentence() -> None:
    error = ImageNotAllowed(PULLS_OFF.sentence, setting=PULLS_OFF.setting)
    assert str(error) == error.sentence == PULLS_OFF.sentence
    assert not OPTION.search(error.sentence)
    assert error.log_text == (f"{error.sentence} (setting: ContainerPolicy.allow_user_pulls)")
    # One no option decided reads the same in the log.
    assert ContainerKernelError("The kernel was cancelled.").log_text == (
        "The kernel was cancelled."
    )
    # Through the stock APIs' conversion too: the sessions API answers str(e).
    answered = as_http(error)
    assert str(answered) == error.sentence and answered.log_message == error.sentence


# ------------------------------------------------------------------- on a real tornado server


class _Student(IdentityProvider):
    """Every request is a logged-in user's (the server's own login is not what is tested)."""

    def get_user(self, handler: web.RequestHandler) -> User:
        return User(username="student")


class _Refusing(GPUContainersHandler):
    """Refuses with an option's decision; ``?admin=1``: the user is an administrator."""

    async def is_admin(self) -> bool:
        return self.get_query_argument("admin", "") == "1"

    async def get(self) -> None:
        raise ImageNotAllowed(PULLS_OFF.sentence, setting=PULLS_OFF.setting)


class _RefusalField(_Refusing):
    """A refusal answered as a field (GET /gpu-containers/status's pull_refusal)."""

    async def get(self) -> None:
        self.finish(json.dumps(self.refusal_fields("pull_refusal", PULLS_OFF)))


class _StockRefusing(SettingInLog):
    """A stock API's handler: jupyter_server writes its answer, which cannot ask who asks."""

    async def get(self) -> None:
        raise as_http(ImageNotAllowed(PULLS_OFF.sentence, setting=PULLS_OFF.setting))


@pytest.fixture
def server(jp_asyncio_loop: Any) -> Iterator[str]:
    app = web.Application(
        [(r"/refuse", _Refusing), (r"/field", _RefusalField), (r"/stock", _StockRefusing)],
        identity_provider=_Student(),
        allow_unauthenticated_access=True,
    )
    sock, port = bind_unused_port()
    http_server = HTTPServer(app)
    http_server.add_sockets([sock])
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        http_server.stop()


async def _answer(url: str) -> tuple[int, dict[str, Any]]:
    try:
        response = await AsyncHTTPClient().fetch(url)
    except HTTPClientError as e:
        assert e.response is not None
        return e.code, json.loads(e.response.body)
    return response.code, json.loads(response.body)


async def test_a_student_reads_what_to_do_and_an_administrator_also_the_option(
    server: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    code, student = await _answer(f"{server}/refuse")
    assert code == 403
    assert student == {"message": PULLS_OFF.sentence, "reason": "Image not allowed"}
    assert "ask an administrator" in student["message"]
    assert not OPTION.search(student["message"])
    code, admin = await _answer(f"{server}/refuse?admin=1")
    assert code == 403
    assert admin == {**student, "setting": "ContainerPolicy.allow_user_pulls"}
    # The log names the option for every refusal, whoever was refused.
    lines = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("403 GET /refuse:")
    ]
    assert len(lines) == 2, caplog.text
    assert all(
        line.endswith(f"{PULLS_OFF.sentence} (setting: ContainerPolicy.allow_user_pulls)")
        for line in lines
    ), lines


async def test_a_refusal_answered_as_a_field_names_its_option_to_an_administrator_only(
    server: str,
) -> None:
    code, student = await _answer(f"{server}/field")
    assert (code, student) == (200, {"pull_refusal": PULLS_OFF.sentence})
    code, admin = await _answer(f"{server}/field?admin=1")
    assert (code, admin) == (
        200,
        {
            "pull_refusal": PULLS_OFF.sentence,
            "pull_refusal_setting": "ContainerPolicy.allow_user_pulls",
        },
    )


async def test_the_stock_apis_refusal_names_its_option_in_the_log_alone(
    server: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    code, answer = await _answer(f"{server}/stock")
    assert code == 403
    assert answer == {"message": PULLS_OFF.sentence, "reason": "Image not allowed"}
    assert any(
        r.getMessage().startswith("403 GET /stock")
        and r.getMessage().endswith("(setting: ContainerPolicy.allow_user_pulls)")
        for r in caplog.records
    ), caplog.text


# ------------------------------------------------------------------- the guard


def _error_classes(trees: dict[Path, ast.Module]) -> set[str]:
    """ContainerKernelError and every class of the package that derives from it, by name."""
    bases: dict[str, set[str]] = {}
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases.setdefault(node.name, set()).update(
                    b.id if isinstance(b, ast.Name) else b.attr
                    for b in node.bases
                    if isinstance(b, (ast.Name, ast.Attribute))
                )
    found = {"ContainerKernelError"}
    while True:
        more = {name for name, of in bases.items() if of & found} - found
        if not more:
            return found
        found |= more


def _literal_text(node: ast.expr) -> str | None:
    """The text a string literal, an f-string's literal parts or a sum of them spell; None for
    anything else (a variable: what it holds is checked where it is written)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(str(v.value) if isinstance(v, ast.Constant) else "{}" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        parts = [_literal_text(node.left), _literal_text(node.right)]
        return "".join(p for p in parts if p is not None) or None
    return None


def _called(node: ast.Call) -> str:
    func = node.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")


def test_no_sentence_a_user_reads_names_a_configuration_option() -> None:
    """The rule of errors.py, for code to come: the sentence of a ContainerKernelError or a
    Refusal (first argument) and of an HTTPError (its message, the second) is a user's, so it
    names no ``Class.trait``; the option goes in ``setting=`` (or, for a tornado error, the
    log)."""
    trees = {path: ast.parse(path.read_text(), str(path)) for path in PACKAGE.rglob("*.py")}
    errors = _error_classes(trees)
    found = []
    for path, tree in sorted(trees.items()):
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = _called(node)
            if name in errors or name == "Refusal":
                said = node.args[0] if node.args else None
            elif name == "HTTPError":
                said = node.args[1] if len(node.args) > 1 else None
            else:
                continue
            text = _literal_text(said) if said is not None else None
            named = OPTION.findall(text or "")
            if named:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {', '.join(named)}")
    assert not found, "Sentences that name an option (move it to setting=):\n" + "\n".join(found)


def test_the_guard_sees_an_option_in_each_form_a_sentence_is_written() -> None:
    """The guard's own check: a literal, an f-string and a sum of them are read; an error made
    with a setting passes."""
    source = """
class Refused(ContainerKernelError): ...
raise Refused("Pulls are off (ContainerPolicy.allow_user_pulls).")
raise Refused(f"{n} pulls, as many as PullManager.max_per_user allows.")
raise web.HTTPError(429, "Too many (" + "GPUContainersKernelManager.max_websockets_per_user).")
raise Refused("Pulls are off: ask an administrator.", setting="ContainerPolicy.allow_user_pulls")
"""
    tree = ast.parse(source)
    errors = _error_classes({Path("x.py"): tree})
    named = [
        OPTION.findall(
            _literal_text(call.args[0] if _called(call) in errors else call.args[1]) or ""
        )
        for call in ast.walk(tree)
        if isinstance(call, ast.Call) and (_called(call) in errors or _called(call) == "HTTPError")
    ]
    assert sorted(map(len, named)) == [0, 1, 1, 1], named
