"""The service's own image builder: a Recipe (recipes.py: the one parse of a user's Dockerfile,
or the instructions the service writes for a save or a requirements.txt) executed step by step
through the engine's container primitives (backend.BuildSteps). No engine ever reads a
Dockerfile, so nothing of the user's text is read a second time, differently.

- Each stage runs in one container of its base (the image id the service admitted; never a name
  the engine resolves), its PID 1 idle, confined as a kernel is (no capabilities,
  no-new-privileges, pids, CPU and memory limits; no network, or the backend's network made for
  builds only), labelled with the build's id (L.BUILD). A stage built on an earlier stage goes
  on in that stage's container (recipes.py allows it once, and no copy from it then), so no
  image is ever made between steps.
- RUN is an exec in the stage's container as the stage's user, in its workdir, with its
  environment (ENV, and the ARGs' values); its output is the build's log; a non-zero exit fails
  the build, naming the line.
- COPY and ADD read the build's context from a private spool (a tar the service wrote, the
  user's folder read as the user: host/build_context.py) and put a tar the service wrote into the
  container (owners 0:0, or --chown's); ``--from`` a stage reads that stage's container, from an
  image a never-started container of it. An ADD of a local tar archive unpacks it, as Docker's.
- ENV, ARG, LABEL, WORKDIR, USER, EXPOSE, VOLUME, CMD, ENTRYPOINT, SHELL, STOPSIGNAL are kept
  in the stage's own state, variables substituted as Docker substitutes them (recipes.expand),
  and written as the image's config by the one commit at the end.
- After each step that writes, the container's writable layer is measured against the bound
  (``max_layer_bytes``); the caller checks the committed image against its base again.
- Every container of the build is removed whatever happens (failure, cancel, timeout).

:class:`BuildRun` is what images/saves.py follows: its lines, ``image_id`` once it ended well,
and ``close`` (any thread) to cancel. Blocking: the build's own threads.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import posixpath
import queue
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import IO

from ..backends.backend import BuildSteps, ImageConfig, StepLimits
from ..base import labels as L
from ..base.errors import ContainerKernelError, SaveRefused
from ..host.packages_archive import SaveCancelled, size_text
from . import recipes
from .recipes import Instruction, Recipe, RecipeRefused

# Output lines of one step longer than this are cut (the log keeps 500 characters of each).
MAX_LINE = 4096
# A running step's writable layer is measured every this many half-seconds.
LAYER_CHECK_TICKS = 10
_ARCHIVES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


class BuildFailed(ContainerKernelError):
    """A step of a build failed (its line named), or the build went past a bound (400)."""

    status = 400


@dataclass(frozen=True)
class BuildPlan:
    """What one build executes: ``recipe``; ``bases``, each image it names (as written) and the
    id the service admitted for it; ``context``, the spool (a seekable tar the service wrote;
    None: the recipe copies nothing from a context); ``name``, the image's reference, for
    sentences; ``labels``, the image's own (the service's lineage: they win over the
    Dockerfile's); ``container_labels``, what every container of the build carries; ``limits``
    of each step; ``max_layer_bytes``, the most a stage's writable layer may hold (0: no bound)."""

    recipe: Recipe
    bases: dict[str, str]
    context: IO[bytes] | None
    name: str
    labels: dict[str, str]
    container_labels: dict[str, str]
    limits: StepLimits
    max_layer_bytes: int = 0


@dataclass
class _Stage:
    """A stage's state while it runs: its container, and the config it will leave."""

    container: str
    env: dict[str, str]
    args: dict[str, str] = field(default_factory=dict)
    user: str = ""
    workdir: str = ""
    shell: tuple[str, ...] = recipes.DEFAULT_SHELL
    cmd: tuple[str, ...] | None = None
    cmd_set: bool = False
    entrypoint: tuple[str, ...] | None = None
    labels: dict[str, str] = field(default_factory=dict)
    exposed: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    stop_signal: str = ""

    @property
    def words_env(self) -> dict[str, str]:
        """What variables substitute from: the ARGs, then ENV (an ENV of the same name wins)."""
        return {**self.args, **self.env}

    def config(self, labels: dict[str, str]) -> ImageConfig:
        return ImageConfig(
            env=tuple(f"{k}={v}" for k, v in self.env.items()),
            cmd=self.cmd,
            entrypoint=self.entrypoint,
            workdir=self.workdir,
            user=self.user,
            labels=labels,
            exposed_ports=tuple(dict.fromkeys(self.exposed)),
            volumes=tuple(dict.fromkeys(self.volumes)),
            stop_signal=self.stop_signal,
            shell=None if self.shell == recipes.DEFAULT_SHELL else self.shell,
        )


