"""Per-user tokens for the kernel service without JupyterHub.

A user's Jupyter server sends its token to the kernel service (``jupyter gpu-containers serve``)
in every request, as Jupyter Server's gateway client does (``GatewayClient.auth_token``, or
``JUPYTER_GATEWAY_AUTH_TOKEN``). The service maps the token to a user name here, and to an account
in identity.py. Nothing a client sends besides the token decides who it is.

**Commands** (run as root, or as the file's owner)::

    jupyter gpu-containers token add USERNAME [--note TEXT]    # prints the new token, once
    jupyter gpu-containers token revoke USERNAME [--id ID]     # all of a user's tokens, or one
    jupyter gpu-containers token list [--json]                 # never shows a hash

Each takes ``--tokens-file PATH`` (``ServiceTokens.tokens_file``, default
``/etc/jupyter-gpu-containers/tokens``) and reads the service's own config file
(``jupyter_gpu_containers_serve_config``), so a path configured there applies too. A change takes
effect in a running service within a second, without a restart.

**Tokens** look like ``jgc_1a2b3c4d_<43 URL-safe characters>``: a prefix that secret scanners and
people recognise, an 8-hex-digit id (which names the token in ``list`` and ``revoke --id``; it is
no secret), and 256 random bits. Only the token's SHA-256 is stored: a token is random, not a
password, so a plain hash is as strong as the token and costs a dict lookup per request.

**The file**: one token per line, five fields separated by white space, the last optional and
free text to the end of the line; blank lines and lines starting with ``#`` are ignored::

    # username  id        sha256                   created               note
    alice       1a2b3c4d  sha256:<64 hex digits>   2025-01-31T09:00:00Z  laptop

It is parsed strictly: a line that is not so stops the service at start with its line number (and
refuses every token while a running service finds it so). Since the file decides who anybody is,
the service refuses it, with a sentence, unless it is a regular file (not a symbolic link) owned
by root or by the service's own user, readable by its owner only (mode 0600), in a directory that
only root or the service's user can write (every directory above it too).

A service that runs as a dedicated account (not root) must be able to read the file: leave the
directory root's (``/etc/jupyter-gpu-containers``, 0755), give the file to the account once
(``chown ACCOUNT /etc/jupyter-gpu-containers/tokens``) and run the commands as root; a change keeps
the file's owner.

Blocking, all of it (file system): the service calls :meth:`ServiceTokens.user_for` on a worker
thread; its usual path is a dict lookup and, at most once a second, one ``lstat``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import hmac
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

from traitlets import Float, Unicode
from traitlets.config import LoggingConfigurable

from ..base.errors import ContainerKernelError, PathRefused, ValueRefused
from ..base.safefiles import describe_mode, open_dir, owner_name, write_atomic

DEFAULT_TOKENS_FILE = "/etc/jupyter-gpu-containers/tokens"
TOKEN_PREFIX = "jgc_"
# The same names identity.UserDirectory accepts: POSIX's portable user names, plus '@' and '.',
# which JupyterHub's user names commonly hold.
_USERNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}")
_TOKEN_ID = re.compile(r"[0-9a-f]{8}")
_TOKEN = re.compile(r"jgc_([0-9a-f]{8})_[A-Za-z0-9_-]{43}")
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
_CREATED = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_NOTE_MAX = 200
# Far more than any host's users need; a file larger than this is not one this tool wrote.
_FILE_MAX = 4 << 20
_HEADER = (
    "# Kernel service tokens: jupyter gpu-containers token add | revoke | list.\n"
    "# username  id  sha256:<hash of the token>  created (UTC)  note\n"
)
# Compared against when a token's id is unknown, so that an unknown id costs what a wrong secret
# costs (ids are no secret, but there is no reason to tell them apart by timing either).
_NO_DIGEST = hashlib.sha256(b"no such token").hexdigest()


TOKENS_FILE = "ServiceTokens.tokens_file"  # the option that says where the token file is


class TokenFileRefused(ContainerKernelError):
    """The service's token file is unsafe or malformed, or cannot be changed by whoever runs the
    command."""

    status = 500
    reason_phrase = "Token file refused"


class TokenFileMissing(TokenFileRefused):
    """The service's token file (or its directory) does not exist yet."""


