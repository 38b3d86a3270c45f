"""Host paths: the one check (realpath, then ``root + os.sep``) behind the workspace, mount sources
and notebook paths, table by table and as a property over random strings; then mounts end to end
against the real engine."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    DEBIAN_IMAGE,
    TEST_LABEL,
    TEST_RUN,
    kernel_container,
    kernel_name,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_io import execute, start_refusal
from tornado.httpclient import HTTPClientError

from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.base.errors import MountRefused, PathRefused
from jupyter_gpu_containers.base.records import KERNEL_DIR_IN_CONTAINER
from jupyter_gpu_containers.policy.checks import (
    NAME_MAX,
    PATH_MAX,
    check_mount_source,
    check_mount_target,
    inside,
    resolve_inside,
)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """base/alice is the root; base/alice2 its sibling with the same prefix; symlinks inside the
    root lead in, out (relative and absolute), up, and round in a loop."""
    base = tmp_path_factory.mktemp("paths")
    root = base / "alice"
    (root / "notebooks").mkdir(parents=True)
    (root / "notebooks" / "nb.ipynb").write_text("{}")
    (base / "alice2").mkdir()
    (base / "alice2" / "secret").write_text("not yours")
    (root / "in-link").symlink_to("notebooks")
    (root / "out-link").symlink_to("../alice2")
    (root / "abs-out").symlink_to("/etc")
    (root / "dotdot").symlink_to("..")
    (root / "loop").symlink_to("loop")
    return root


def real(path: Path) -> str:
    return os.path.realpath(path)


# (what, path relative to the root's parent with {root} for the root, expected)
# expected: a path under the root's parent it resolves to, or the start of the refusal.
ABSOLUTE_CASES = [
    ("the root itself", "{root}", "alice"),
    ("a file", "{root}/notebooks/nb.ipynb", "alice/notebooks/nb.ipynb"),
    ("a file not created yet", "{root}/notebooks/new.ipynb", "alice/notebooks/new.ipynb"),
    ("a symlink that stays inside", "{root}/in-link/nb.ipynb", "alice/notebooks/nb.ipynb"),
    ("doubled slashes", "{root}//notebooks", "alice/notebooks"),
    ("'..' that stays inside", "{root}/notebooks/../notebooks", "alice/notebooks"),
    ("'..' out of the root", "{root}/../alice2/secret", "lies outside"),
    ("'..' deeper down", "{root}/notebooks/../../alice2/secret", "lies outside"),
    ("the sibling sharing the prefix", "{root}2/secret", "lies outside"),
    ("a symlink out of the root", "{root}/out-link/secret", "lies outside"),
    ("an absolute symlink out", "{root}/abs-out/passwd", "lies outside"),
    ("a symlink to the parent", "{root}/dotdot/alice2", "lies outside"),
    ("a relative path", "notebooks/nb.ipynb", "must be an absolute path"),
    ("an empty path", "", "must be a non-empty path"),
    ("NUL", "{root}/a\0/../../alice2", "contains a NUL"),
    ("a name over NAME_MAX", "{root}/" + "x" * (NAME_MAX + 1), "has a name of 256 bytes"),
    ("a path of PATH_MAX bytes", "{root}/" + "/".join(["y" * 200] * 21), "bytes long"),
    ("an unpaired surrogate", "{root}/\ud800", "is not text a file name can hold"),
    ("an undecodable byte as read from disk", "{root}/\udc80", "alice/\udc80"),
    ("NFC", "{root}/caf\u00e9", "alice/caf\u00e9"),
    ("NFD, another name on Linux", "{root}/cafe\u0301", "alice/cafe\u0301"),
    ("a right-to-left override", "{root}/\u202egpj.exe", "alice/\u202egpj.exe"),
    (
        "full-width solidus, not a separator",
        "{root}/..\uff0f..\uff0fetc",
        "alice/..\uff0f..\uff0fetc",
    ),
    ("a colon", "{root}/a:b", "alice/a:b"),
]

RELATIVE_CASES = [
    ("the root", ".", "alice"),
    ("a file", "notebooks/nb.ipynb", "alice/notebooks/nb.ipynb"),
    ("an absolute path", "/etc/passwd", "must be relative to"),
    ("an absolute path inside the root", "{root}/notebooks", "must be relative to"),
    ("'..' out", "../alice2/secret", "lies outside"),
    ("a symlink out", "out-link/secret", "lies outside"),
    ("empty", "", "must be a non-empty path"),
    ("NUL", "notebooks\0", "contains a NUL"),
]


def check_case(tree: Path, path: str, expected: str, *, relative: bool) -> None:
    path = path.replace("{root}", str(tree))
    if expected.startswith("alice"):
        want = os.path.join(real(tree.parent), expected)
        assert resolve_inside(path, str(tree), relative=relative) == want
        if not relative:
            assert inside(path, str(tree))
    else:
        with pytest.raises(PathRefused) as info:
            resolve_inside(path, str(tree), relative=relative)
        assert expected in info.value.sentence
        assert info.value.sentence.isprintable(), "sentences quote paths escaped"
        if not relative:
            assert not inside(path, str(tree))


@pytest.mark.parametrize(("what", "path", "expected"), ABSOLUTE_CASES, ids=lambda v: str(v)[:40])
def test_absolute_paths(tree: Path, what: str, path: str, expected: str) -> None:
    check_case(tree, path, expected, relative=False)


@pytest.mark.parametrize(("what", "path", "expected"), RELATIVE_CASES, ids=lambda v: str(v)[:40])
def test_relative_paths(tree: Path, what: str, path: str, expected: str) -> None:
    check_case(tree, path, expected, relative=True)


@pytest.mark.parametrize("value", [None, b"/bytes", 42, ["/list"]])
def test_non_strings_are_refused(tree: Path, value: Any) -> None:
    with pytest.raises(PathRefused, match="must be a non-empty path"):
        resolve_inside(value, str(tree))
    assert not inside(value, str(tree))


def test_a_loop_never_escapes(tree: Path) -> None:
    try:
        resolved = resolve_inside(f"{tree}/loop/x", str(tree))
    except PathRefused:
        return
    assert resolved.startswith(real(tree) + os.sep)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{root}/notebooks", "alice/notebooks"),
        ("{root}/in-link", "alice/notebooks"),
        ("{root}/out-link", "outside the directories allowed"),
        ("{root}2", "outside the directories allowed"),
        ("{root}/../alice2", "outside the directories allowed"),
        ("{root}/missing", "does not exist on this host"),
        ("notebooks", "must be an absolute host path"),
        ("{root}/\0", "contains a NUL"),
        ("", "must be a non-empty path"),
    ],
)
def test_mount_sources(tree: Path, source: str, expected: str) -> None:
    source = source.replace("{root}", str(tree))
    if expected.startswith("alice"):
        assert check_mount_source(source, [str(tree)]) == os.path.join(real(tree.parent), expected)
    else:
        with pytest.raises(MountRefused, match=expected):
            check_mount_source(source, [str(tree)])


def test_mount_sources_need_a_configured_root(tree: Path) -> None:
    with pytest.raises(MountRefused, match=r"\(none configured\)"):
        check_mount_source(str(tree), ["", *[]])


@pytest.mark.parametrize(
    ("target", "refusal"),
    [
        ("/data", ""),
        ("/data/sets", ""),
        ("/workspace/data", ""),
        ("/a:b", ""),
        ("data", "must be an absolute path"),
        ("/", "must be a normalised path"),
        ("/data/../etc", "must be a normalised path"),
        ("/data/", "must be a normalised path"),
        ("//data", "must be a normalised path"),
        ("/data/./x", "must be a normalised path"),
        ("/run", ""),
        (KERNEL_DIR_IN_CONTAINER, "would hide /run/jupyter-kernel"),
        (f"{KERNEL_DIR_IN_CONTAINER}/x", "would hide /run/jupyter-kernel"),
        ("/workspace", "would hide the workspace"),
        ("/a\0", "contains a NUL"),
        ("/" + "x" * 300, "has a name of 300 bytes"),
        (None, "must be a non-empty path"),
    ],
)
def test_mount_targets(target: Any, refusal: str) -> None:
    if not refusal:
        assert check_mount_target(target, "/workspace") == target
    else:
        with pytest.raises(PathRefused, match=refusal):
            check_mount_target(target, "/workspace")


# Random path strings: components an attacker would try, mixed with arbitrary text (surrogates
# included, which st.text leaves out by default), joined by '/', some very long.
ANY_CHAR = st.characters(exclude_categories=[])
COMPONENTS = st.one_of(
    st.sampled_from(
        [
            "..",
            ".",
            "",
            "alice",
            "alice2",
            "notebooks",
            "in-link",
            "out-link",
            "abs-out",
            "dotdot",
            "loop",
            "secret",
            "x" * NAME_MAX,
            "x" * (NAME_MAX + 1),
            "\0",
            "\ud800",
            "\udc80",
            "cafe\u0301",
            "\uff0e\uff0e",
            "a:b",
        ]
    ),
    st.text(alphabet=ANY_CHAR, max_size=12),
)
TAILS = st.one_of(
    st.lists(COMPONENTS, max_size=14).map("/".join),
    st.text(alphabet=ANY_CHAR, max_size=40),
    st.text(alphabet=st.sampled_from("a./"), min_size=PATH_MAX - 64, max_size=PATH_MAX + 64),
)


def well_formed(path: str) -> bool:
    """An independent reading of "the OS could take this as a path"."""
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:
        return False
    return (
        b"\0" not in raw
        and 0 < len(raw) < PATH_MAX
        and all(len(part) <= NAME_MAX for part in raw.split(b"/"))
    )


def escapes(path: str, root: str) -> bool:
    """Outside ``root`` by os.path.commonpath, not by the module's own prefix test."""
    return os.path.commonpath([os.path.realpath(path), os.path.realpath(root)]) != (
        os.path.realpath(root)
    )