class BuildRun:
    """One build under way: iterate for its lines (the build runs meanwhile on a thread of its
    own; iterating raises its failure, a sentence); ``image_id`` once it ended well; ``close``
    (any thread) cancels it."""

    def __init__(self, steps: BuildSteps, plan: BuildPlan) -> None:
        self._steps = steps
        self._plan = plan
        self.cancelled = threading.Event()
        self.closed = False
        self.image_id = ""
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._failure: BaseException | None = None

    def close(self) -> None:
        self.closed = True
        self.cancelled.set()

    def __iter__(self) -> Iterator[str]:
        worker = threading.Thread(target=self._work, name="gpu-containers-build-steps", daemon=True)
        worker.start()
        while True:
            line = self._lines.get()
            if line is None:
                break
            yield line
        worker.join()
        if self._failure is not None:
            raise self._failure

    def _work(self) -> None:
        try:
            self.image_id = _Executor(self._steps, self._plan, self._say, self.cancelled).run()
        except BaseException as e:  # told to the iterating thread
            self._failure = e
        finally:
            self._lines.put(None)

    def _say(self, line: str) -> None:
        self._lines.put(line[:MAX_LINE])


class _Executor:
    """One build's run, on its worker thread: the stages in order, then the commit; every
    container it made removed at the end, whatever happened."""

    def __init__(
        self,
        steps: BuildSteps,
        plan: BuildPlan,
        say: Callable[[str], None],
        cancelled: threading.Event,
    ) -> None:
        self.steps = steps
        self.plan = plan
        self.say = say
        self.cancelled = cancelled
        self.containers: list[str] = []
        self.stages: list[_Stage] = []
        self.names: dict[str, int] = {}
        self._context_index: dict[str, tarfile.TarInfo] | None = None
        self._context_tar: tarfile.TarFile | None = None
        self._closing = contextlib.ExitStack()

    # ------------------------------------------------------------------ the build

    def run(self) -> str:
        image_id = ""
        try:
            recipe = self.plan.recipe
            for index, stage in enumerate(recipe.stages):
                self._check_cancel()
                state = self._start_stage(index, stage)
                self.stages.append(state)
                if stage.name:
                    self.names[stage.name] = index
                for ins in stage.instructions:
                    self._check_cancel()
                    self.say(f"Step (line {ins.line}): {ins.keyword} {_shown(ins)}")
                    self._step(state, ins, index)
            self._check_cancel()
            final = self.stages[-1]
            labels = {
                **{k: v for k, v in final.labels.items() if not k.startswith(L.PREFIX)},
                **self.plan.container_labels,
                **self.plan.labels,
            }
            image_id = self.steps.commit(final.container, final.config(labels), labels)
            self.say(f"Committed {self.plan.name} as {image_id[:19]}.")
            return image_id
        finally:
            self._closing.close()
            for container in reversed(self.containers):
                with contextlib.suppress(Exception):
                    self.steps.remove_container(container)
            if self.cancelled.is_set() and image_id:
                with contextlib.suppress(Exception):
                    self.steps.remove_image(image_id)

    def _check_cancel(self) -> None:
        if self.cancelled.is_set():
            raise SaveCancelled()

    def _start_stage(self, index: int, stage: recipes.Stage) -> _Stage:
        if stage.base_stage is not None:
            # Goes on in the earlier stage's container (recipes.py: built on once, never
            # copied from), with that stage's state; its ARGs are the stage's own.
            earlier = self.stages[stage.base_stage]
            state = replace(
                earlier,
                env=dict(earlier.env),
                args={},
                labels=dict(earlier.labels),
                exposed=list(earlier.exposed),
                volumes=list(earlier.volumes),
                cmd_set=False,
            )
            self.say(f"Stage {index} (line {stage.line}): on stage {stage.base_stage}.")
            return state
        image_id = self._admitted(stage.base, f"Line {stage.line} (FROM)")
        base = self.steps.image_config(image_id)
        self.say(f"Stage {index} (line {stage.line}): FROM {stage.base} ({image_id[:19]}).")
        container = self.steps.create_stage(
            image_id, labels=dict(self.plan.container_labels), limits=self.plan.limits
        )
        self.containers.append(container)
        env: dict[str, str] = {}
        for item in base.env:
            key, _, value = item.partition("=")
            env[key] = value
        return _Stage(
            container=container,
            env=env,
            user=base.user,
            workdir=base.workdir,
            shell=base.shell or recipes.DEFAULT_SHELL,
            cmd=base.cmd,
            entrypoint=base.entrypoint,
            labels=dict(base.labels),
            exposed=list(base.exposed_ports),
            volumes=list(base.volumes),
            stop_signal=base.stop_signal,
        )

    def _admitted(self, ref: str, where: str) -> str:
        image_id = self.plan.bases.get(ref)
        if not image_id:
            # The caller admits every image the recipe names: one missing is a bug, said so.
            raise RecipeRefused(f"{where}: {ref[:200]} was not checked as a base of this build.")
        return image_id

    def _step(self, state: _Stage, ins: Instruction, index: int) -> None:
        keyword = ins.keyword
        env = state.words_env
        where = ins.where
        if keyword == "RUN":
            argv = list(ins.json) if ins.json is not None else [*state.shell, ins.text]
            self._run(state, argv, ins)
        elif keyword in ("COPY", "ADD"):
            self._copy(state, ins, index)
        elif keyword == "ENV":
            for key, value in recipes.key_values(ins, env):
                state.env[key] = value
        elif keyword == "ARG":
            for name, given in recipes.arguments(ins, env):
                # No --build-arg here: a default, or the one of an ARG before the first FROM.
                default = given if given is not None else self.plan.recipe.global_args.get(name)
                if default is not None:
                    state.args[name] = default
        elif keyword in ("LABEL", "MAINTAINER"):
            for key, value in recipes.label_pairs(ins, env):
                if key.startswith(L.PREFIX):
                    raise RecipeRefused(
                        f"{where}: the label {key[:200]} is in this project's namespace "
                        f"({L.PREFIX}…), whose labels only the service writes."
                    )
                state.labels[key] = value
        elif keyword == "WORKDIR":
            path = recipes.expand(ins.text.strip(), env, where)
            state.workdir = posixpath.normpath(posixpath.join(state.workdir or "/", path))
            mkdir = ["mkdir", "-p", "--", state.workdir]
            self._run(state, mkdir, ins, user="0", workdir="/")
        elif keyword == "USER":
            state.user = recipes.expand(ins.text.strip(), env, where)
        elif keyword == "EXPOSE":
            for port in recipes.lex_words(ins.text, env, where):
                state.exposed.append(port if "/" in port else f"{port}/tcp")
        elif keyword == "VOLUME":
            if ins.json is not None:
                state.volumes.extend(recipes.substitute(p, env, where) for p in ins.json)
            else:
                state.volumes.extend(recipes.lex_words(ins.text, env, where))
        elif keyword == "CMD":
            state.cmd = ins.json if ins.json is not None else (*state.shell, ins.text)
            state.cmd_set = True
        elif keyword == "ENTRYPOINT":
            state.entrypoint = ins.json if ins.json is not None else (*state.shell, ins.text)
            if not state.cmd_set:  # a CMD of the base is no argument of a new entrypoint
                state.cmd = None
        elif keyword == "SHELL":
            assert ins.json is not None  # recipes.py: JSON form only
            state.shell = ins.json
        elif keyword == "STOPSIGNAL":
            state.stop_signal = recipes.expand(ins.text.strip(), env, where)
        else:  # recipes.py refuses every other keyword
            raise RecipeRefused(f"{where}: not an instruction this builder runs.")

    def _run(
        self,
        state: _Stage,
        argv: list[str],
        ins: Instruction,
        *,
        user: str | None = None,
        workdir: str | None = None,
    ) -> None:
        env = [f"{k}={v}" for k, v in state.words_env.items()]
        stop, over, done = self._watch_step(state)
        try:
            code = self.steps.exec_step(
                state.container,
                argv,
                user=state.user if user is None else user,
                workdir=(state.workdir if workdir is None else workdir) or "/",
                env=env,
                on_line=self.say,
                cancelled=stop,
            )
        finally:
            done.set()  # ends the watcher (never ``stop``: that would kill the stage)
        self._check_cancel()
        if over:
            raise self._too_large(over[0], ins)
        if code != 0:
            raise BuildFailed(
                f"The builder could not build {self.plan.name}: {ins.where} "
                f"{_shown(ins)[:200]} returned a non-zero code: {code}."
            )
        self._check_layer(state, ins)

    def _check_layer(self, state: _Stage, ins: Instruction) -> None:
        bound = self.plan.max_layer_bytes
        if not bound:
            return
        used = self.steps.layer_size(state.container)
        if used > bound:
            raise self._too_large(used, ins)

    def _too_large(self, used: int, ins: Instruction) -> SaveRefused:
        bound = self.plan.max_layer_bytes
        return SaveRefused(
            f"The build of {self.plan.name} wrote {size_text(used)} by {ins.where}, more than a "
            f"build may add ({size_text(bound)}): it was stopped and nothing was kept.",
            setting="ImageSaves.max_build_bytes",
        )

    def _watch_step(self, state: _Stage) -> tuple[threading.Event, list[int], threading.Event]:
        """What ends a running step early: the build's cancel, or its stage's writable layer
        growing past the bound (measured every few seconds while the step runs, so that a
        step cannot fill the engine's disk before it ends). ``stop`` is set to stop the step;
        ``over`` gets the size that stopped it; ``done``, set once the step is over, ends the
        watcher."""
        stop = threading.Event()
        done = threading.Event()
        over: list[int] = []
        bound = self.plan.max_layer_bytes

        def watch() -> None:
            ticks = 0
            while not done.is_set():
                if self.cancelled.wait(0.5):
                    stop.set()
                    return
                ticks += 1
                if bound and ticks % LAYER_CHECK_TICKS == 0 and not done.is_set():
                    with contextlib.suppress(Exception):  # measured again after the step
                        used = self.steps.layer_size(state.container)
                        if used > bound:
                            over.append(used)
                            stop.set()
                            return

        threading.Thread(target=watch, name="gpu-containers-build-watch", daemon=True).start()
        return stop, over, done

    # ------------------------------------------------------------------ COPY and ADD

    def _copy(self, state: _Stage, ins: Instruction, index: int) -> None:
        env = state.words_env
        where = ins.where
        words = list(ins.json) if ins.json is not None else recipes.lex_words(ins.text, env, where)
        if ins.json is not None:
            words = [recipes.substitute(w, env, where) for w in words]
        sources, dest_word = words[:-1], words[-1]
        dest = posixpath.join(state.workdir or "/", dest_word)
        into_dir = dest_word.endswith("/") or len(sources) > 1
        chmod_flag = ins.flag("chmod")
        chmod = int(chmod_flag, 8) if chmod_flag else None
        chown = ins.flag("chown")
        owner = self._owner(state, recipes.expand(chown, env, where), where) if chown else (0, 0)
        source = ins.flag("from")
        # On disk, not in memory: a COPY may be as large as the build's folder.
        with tempfile.TemporaryFile(prefix="jupyter-gpu-containers-copy-") as out:
            with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
                writer = _Rewriter(tar, owner, chmod, self.plan.max_layer_bytes, ins, self)
                if source is None:
                    self._from_context(writer, sources, dest, into_dir, ins)
                else:
                    self._from_container(writer, state, source, sources, dest, into_dir, ins, index)
            out.seek(0)
            self.steps.put_archive(state.container, "/", out)
        self._check_layer(state, ins)

    def _context(self, where: str) -> dict[str, tarfile.TarInfo]:
        if self._context_index is None:
            if self.plan.context is None:
                raise RecipeRefused(f"{where}: this build has no folder to copy from.")
            self.plan.context.seek(0)
            # Closed with the build (run()'s finally), read by every COPY of the context.
            tar = tarfile.open(fileobj=self.plan.context, mode="r:")  # noqa: SIM115
            self._closing.enter_context(tar)
            self._context_tar = tar
            self._context_index = {
                posixpath.normpath(m.name.lstrip("/")).removeprefix("./"): m
                for m in tar.getmembers()
            }
        return self._context_index

    def _from_context(
        self,
        writer: _Rewriter,
        sources: list[str],
        dest: str,
        into_dir: bool,
        ins: Instruction,
    ) -> None:
        index = self._context(ins.where)
        tar = self._context_tar
        assert tar is not None
        for pattern in sources:
            clean = posixpath.normpath(pattern.lstrip("/"))
            if clean == ".." or clean.startswith("../"):
                raise RecipeRefused(f"{ins.where}: {pattern[:200]} is outside the build's folder.")
            matched = _matches(index, "" if clean == "." else clean)
            if not matched:
                raise BuildFailed(
                    f"The builder could not build {self.plan.name}: {ins.where}: "
                    f"{pattern[:200]} is not in the build's folder."
                )
            many = into_dir or len(matched) > 1 or any(c in pattern for c in "*?[")
            for name in matched:
                member = index.get(name)
                if member is None or member.isdir():  # a folder ("": the whole folder)
                    prefix = f"{name}/" if name else ""
                    for other, m in index.items():
                        if other.startswith(prefix) and other:
                            self._cancel_point()
                            writer.add(tar, m, posixpath.join(dest, other[len(prefix) :]))
                    continue
                target = posixpath.join(dest, posixpath.basename(name)) if many else dest
                archive = ins.keyword == "ADD" and member.isfile() and name.endswith(_ARCHIVES)
                if archive and self._unpack(writer, tar, member, dest):
                    continue
                writer.add(tar, member, target)

    def _unpack(
        self, writer: _Rewriter, tar: tarfile.TarFile, member: tarfile.TarInfo, dest: str
    ) -> bool:
        """ADD of a local tar archive: its entries below ``dest`` (False: not an archive)."""
        data = tar.extractfile(member)
        if data is None:
            return False
        with contextlib.ExitStack() as closing:
            try:
                inner = closing.enter_context(tarfile.open(fileobj=data, mode="r:*"))
            except (tarfile.TarError, OSError, EOFError):
                return False
            for m in inner.getmembers():
                self._cancel_point()
                name = posixpath.normpath("/" + m.name).lstrip("/")
                if name:
                    writer.add(inner, m, posixpath.join(dest, name), keep_owner=True)
        return True

    def _from_container(
        self,
        writer: _Rewriter,
        state: _Stage,
        source: str,
        sources: list[str],
        dest: str,
        into_dir: bool,
        ins: Instruction,
        index: int,
    ) -> None:
        stage = recipes.stage_index(source, self.names, index)
        if stage is not None and stage < len(self.stages):
            container = self.stages[stage].container
        else:
            image_id = self._admitted(source, ins.where)
            container = self.steps.create_source(image_id, labels=dict(self.plan.container_labels))
            self.containers.append(container)
        for path in sources:
            absolute = posixpath.normpath("/" + path)
            stream = self.steps.get_archive(container, absolute)
            with contextlib.closing(stream), tarfile.open(fileobj=stream, mode="r|") as tar:
                top = ""
                for m in tar:
                    self._cancel_point()
                    name = posixpath.normpath(m.name)
                    if not top:
                        top = name
                        if m.isdir():
                            continue  # a folder: its contents go to dest
                        target = (
                            posixpath.join(dest, posixpath.basename(absolute)) if into_dir else dest
                        )
                        writer.add(tar, m, target)
                        continue
                    rest = name[len(top) :].lstrip("/")
                    writer.add(tar, m, posixpath.join(dest, rest))

    def _cancel_point(self) -> None:
        if self.cancelled.is_set():
            raise SaveCancelled()

    def _owner(self, state: _Stage, text: str, where: str) -> tuple[int, int]:
        """--chown's user and group as numbers: numbers as they are, names looked up in the
        stage's own /etc/passwd and /etc/group."""
        user, _, group = text.partition(":")
        uid = self._lookup(state, "/etc/passwd", user, where) if user else 0
        if group:
            gid = self._lookup(state, "/etc/group", group, where)
        elif user.isdigit():
            gid = uid
        else:
            gid = self._lookup(state, "/etc/passwd", user, where, field_index=3)
        return uid, gid

    def _lookup(self, state: _Stage, path: str, name: str, where: str, field_index: int = 2) -> int:
        if name.isdigit():
            return int(name)
        stream = self.steps.get_archive(state.container, path)
        text = ""
        with contextlib.closing(stream), tarfile.open(fileobj=stream, mode="r|") as tar:
            for m in tar:
                f = tar.extractfile(m) if m.isfile() else None
                if f is not None:
                    text = f.read(1 << 20).decode("utf-8", "replace")
                break
        for line in text.splitlines():
            parts = line.split(":")
            if len(parts) > field_index and parts[0] == name and parts[field_index].isdigit():
                return int(parts[field_index])
        raise RecipeRefused(f"{where}: --chown names {name[:80]!r}, which {path} does not have.")


