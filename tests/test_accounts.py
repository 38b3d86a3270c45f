"""The kernel's own /etc/passwd and /etc/group (accounts.py): its user first, the image's own
entries kept, and nothing an image's files hold can take the user's name, uid or gid, break a
line, or grow without bound."""

from __future__ import annotations

from jupyter_gpu_containers.host.accounts import (
    MAX_FILE_BYTES,
    MAX_LINES,
    account_name,
    group_text,
    passwd_text,
)

DEBIAN_PASSWD = (
    "root:x:0:0:root:/root:/bin/bash\n"
    "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    "jovyan:x:1000:100::/home/jovyan:/bin/bash\n"
)
DEBIAN_GROUP = "root:x:0:\nusers:x:100:\nnogroup:x:65534:\n"


def entries(text: str) -> list[list[str]]:
    return [line.split(":") for line in text.splitlines()]


def test_the_user_comes_first_and_the_images_accounts_keep_their_names() -> None:
    passwd = entries(passwd_text(DEBIAN_PASSWD, 1004, 1004, "alice", "/home/jupyter"))
    assert passwd[0] == ["alice", "x", "1004", "1004", "alice", "/home/jupyter", "/bin/sh"]
    assert [p[0] for p in passwd[1:]] == ["root", "daemon", "nobody", "jovyan"]
    group = entries(group_text(DEBIAN_GROUP, 1004, "alice", "alice", 1004))
    assert group[0] == ["alice", "x", "1004", "alice"]
    assert [g[0] for g in group[1:]] == ["root", "users", "nogroup"]


def test_an_image_entry_for_the_users_uid_or_name_gives_way() -> None:
    # jovyan is uid 1000 in the image; the user is uid 1000 on the host, named bob.
    passwd = entries(
        passwd_text(DEBIAN_PASSWD + "bob:x:0:0::/root:/bin/sh\n", 1000, 100, "bob", "/h")
    )
    assert passwd[0][:4] == ["bob", "x", "1000", "100"]
    assert not [p for p in passwd[1:] if p[2] == "1000" or p[0] == "bob"]
    group = entries(group_text(DEBIAN_GROUP, 100, "users", "bob", 1000))
    assert group[0] == ["users", "x", "100", "bob"]
    assert len([g for g in group if g[2] == "100"]) == 1


def test_malformed_and_hostile_lines_are_dropped() -> None:
    hostile = (
        "root:x:0:0:root:/root:/bin/bash\n"
        "evil:x:1:1:a\x1bb:/:/bin/sh\n"  # a control character in a field
        "short:x:2:2\n"  # too few fields
        "extra:x:3:3:g:/:/bin/sh:more\n"  # too many
        "notanumber:x:abc:3::/:/bin/sh\n"
        "-dash:x:4:4::/:/bin/sh\n"  # not an account name
        + "long:x:5:5:"
        + "g" * 600
        + ":/:/bin/sh\n"
        + "# a comment\n\n"
        "ok:x:6:6::/:/bin/sh\n"
    )
    passwd = entries(passwd_text(hostile, 1004, 1004, "alice", "/home/jupyter"))
    assert [p[0] for p in passwd] == ["alice", "root", "ok"]


def test_the_files_are_bounded_whatever_the_image_holds() -> None:
    many = "".join(f"u{i}:x:{i + 2000}:{i + 2000}::/:/bin/sh\n" for i in range(50_000))
    text = passwd_text(many, 1004, 1004, "alice", "/home/jupyter")
    assert len(text.splitlines()) <= MAX_LINES + 2  # the user's, root's made up, the image's
    assert len(text.encode()) <= MAX_FILE_BYTES + 1024


def test_root_is_listed_even_when_the_image_lists_nobody() -> None:
    passwd = entries(passwd_text("", 1004, 1004, "alice", "/home/jupyter"))
    assert [p[0] for p in passwd] == ["alice", "root"]
    assert entries(group_text("", 1004, "", "alice", 1004)) == [
        ["alice", "x", "1004", "alice"],
        ["root", "x", "0", ""],
    ]


def test_a_name_passwd_cannot_hold_becomes_user_and_uid() -> None:
    assert account_name("alice", 1004) == "alice"
    assert account_name("alice:x:0:0", 1004) == "user1004"
    assert account_name("al ice", 1004) == "user1004"
    assert account_name("a" * 40, 1004) == "user1004"
    passwd = entries(passwd_text("", 1004, 1004, "x\nroot:x:0:0", "/home/jupyter"))
    assert passwd[0][0] == "user1004" and len(passwd) == 2
    # A home with a separator in it cannot split the line either.
    assert entries(passwd_text("", 1004, 1004, "alice", "/a:b"))[0][5] == "/"