@settings(max_examples=400, deadline=timedelta(seconds=1), database=None)
@given(tail=TAILS, absolute=st.booleans())
def test_random_paths_resolve_inside_or_are_refused(tree: Path, tail: str, absolute: bool) -> None:
    root = str(tree)
    path = f"{root}/{tail}" if absolute else tail
    try:
        resolved = resolve_inside(path, root, relative=not absolute)
    except PathRefused as e:
        assert e.sentence.isprintable()
        full = path if absolute else os.path.join(root, tail)
        if absolute or not tail.startswith("/"):
            # Never an over-refusal: a clean path that stays inside is accepted.
            assert not (well_formed(tail) and well_formed(full) and not escapes(full, root)), e
        return
    # Accepted: inside by an independent test, the real path, and itself a clean path.
    assert not escapes(resolved, root)
    assert resolved == os.path.realpath(resolved)
    assert well_formed(resolved)
    assert inside(resolved, root)


@settings(max_examples=300, deadline=timedelta(seconds=1), database=None)
@given(text=st.one_of(TAILS, st.builds(lambda t: "/" + t, TAILS)))
def test_inside_and_mount_sources_never_raise_anything_else(tree: Path, text: str) -> None:
    assert isinstance(inside(text, str(tree)), bool)
    try:
        source = check_mount_source(text, [str(tree)])
    except MountRefused:
        return
    assert not escapes(source, str(tree)) and os.path.exists(source)