class _Rewriter:
    """Adds entries to the tar the service writes for put_archive: under their new path, owned
    as the COPY says, with --chmod's mode where given; files, folders and links only."""

    def __init__(
        self,
        out: tarfile.TarFile,
        owner: tuple[int, int],
        chmod: int | None,
        bound: int,
        ins: Instruction,
        executor: _Executor,
    ) -> None:
        self.out = out
        self.owner = owner
        self.chmod = chmod
        # What one COPY may write (the build's bound; 0: none): an archive ADD unpacks may
        # say it holds far more than its own size, and is written to this host's disk first.
        self.bound = bound
        self.written = 0
        self.ins = ins
        self.executor = executor

    def add(
        self, source: tarfile.TarFile, member: tarfile.TarInfo, path: str, keep_owner: bool = False
    ) -> None:
        name = posixpath.normpath("/" + path).lstrip("/")
        if not name:
            return
        info = tarfile.TarInfo(name)
        info.mtime = member.mtime
        if keep_owner:
            info.uid, info.gid = member.uid, member.gid
        else:
            info.uid, info.gid = self.owner
        info.mode = self.chmod if self.chmod is not None else (member.mode & 0o7777)
        if member.isdir():
            info.type = tarfile.DIRTYPE
            self.out.addfile(info)
        elif member.issym():
            info.type = tarfile.SYMTYPE
            info.linkname = member.linkname
            info.mode = 0o777
            self.out.addfile(info)
        elif member.isfile():
            self.written += member.size
            if self.bound and self.written > self.bound:
                raise self.executor._too_large(self.written, self.ins)
            info.type = tarfile.REGTYPE
            info.size = member.size
            data = source.extractfile(member)
            self.out.addfile(info, data if data is not None else io.BytesIO(b""))
        # Hard links, devices, pipes: nothing a build copies.


def _matches(index: dict[str, tarfile.TarInfo], pattern: str) -> list[str]:
    """The context's paths ``pattern`` names: itself, or its wildcards matched one path part at
    a time (a "*" never crosses a "/"), as Docker matches a COPY's sources."""
    if pattern in ("", "."):
        return [""]
    if not any(c in pattern for c in "*?["):
        inside = pattern + "/"
        return [pattern] if pattern in index or any(n.startswith(inside) for n in index) else []
    parts = pattern.split("/")
    return sorted(
        name
        for name in index
        if len(name.split("/")) == len(parts)
        and all(fnmatch.fnmatchcase(a, b) for a, b in zip(name.split("/"), parts, strict=True))
    )


def _shown(ins: Instruction) -> str:
    text = " ".join(ins.json) if ins.json is not None else ins.text
    return " ".join(text.split())[:300]
