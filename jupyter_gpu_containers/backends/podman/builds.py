"""Image builds into the user's Podman storage: ``podman build`` of a context this project wrote
(a tar stream with a Dockerfile at its root), its output read line by line, its cancel, and the
sentence a failed build becomes (images/saves.py follows them).

``podman build`` reads its context from a folder: the stream is unpacked into a private one
first (mode 0700, in the user's runtime directory when there is one), entry by entry, each a
plain relative path that never passes through a link the stream made, then removed whatever
happens. The build pulls nothing (its FROM names images here), reuses no layer (``--layers=false``)
and reaches a network only where its options say."""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from typing import Any, BinaryIO

from ...base.errors import EngineRefused
from ..backend import BuildOptions
from .cli import PodmanCLI, end_process, last_words


def _unpack(stream: BinaryIO, into: str) -> None:
    links: set[str] = set()
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            name = posixpath.normpath(member.name)
            parts = name.split("/")
            if name.startswith("/") or ".." in parts or name == ".":
                raise EngineRefused(f"The build context names {member.name!r}: not unpacked.")
            if any("/".join(parts[:i]) in links for i in range(1, len(parts))):
                raise EngineRefused(f"The build context puts {member.name!r} below a link.")
            path = os.path.join(into, name)
            if member.isdir():
                os.makedirs(path, mode=0o755, exist_ok=True)
            elif member.issym():
                os.symlink(member.linkname, path)
                links.add(name)
            elif member.isfile():
                source = tar.extractfile(member)
                assert source is not None
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(source, out)
                os.chmod(path, member.mode & 0o755)


def open_build(cli: PodmanCLI, context: BinaryIO, name: str, options: BuildOptions) -> BuildStream:
    """Engine.open_build: unpack ``context``, then start ``podman build`` of it, untagged
    (``name`` says what it is in sentences); the output stream."""
    runtime = os.environ.get("XDG_RUNTIME_DIR") or None
    folder = tempfile.mkdtemp(prefix="jgc-build-", dir=runtime)  # mode 0700
    try:
        # The image id's file beside the context, never in it: a context's entry of that name
        # (a link) would have podman write where the link points.
        unpacked = os.path.join(folder, "context")
        os.mkdir(unpacked, 0o700)
        _unpack(context, unpacked)
        iidfile = os.path.join(folder, "image-id")
        args = [
            "build",
            # Podman's default network for a build is its containers' own (never the host's).
            *([] if options.network else ["--network=none"]),
            *([f"--memory={options.memory}"] if options.memory else []),
            "--pull=never",
            "--layers=false",
            "--iidfile",
            iidfile,
            "-f",
            os.path.join(unpacked, "Dockerfile"),
            unpacked,
        ]
        process = cli.popen(args, merge_stderr=True)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return BuildStream(process, folder, iidfile, name)


class BuildStream:
    """``podman build``'s output, line by line; :meth:`close` from any thread cancels it
    (podman is ended). ``image_id`` once it ended well."""

    def __init__(self, process: Any, folder: str, iidfile: str, tag: str) -> None:
        self._process = process
        self._folder = folder
        self._iidfile = iidfile
        self._tag = tag
        self.closed = False
        self.image_id = ""

    def __iter__(self) -> Iterator[str]:
        said: list[str] = []
        code = -1
        try:
            try:
                for raw in self._process.stdout:
                    line = raw.decode("utf-8", "replace").rstrip()
                    if not line.strip():
                        continue
                    said.append(line)
                    del said[:-20]
                    yield line
            except (ValueError, OSError):
                if not self.closed:
                    raise
                return  # cancelled: close() ended podman and its pipe under this read
            code = self._process.wait()
            if code == 0 and not self.closed:
                found = ""
                with contextlib.suppress(OSError), open(self._iidfile) as f:
                    found = f.read().strip()
                if found:
                    self.image_id = found if found.startswith("sha256:") else f"sha256:{found}"
        finally:
            end_process(self._process)
            shutil.rmtree(self._folder, ignore_errors=True)
        if self.closed:
            return
        if code != 0:
            raise EngineRefused(
                f"Podman could not build {self._tag}: {last_words(chr(10).join(said))}"
            )

    def close(self) -> None:
        self.closed = True
        end_process(self._process)