@settings(max_examples=300, deadline=timedelta(seconds=1), database=None)
@given(text=st.one_of(TAILS, st.builds(lambda t: "/" + t, TAILS)))
def test_random_mount_targets_are_clean_or_refused(text: str) -> None:
    try:
        target = check_mount_target(text, "/workspace")
    except PathRefused:
        return
    assert target.startswith("/") and os.path.normpath(target) == target
    assert ".." not in target.split("/") and "//" not in target and well_formed(target)
    assert target != "/workspace"
    assert target != KERNEL_DIR_IN_CONTAINER
    assert not target.startswith(KERNEL_DIR_IN_CONTAINER + "/")


# ---------------------------------------------------------------------------- end to end


def assert_no_kernel_containers(client: Any) -> None:
    """No kernel container of this run (readiness probes the server started may still run)."""
    left = client.containers.list(
        all=True, filters={"label": [f"{TEST_LABEL}={TEST_RUN}", L.KERNEL_ID]}
    )
    assert not left, [c.name for c in left]


def mounts(*entries: tuple[str, str]) -> Any:
    """A server_config marker: tmp/raid is the allowed root, each entry (source under tmp,
    target) an extra mount."""
    return pytest.mark.server_config(
        lambda tmp: {
            "ContainerPolicy": {"allowed_mount_roots": [str(tmp / "raid")]},
            "ContainerProvisioner": {
                "extra_mounts": [{"source": str(tmp / s), "target": t} for s, t in entries]
            },
        }
    )


