"""The kernel's own name inside its container: the /etc/passwd and /etc/group it sees.

A kernel runs as its user's uid and gid (checks.kernel_user), which an image's own account
files rarely list: `whoami`, `id -un`, ssh, git's default identity and anything else that asks
the C library who it is then fail ("cannot find name for user ID 1004"). The image is never
written to. Instead the kernel's container gets account files of its own, bind-mounted read-only
over /etc/passwd and /etc/group: the user's entry first, then the image's own entries (as its
probe read them, probe.py), so that its system accounts keep their names.

The image's files are image metadata, which anyone who can build or push an image controls: only
well-formed lines are kept, none may claim the user's uid, gid or names, and both files are
bounded in lines and bytes. Pure functions: the provisioner writes the result into the kernel's
private directory (privatedirs.py) and the launch plan mounts it.
"""

from __future__ import annotations

import grp
import pwd
import re

PASSWD_FILE = "passwd"
GROUP_FILE = "group"

# What a probe reads of each file, and what is kept of an image's lines.
MAX_FILE_BYTES = 64 * 1024
MAX_LINES = 1000
MAX_LINE_BYTES = 512

# POSIX's portable user names, a little wider (dots, a leading underscore), as useradd takes them.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9._-]{0,31}")
# A field of an account line: no separator, no control character.
_FIELD = re.compile(r"[^:\x00-\x1f\x7f]*")


def account_name(name: str, uid: int) -> str:
    """``name`` when it is a portable account name; else ``user<uid>`` (a KernelUser's name
    comes from an identity provider, which may allow characters /etc/passwd cannot hold)."""
    return name if _NAME.fullmatch(name) else f"user{uid}"


def host_account_name(uid: int) -> str:
    """The host's name for ``uid`` ("" when it has none). Blocking (NSS)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


def host_group_name(gid: int) -> str:
    """The host's name for group ``gid`` ("" when it has none). Blocking (NSS)."""
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


def _lines(text: str, fields: int) -> list[list[str]]:
    kept: list[list[str]] = []
    for line in text[:MAX_FILE_BYTES].splitlines():
        if len(kept) >= MAX_LINES:
            break
        if not line or line.startswith("#") or len(line.encode()) > MAX_LINE_BYTES:
            continue
        parts = line.split(":")
        if len(parts) != fields or not all(_FIELD.fullmatch(p) for p in parts):
            continue
        if not _NAME.fullmatch(parts[0]) or not parts[2].isdigit():
            continue
        kept.append(parts)
    return kept


def passwd_text(image_passwd: str, uid: int, gid: int, name: str, home: str) -> str:
    """The kernel's /etc/passwd: its user's entry, then the image's others (root's made up
    when the image lists none)."""
    name = account_name(name, uid)
    ours = [name, "x", str(uid), str(gid), name, _field(home) or "/", "/bin/sh"]
    others = [
        parts
        for parts in _lines(image_passwd, 7)
        if int(parts[2]) != uid and parts[0] != name and parts[3].isdigit()
    ]
    if uid != 0 and not any(int(parts[2]) == 0 for parts in others):
        others.insert(0, ["root", "x", "0", "0", "root", "/root", "/bin/sh"])
    return "".join(":".join(parts) + "\n" for parts in [ours, *others])


def group_text(image_group: str, gid: int, group_name: str, member: str, uid: int) -> str:
    """The kernel's /etc/group: its user's primary group first (with the user as member),
    then the image's others."""
    member = account_name(member, uid)
    group_name = group_name if _NAME.fullmatch(group_name) else member
    ours = [group_name, "x", str(gid), member]
    others = [
        parts for parts in _lines(image_group, 4) if int(parts[2]) != gid and parts[0] != group_name
    ]
    if gid != 0 and not any(int(parts[2]) == 0 for parts in others):
        others.insert(0, ["root", "x", "0", ""])
    return "".join(":".join(parts) + "\n" for parts in [ours, *others])


def _field(value: str) -> str:
    return value if _FIELD.fullmatch(value) else ""