@dataclass(frozen=True)
class TokenEntry:
    """One line of the token file."""

    username: str
    token_id: str
    digest: str  # sha256 of the whole token, hex
    created: str  # ISO 8601, UTC, seconds
    note: str = ""

    def line(self) -> str:
        fields = [self.username, self.token_id, f"sha256:{self.digest}", self.created]
        if self.note:
            fields.append(self.note)
        return " ".join(fields) + "\n"

    def public(self) -> dict[str, str]:
        """What ``token list`` shows: everything but the hash."""
        return {
            "username": self.username,
            "id": self.token_id,
            "created": self.created,
            "note": self.note,
        }


@dataclass(frozen=True)
class _Parsed:
    lines: list[tuple[str, TokenEntry | None]]  # every line as read, with its token if any
    owner: tuple[int, int]  # uid, gid of the file
    signature: tuple[int, ...]

    @property
    def entries(self) -> list[TokenEntry]:
        return [entry for _, entry in self.lines if entry is not None]


def digest_of(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_username(name: str) -> str:
    if not _USERNAME.fullmatch(name):
        raise ValueRefused(
            f"{name[:80]!r} is not a user name tokens can be given to: use letters, digits, "
            "'_', '.', '@' and '-' (not first), at most 64 characters."
        )
    return name


def check_note(note: str) -> str:
    if len(note) > _NOTE_MAX or not note.isprintable() or note != note.strip():
        raise ValueRefused(
            f"A token's note must be printable text on one line, without leading or trailing "
            f"white space, at most {_NOTE_MAX} characters."
        )
    return note


def _signature(info: os.stat_result) -> tuple[int, ...]:
    """What changes when the file is replaced (a new inode), rewritten, chmod-ed or chown-ed."""
    return (
        info.st_dev,
        info.st_ino,
        info.st_size,
        info.st_mtime_ns,
        info.st_ctime_ns,
        info.st_mode,
        info.st_uid,
    )


def _user_name(uid: int) -> str:
    name = owner_name(uid)
    return name if name.startswith("uid ") else f"{name} (uid {uid})"


def _add_command(path: str) -> str:
    where = "" if path == DEFAULT_TOKENS_FILE else f" --tokens-file {path}"
    return f"jupyter gpu-containers token add USERNAME{where}"


def _check_path(path: str) -> tuple[str, str]:
    if not os.path.isabs(path) or "\0" in path or os.path.normpath(path) != path:
        raise TokenFileRefused(
            f"The service's token file must be a normalised absolute path; it is {path!r}.",
            setting=TOKENS_FILE,
        )
    directory, name = os.path.split(path)
    if not name:
        raise TokenFileRefused(
            f"The service's token file {path!r} names a directory, not a file.",
            setting=TOKENS_FILE,
        )
    return directory, name


@contextlib.contextmanager
def _directory(path: str, *, create: bool = False, writer: bool = False) -> Iterator[int]:
    """A descriptor of the token file's directory, reached without following a symbolic link,
    owned (and every directory above it) by root or this process's user and writable by no one
    else. ``create``: make it if it is missing (0700; 0755 when root makes it, so that a service
    account can reach a file root gave it)."""
    directory, _ = _check_path(path)
    what = "directory of the service token file"
    for attempt in (1, 2):
        try:
            fd = open_dir(directory, trusted={os.geteuid()}, what=what)
            break
        except FileNotFoundError:
            if not create or attempt == 2:
                raise TokenFileMissing(
                    f"The service token file {path} does not exist (nor does its directory). "
                    f"Create it with a user's first token: {_add_command(path)}"
                ) from None
            try:
                os.mkdir(directory, 0o755 if os.geteuid() == 0 else 0o700)
            except FileExistsError:
                pass
            except OSError as e:
                raise TokenFileRefused(
                    f"The directory {directory} of the service token file cannot be created: "
                    f"{e.strerror}."
                ) from None
        except PathRefused as e:
            hint = ""
            if writer and os.geteuid() != 0:
                hint = " Run this command as root or as the token file's owner."
            raise TokenFileRefused(e.sentence + hint) from None
    try:
        info = os.fstat(fd)
        # open_dir lets a sticky directory (/tmp) through: anyone may create names in it, so the
        # file's name could be taken first. Not for the file that says who everybody is.
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise TokenFileRefused(
                f"The service token file's directory {directory} (mode "
                f"{describe_mode(info.st_mode)}) is writable by other users, who could put a "
                "file of their own in its place. Keep the token file in a directory only root "
                "or the service's user can write (chmod go-w, or another directory)."
            )
        yield fd
    finally:
        os.close(fd)


def _read(path: str, dir_fd: int, *, writer: bool) -> _Parsed | None:
    """The token file, checked and parsed (None when it does not exist). ``writer``: whoever runs
    this must own the file (or be root) to change it."""
    _, name = _check_path(path)
    euid = os.geteuid()
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd
        )
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise TokenFileRefused(
                f"The service token file {path} is a symbolic link; it must be a regular file "
                "(a link could be pointed at another file)."
            ) from None
        if e.errno in (errno.EACCES, errno.EPERM):
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                whose = (
                    f"it belongs to {_user_name(info.st_uid)} with mode "
                    f"{describe_mode(info.st_mode)}"
                )
            except OSError:
                whose = "it cannot even be looked at"
            raise TokenFileRefused(
                f"The service token file {path} cannot be read by {_user_name(euid)}: {whose}. "
                + (
                    "Run this command as root or as the file's owner."
                    if writer
                    else "Give it to the service's user (chown), mode 0600."
                )
            ) from None
        raise TokenFileRefused(
            f"The service token file {path} cannot be opened: {e.strerror}."
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise TokenFileRefused(f"The service token file {path} is not a regular file.")
        if writer and euid not in (0, info.st_uid):
            raise TokenFileRefused(
                f"The service token file {path} belongs to {_user_name(info.st_uid)}: run this "
                "command as root or as that user."
            )
        if not writer and info.st_uid not in (0, euid):
            raise TokenFileRefused(
                f"The service token file {path} belongs to {_user_name(info.st_uid)}, who could "
                "give themselves or anyone a token. It must belong to root or to the service's "
                f"user ({_user_name(euid)})."
            )
        if info.st_mode & 0o077:
            raise TokenFileRefused(
                f"The service token file {path} has mode {describe_mode(info.st_mode)}: other "
                f"users could read or change who holds which token. Make it readable by its "
                f"owner only: chmod 600 {path}"
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(_FILE_MAX + 1)
    finally:
        os.close(fd)
    if len(data) > _FILE_MAX:
        raise TokenFileRefused(
            f"The service token file {path} is larger than {_FILE_MAX >> 20} MiB; it is not a "
            "token file."
        )
    return _Parsed(_parse(path, data), (info.st_uid, info.st_gid), _signature(info))


def _parse(path: str, data: bytes) -> list[tuple[str, TokenEntry | None]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        at = data[: e.start].count(b"\n") + 1
        raise TokenFileRefused(
            f"Line {at} of the service token file {path} is not UTF-8 text."
        ) from None
    lines: list[tuple[str, TokenEntry | None]] = []
    ids: dict[str, int] = {}
    rows = text.split("\n")
    if rows[-1] == "":
        rows.pop()  # the final newline ends the last line; it starts none
    for number, line in enumerate(rows, start=1):
        content = line.strip(" \t")
        if not content or content.startswith("#"):
            lines.append((line + "\n", None))
            continue
        entry = _parse_line(path, number, content)
        if entry.token_id in ids:
            raise TokenFileRefused(
                f"Line {number} of the service token file {path} repeats the token id "
                f"{entry.token_id} of line {ids[entry.token_id]}; every token needs its own id."
            )
        ids[entry.token_id] = number
        lines.append((entry.line(), entry))
    return lines


def _parse_line(path: str, number: int, content: str) -> TokenEntry:
    def refuse(problem: str) -> TokenFileRefused:
        return TokenFileRefused(
            f"Line {number} of the service token file {path} is not a token line: {problem}. "
            "A line is: username id sha256:<64 hex digits> created (YYYY-MM-DDThh:mm:ssZ) "
            "[note]."
        )

    if not content.replace("\t", " ").isprintable():
        raise refuse("it holds control characters")
    fields = content.split(None, 4)
    if len(fields) < 4:
        raise refuse(f"it has {len(fields)} fields, not 4 or 5")
    username, token_id, digest, created = fields[:4]
    note = fields[4].strip() if len(fields) == 5 else ""
    if not _USERNAME.fullmatch(username):
        raise refuse(f"{username[:80]!r} is not a user name")
    if not _TOKEN_ID.fullmatch(token_id):
        raise refuse(f"{token_id[:80]!r} is not a token id (8 lowercase hex digits)")
    m = _DIGEST.fullmatch(digest)
    if m is None:
        raise refuse("the third field is not sha256:<64 lowercase hex digits>")
    if not _CREATED.fullmatch(created):
        raise refuse(f"{created[:80]!r} is not a UTC time")
    try:
        datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        raise refuse(f"{created!r} is not a date and time") from None
    if len(note) > _NOTE_MAX:
        raise refuse(f"its note is longer than {_NOTE_MAX} characters")
    return TokenEntry(username, token_id, m.group(1), created, note)


class ServiceTokens(LoggingConfigurable):
    """The kernel service's per-user tokens, from an administrator's file (see the module's
    docstring for its format and the commands that change it)."""

    tokens_file = Unicode(
        DEFAULT_TOKENS_FILE,
        config=True,
        help="""The file of per-user tokens the kernel service accepts when it does not run
        under JupyterHub: one line per token (user name, id, SHA-256 of the token, created,
        note). `jupyter gpu-containers token add USERNAME` creates it and adds tokens, `token
        revoke USERNAME [--id ID]` removes them, `token list` shows them. It must be a regular
        file owned by root or the service's user, mode 0600, in a directory no one else can
        write: the service refuses to start otherwise. Changes take effect within a second,
        without a restart.""",
    )

    reload_interval = Float(
        1.0,
        config=True,
        help="""How often, at most, the service looks at the token file for changes (seconds;
        one lstat). A revoked token stops working within this time.""",
    )

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._lock = threading.Lock()
        self._by_id: dict[str, TokenEntry] = {}
        self._signature: tuple[int, ...] | None = None
        self._looked_at = -float("inf")
        self._problem = ""

    def check(self) -> None:
        """Load the file, or raise TokenFileRefused with the reason (at the service's start)."""
        with self._lock:
            self._looked_at = time.monotonic()
            self._install(self._load())

    def user_for(self, token: str) -> str | None:
        """The user name ``token`` belongs to, or None. Blocking (at most one lstat a second)."""
        if time.monotonic() - self._looked_at >= self.reload_interval:
            self._refresh()
        m = _TOKEN.fullmatch(token) if isinstance(token, str) else None
        if m is None:
            return None
        entry = self._by_id.get(m.group(1))
        expected = entry.digest if entry is not None else _NO_DIGEST
        if hmac.compare_digest(digest_of(token), expected) and entry is not None:
            return entry.username
        return None

    def entries(self) -> list[TokenEntry]:
        """The tokens loaded now (check() first)."""
        return list(self._by_id.values())

    def _load(self) -> _Parsed:
        path = self.tokens_file
        with _directory(path) as dir_fd:
            parsed = _read(path, dir_fd, writer=False)
        if parsed is None:
            raise TokenFileMissing(
                f"The service token file {path} does not exist. Create it with a user's first "
                f"token: {_add_command(path)}"
            )
        return parsed

    def _install(self, parsed: _Parsed) -> None:
        self._by_id = {entry.token_id: entry for entry in parsed.entries}
        self._signature = parsed.signature
        self._problem = ""

    def _refresh(self) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._looked_at < self.reload_interval:
                return  # another thread just looked
            self._looked_at = now
            try:
                info = os.stat(self.tokens_file, follow_symlinks=False)
                if _signature(info) == self._signature and not self._problem:
                    return
            except OSError:
                pass  # gone: _load says so
            try:
                parsed = self._load()
            except ContainerKernelError as e:
                # Fail closed: a file that went wrong may be one whose revocations did not
                # take. Every token is refused until it is right again.
                self._by_id = {}
                self._signature = None
                if e.sentence != self._problem:
                    self.log.error("Refusing every token until this is fixed: %s", e.log_text)
                self._problem = e.sentence
                return
            was = " is usable again" if self._problem else " changed"
            self._install(parsed)
            self.log.info(
                "The service token file %s%s: %d tokens.", self.tokens_file, was, len(self._by_id)
            )


# What the commands do. Each takes the directory's flock for its read-modify-write, so two
# administrators adding tokens at once both get theirs.


@contextlib.contextmanager
def _locked(path: str, *, create: bool) -> Iterator[int]:
    with _directory(path, create=create, writer=True) as dir_fd:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)
        try:
            yield dir_fd
        finally:
            fcntl.flock(dir_fd, fcntl.LOCK_UN)


def _write(path: str, dir_fd: int, lines: list[str], owner: tuple[int, int] | None) -> None:
    _, name = _check_path(path)
    try:
        # The owner stays: root changing the file of a service account leaves it the account's.
        write_atomic(dir_fd, name, "".join(lines).encode("utf-8"), 0o600, owner)
    except OSError as e:
        raise TokenFileRefused(
            f"The service token file {path} cannot be written by {_user_name(os.geteuid())}: "
            f"{e.strerror}. Run this command as root or as the owner of its directory."
        ) from None


def add_token(path: str, username: str, note: str = "") -> tuple[str, TokenEntry]:
    """A new token for ``username``: (the token, shown to the administrator once; its entry).
    Creates the file (and its directory) when missing."""
    check_username(username)
    check_note(note)
    with _locked(path, create=True) as dir_fd:
        parsed = _read(path, dir_fd, writer=True)
        lines = [line for line, _ in parsed.lines] if parsed else [_HEADER]
        taken = {entry.token_id for entry in parsed.entries} if parsed else set()
        token_id = secrets.token_hex(4)
        while token_id in taken:
            token_id = secrets.token_hex(4)
        token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        entry = TokenEntry(username, token_id, digest_of(token), created, note)
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(entry.line())
        _write(path, dir_fd, lines, parsed.owner if parsed else None)
    return token, entry


def revoke_tokens(path: str, username: str, token_id: str | None = None) -> list[TokenEntry]:
    """Remove ``username``'s tokens (only ``token_id`` when given); the entries removed. A user
    without tokens, or an id that is not theirs, is a sentence."""
    check_username(username)
    if token_id is not None and not _TOKEN_ID.fullmatch(token_id):
        raise ValueRefused(
            f"{token_id[:80]!r} is not a token id: `jupyter gpu-containers token list` shows "
            "them (8 hex digits)."
        )
    with _locked(path, create=False) as dir_fd:
        parsed = _read(path, dir_fd, writer=True)
        if parsed is None:
            raise TokenFileMissing(
                f"The service token file {path} does not exist, so there is nothing to revoke."
            )

        def revoked(entry: TokenEntry | None) -> bool:
            return (
                entry is not None
                and entry.username == username
                and (token_id is None or entry.token_id == token_id)
            )

        gone = [entry for _, entry in parsed.lines if entry is not None and revoked(entry)]
        if not gone:
            which = f"no token {token_id}" if token_id else "no tokens"
            raise TokenFileRefused(f"{username} has {which} in {path}; nothing was revoked.")
        kept = [line for line, entry in parsed.lines if not revoked(entry)]
        _write(path, dir_fd, kept, parsed.owner)
    return gone


def list_tokens(path: str) -> list[TokenEntry]:
    """Every token in the file (an empty list when it does not exist yet)."""
    try:
        with _directory(path, writer=True) as dir_fd:
            parsed = _read(path, dir_fd, writer=True)
    except TokenFileMissing:
        return []
    return parsed.entries if parsed else []