@pytest.mark.parametrize(
    ("code", "refusal"),
    [
        pytest.param(
            403,
            "outside the directories allowed for mounts",
            marks=mounts(("raid/escape", "/data")),
            id="symlink-out-of-the-root",
        ),
        pytest.param(
            403,
            "outside the directories allowed for mounts",
            marks=mounts(("raid2", "/data")),
            id="sibling-prefix",
        ),
        pytest.param(
            403,
            "outside the directories allowed for mounts",
            marks=mounts(("raid/../raid2", "/data")),
            id="dotdot",
        ),
        pytest.param(
            403, "does not exist on this host", marks=mounts(("raid/absent", "/data")), id="absent"
        ),
        pytest.param(
            400,
            "would hide /run/jupyter-kernel",
            marks=mounts(("raid/sets", KERNEL_DIR_IN_CONTAINER)),
            id="target-hides-the-connection",
        ),
        pytest.param(
            400,
            "must be a normalised path",
            marks=mounts(("raid/sets", "/data/../etc")),
            id="target-dotdot",
        ),
    ],
)
async def test_mount_escapes_are_refused_before_any_container(
    code: int, refusal: str, jp_fetch: Any, tmp_path: Path, docker_client: Any
) -> None:
    (tmp_path / "raid" / "sets").mkdir(parents=True)
    (tmp_path / "raid2").mkdir()
    (tmp_path / "raid" / "escape").symlink_to(tmp_path / "raid2")
    status, message = await start_refusal(jp_fetch, kernel_name(DEBIAN_IMAGE))
    assert (status, refusal) == (code, refusal) and refusal in message, message
    assert_no_kernel_containers(docker_client)
    assert list((tmp_path / "conn").iterdir()) == [], "the private directory is gone too"


@pytest.mark.server_config(
    lambda tmp: {
        "ContainerPolicy": {
            "allowed_mount_roots": [str(tmp / "raid")],
            # The writable mount below is the administrator's word (test_shared_host.py checks
            # that a mount elsewhere cannot be writable).
            "writable_mount_roots": [str(tmp / "raid" / "rw")],
        },
        "ContainerProvisioner": {
            "extra_mounts": [
                # Only a literal false makes a mount writable; the string "false" does not.
                {"source": str(tmp / "raid" / "ro"), "target": "/data/ro", "read_only": "false"},
                {"source": str(tmp / "raid" / "rw"), "target": "/data/rw", "read_only": False},
                # A ':' in a path: bind strings ("src:dst:mode") would split it.
                {"source": str(tmp / "raid" / "a:b"), "target": "/data/c:d"},
            ]
        },
    }
)
async def test_mounts_are_structured_and_read_only_unless_said_otherwise(
    jp_fetch: Any, jp_ws_fetch: Any, tmp_path: Path, docker_client: Any
) -> None:
    for name in ("ro", "rw", "a:b"):
        (tmp_path / "raid" / name).mkdir(parents=True)
    (tmp_path / "raid" / "a:b" / "inside.txt").write_text("colon ok")
    response = await jp_fetch(
        "api", "kernels", method="POST", body=json.dumps({"name": kernel_name(DEBIAN_IMAGE)})
    )
    kernel_id = json.loads(response.body)["id"]
    ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels")
    code = """
import errno
def attempt(path):
    try:
        open(path, "w").write("x")
        return "written"
    except OSError as e:
        return errno.errorcode[e.errno]
print(attempt("/data/ro/new"), attempt("/data/rw/new"), open("/data/c:d/inside.txt").read())
"""
    result = await execute(ws, code)
    ws.close()
    assert result.stdout.split() == ["EROFS", "written", "colon", "ok"], result
    assert (tmp_path / "raid" / "rw" / "new").read_text() == "x"
    container = kernel_container(docker_client, kernel_id)
    modes = {m["Target"]: m.get("ReadOnly", False) for m in container.attrs["HostConfig"]["Mounts"]}
    assert modes == {
        KERNEL_DIR_IN_CONTAINER: False,
        "/workspace": False,
        "/data/ro": True,
        "/data/rw": False,
        "/data/c:d": True,
        # The kernel's own account files (accounts.py), read-only.
        "/etc/passwd": True,
        "/etc/group": True,
    }
    assert not container.attrs["HostConfig"]["Binds"]


async def test_notebook_paths_that_are_no_paths_get_400(jp_fetch: Any) -> None:
    """The GPU endpoints check notebook paths with the same function: an unpaired surrogate (JSON
    can carry one) or NUL is a 400 with a sentence, not a server error."""
    for path in [r"\ud800.ipynb", r"a\u0000/../../etc.ipynb", "x" * 5000 + ".ipynb"]:
        with pytest.raises(HTTPClientError) as info:
            await jp_fetch(
                "gpu-containers",
                "notebooks",
                "kernel",
                method="POST",
                # By hand: the escapes must reach the server as JSON escapes.
                body='{"path": "' + path + '", "gpus": 0, "start": false}',
            )
        assert info.value.code == 400, (path[:20], info.value)
