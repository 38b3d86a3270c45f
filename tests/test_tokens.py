"""The kernel service's per-user tokens without JupyterHub (tokens.py) and their commands
(`jupyter gpu-containers token add | revoke | list`): stored hashed, the file refused unless only
its owner (root or the service's user) can read or change it, a revoke taking effect in a running
service without a restart. The refusals are checked with the real accounts (hostusers.py): a user
outside the docker group who could write the file, or who runs the commands."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hostusers import MALLORY, as_user, ids_of, needs_accounts

from jupyter_gpu_containers.host import tokens as T
from jupyter_gpu_containers.host.tokens import (
    ServiceTokens,
    TokenFileMissing,
    TokenFileRefused,
    add_token,
    list_tokens,
    revoke_tokens,
)

# A token as tokens.py documents it: the prefix, the 8-hex-digit id, then 43 URL-safe characters
# of secret, which may themselves hold '_' (read a token with this, never by splitting it).
TOKEN = re.compile(r"jgc_(?P<id>[0-9a-f]{8})_(?P<secret>[A-Za-z0-9_-]{43})")
CLI = [sys.executable, "-m", "jupyter_gpu_containers.cli", "token"]


@pytest.fixture
def top() -> Iterator[Path]:
    """A root-owned directory every account may traverse (as /etc is), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="jgc-tokens-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def tokens_file(top: Path) -> Path:
    return top / "etc" / "tokens"


def service(path: Path, **traits: Any) -> ServiceTokens:
    tokens = ServiceTokens(tokens_file=str(path), log=logging.getLogger("test-tokens"), **traits)
    tokens.check()
    return tokens


def refusal(path: Path) -> str:
    with pytest.raises(TokenFileRefused) as caught:
        ServiceTokens(tokens_file=str(path)).check()
    return caught.value.sentence


def cli(*args: str, user: str = "", config_dir: Path | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    # No host configuration reaches the commands but the test's own.
    env["JUPYTER_CONFIG_DIR"] = str(config_dir or "/nonexistent")
    env["JUPYTER_CONFIG_PATH"] = ""
    env["HOME"] = "/nonexistent"
    prefix = as_user(user) if user else []
    return subprocess.run(
        [*prefix, *CLI, *args], capture_output=True, text=True, timeout=60, cwd="/", env=env
    )


# The tokens and the file


def test_a_token_is_shown_once_and_stored_hashed(tokens_file: Path) -> None:
    token, entry = add_token(str(tokens_file), "alice", "laptop")
    m = TOKEN.fullmatch(token)
    assert m is not None, token
    assert m.group(1) == entry.token_id
    text = tokens_file.read_text()
    assert token not in text
    # The whole secret: a piece of it (a split on '_', which the secret may hold) can be as short
    # as one character, which the file's hash or id may hold by chance.
    assert m.group("secret") not in text
    assert f"alice {entry.token_id} sha256:{hashlib.sha256(token.encode()).hexdigest()} " in text
    assert text.rstrip().endswith(" laptop")
    # Created with the modes the checks ask for: the directory (made by root) 0755, the file 0600.
    assert tokens_file.parent.stat().st_mode & 0o777 == 0o755
    assert tokens_file.stat().st_mode & 0o777 == 0o600


def test_user_for_maps_each_token_to_its_user(tokens_file: Path) -> None:
    alice, _ = add_token(str(tokens_file), "alice")
    alice2, _ = add_token(str(tokens_file), "alice", "second machine")
    bob, _ = add_token(str(tokens_file), "bob.smith@example")
    tokens = service(tokens_file)
    assert tokens.user_for(alice) == "alice"
    assert tokens.user_for(alice2) == "alice"
    assert tokens.user_for(bob) == "bob.smith@example"
    # The right id with another secret, another id, no token at all.
    forged = alice[: -len("x")] + ("A" if alice[-1] != "A" else "B")
    assert tokens.user_for(forged) is None
    alice_m = TOKEN.fullmatch(alice)
    assert alice_m is not None, alice
    assert tokens.user_for("jgc_00000000_" + alice_m.group("secret")) is None
    for junk in ("", "token", alice + "x", alice.upper(), " " + alice, None, 42):
        assert tokens.user_for(junk) is None  # type: ignore[arg-type]


def test_every_token_gets_its_own_id(tokens_file: Path) -> None:
    made = [add_token(str(tokens_file), "alice") for _ in range(30)]
    assert len({entry.token_id for _, entry in made}) == 30
    assert len({token for token, _ in made}) == 30
    assert [e.token_id for e in list_tokens(str(tokens_file))] == [e.token_id for _, e in made]


def test_tokens_are_compared_in_constant_time(
    tokens_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, entry = add_token(str(tokens_file), "alice")
    tokens = service(tokens_file)
    compared: list[tuple[Any, Any, bool]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        result = real(a, b)
        compared.append((a, b, result))
        return result

    monkeypatch.setattr(hmac, "compare_digest", spy)
    wrong = f"jgc_{entry.token_id}_{'A' * 43}"
    assert tokens.user_for(wrong) is None
    assert compared == [(hashlib.sha256(wrong.encode()).hexdigest(), entry.digest, False)]
    assert tokens.user_for(token) == "alice"
    assert compared[-1] == (entry.digest, entry.digest, True)
    # An unknown id is compared too (against nothing that matches): same work, same answer.
    assert tokens.user_for(f"jgc_0badc0de_{'A' * 43}") is None
    assert len(compared) == 3
    assert compared[-1][2] is False


def test_usernames_and_notes_are_checked(tokens_file: Path) -> None:
    for name in ("", "-rf", "a b", "root\n", "x" * 65, "../etc", "al:ice"):
        with pytest.raises(T.ValueRefused, match="is not a user name"):
            add_token(str(tokens_file), name)
    for note in ("two\nlines", "tab\there", " padded", "x" * 201):
        with pytest.raises(T.ValueRefused, match="note"):
            add_token(str(tokens_file), "alice", note)
    assert not tokens_file.exists()


def test_revoke_takes_effect_in_a_running_service(tokens_file: Path) -> None:
    alice1, first = add_token(str(tokens_file), "alice")
    alice2, _ = add_token(str(tokens_file), "alice")
    bob, _ = add_token(str(tokens_file), "bob")
    tokens = service(tokens_file)  # the default: the file is looked at once a second at most
    assert tokens.user_for(alice1) == "alice"

    gone = revoke_tokens(str(tokens_file), "alice", first.token_id)
    assert [e.token_id for e in gone] == [first.token_id]
    revoked_at = time.monotonic()
    while tokens.user_for(alice1) is not None:
        assert time.monotonic() - revoked_at < 2.5, "the revoke did not take effect"
        time.sleep(0.05)
    assert tokens.user_for(alice2) == "alice"
    assert tokens.user_for(bob) == "bob"

    revoke_tokens(str(tokens_file), "alice")
    time.sleep(1.1)
    assert tokens.user_for(alice2) is None
    assert tokens.user_for(bob) == "bob"
    # A token added now works too, without a restart.
    carol, _ = add_token(str(tokens_file), "carol")
    time.sleep(1.1)
    assert tokens.user_for(carol) == "carol"


def test_a_request_costs_at_most_one_stat_a_second(
    tokens_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, _ = add_token(str(tokens_file), "alice")
    tokens = service(tokens_file)
    stats: list[str] = []
    real_stat = os.stat

    def counting(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        stats.append(str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", counting)
    began = time.monotonic()
    for _ in range(20_000):
        assert tokens.user_for(token) == "alice"
    spent = time.monotonic() - began
    assert stats.count(str(tokens_file)) <= int(spent) + 1
    assert spent / 20_000 < 0.0005  # a dict lookup and a hash, not a file read


def test_revoke_and_list_never_show_hashes_and_keep_comments(tokens_file: Path) -> None:
    token, entry = add_token(str(tokens_file), "alice", "lab machine")
    add_token(str(tokens_file), "bob")
    with tokens_file.open("a") as f:
        f.write("\n# bob's second token follows, added by hand\n")
    add_token(str(tokens_file), "bob")
    revoke_tokens(str(tokens_file), "bob")
    text = tokens_file.read_text()
    assert "# bob's second token follows, added by hand" in text
    assert "\nbob " not in text
    [listed] = list_tokens(str(tokens_file))
    assert listed.public() == {
        "username": "alice",
        "id": entry.token_id,
        "created": entry.created,
        "note": "lab machine",
    }
    assert service(tokens_file).user_for(token) == "alice"


def test_revoking_nothing_is_a_sentence(tokens_file: Path) -> None:
    with pytest.raises(TokenFileMissing, match="does not exist"):
        revoke_tokens(str(tokens_file), "alice")
    add_token(str(tokens_file.parent / "other"), "alice")  # the directory exists, the file not
    with pytest.raises(TokenFileMissing, match="does not exist, so there is nothing to revoke"):
        revoke_tokens(str(tokens_file), "alice")
    _, entry = add_token(str(tokens_file), "alice")
    with pytest.raises(TokenFileRefused, match=r"bob has no tokens in .*; nothing was revoked"):
        revoke_tokens(str(tokens_file), "bob")
    # Another user's id is not revoked through the wrong name.
    with pytest.raises(TokenFileRefused, match=f"bob has no token {entry.token_id}"):
        revoke_tokens(str(tokens_file), "bob", entry.token_id)
    with pytest.raises(T.ValueRefused, match="is not a token id"):
        revoke_tokens(str(tokens_file), "alice", "../../x")
    assert [e.token_id for e in list_tokens(str(tokens_file))] == [entry.token_id]


def test_concurrent_adds_all_land(tokens_file: Path) -> None:
    add_token(str(tokens_file), "first")
    made: list[str] = []

    def add(n: int) -> None:
        made.append(add_token(str(tokens_file), f"user{n}")[1].token_id)

    threads = [threading.Thread(target=add, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    listed = {e.token_id for e in list_tokens(str(tokens_file))}
    assert set(made) <= listed
    assert len(listed) == 13


def test_lookups_during_rewrites_always_answer_rightly(tokens_file: Path) -> None:
    token, _ = add_token(str(tokens_file), "alice")
    tokens = service(tokens_file, reload_interval=0.0)
    wrong: list[Any] = []
    stop = threading.Event()

    def look() -> None:
        while not stop.is_set():
            answer = tokens.user_for(token)
            if answer != "alice":
                wrong.append(answer)

    readers = [threading.Thread(target=look) for _ in range(4)]
    for reader in readers:
        reader.start()
    try:
        for n in range(30):
            add_token(str(tokens_file), f"user{n}")
            revoke_tokens(str(tokens_file), f"user{n}")
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert wrong == []


# What check() refuses (the service does not start) and what a running service then refuses


def test_a_missing_file_names_the_command_that_creates_it(top: Path) -> None:
    sentence = refusal(top / "tokens")
    assert sentence == (
        f"The service token file {top}/tokens does not exist. Create it with a user's first "
        f"token: jupyter gpu-containers token add USERNAME --tokens-file {top}/tokens"
    )
    assert "jupyter gpu-containers token add USERNAME --tokens-file" in refusal(
        top / "nodir" / "tokens"
    )
    assert "a normalised absolute path" in refusal(Path("relative/tokens"))


def test_a_group_readable_file_is_refused(tokens_file: Path, caplog: Any) -> None:
    token, _ = add_token(str(tokens_file), "alice")
    tokens = service(tokens_file, reload_interval=0.0)
    tokens_file.chmod(0o640)
    assert refusal(tokens_file) == (
        f"The service token file {tokens_file} has mode 0640: other users could read or change "
        f"who holds which token. Make it readable by its owner only: chmod 600 {tokens_file}"
    )
    # A running service that finds it so refuses every token (and says why, once) until fixed.
    with caplog.at_level(logging.ERROR, logger="test-tokens"):
        assert tokens.user_for(token) is None
        assert tokens.user_for(token) is None
    said = [r.getMessage() for r in caplog.records if "mode 0640" in r.getMessage()]
    assert len(said) == 1
    assert said[0].startswith("Refusing every token until this is fixed")
    tokens_file.chmod(0o600)
    assert tokens.user_for(token) == "alice"
    for mode in (0o604, 0o620, 0o666):
        tokens_file.chmod(mode)
        assert f"has mode {mode:04o}: other users could" in refusal(tokens_file)


def test_a_symlink_is_refused(tokens_file: Path, top: Path) -> None:
    real = top / "etc" / "real-tokens"
    add_token(str(real), "alice")
    tokens_file.symlink_to(real)
    assert refusal(tokens_file) == (
        f"The service token file {tokens_file} is a symbolic link; it must be a regular file "
        "(a link could be pointed at another file)."
    )
    # The commands refuse it too, and write nothing through it.
    with pytest.raises(TokenFileRefused, match="symbolic link"):
        add_token(str(tokens_file), "mallory")
    assert "mallory" not in real.read_text()
    # A symlinked directory on the way is refused as well.
    (top / "linked").symlink_to(top / "etc")
    assert "is a symbolic link" in refusal(top / "linked" / "real-tokens")


def test_a_file_that_is_not_regular_is_refused(top: Path) -> None:
    (top / "etc").mkdir()
    os.mkfifo(top / "etc" / "tokens", 0o600)
    assert refusal(top / "etc" / "tokens").endswith("is not a regular file.")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("alice 1a2b3c4d", "it has 2 fields, not 4 or 5"),
        ("al!ce 1a2b3c4d sha256:{h} 2025-01-31T09:00:00Z", "'al!ce' is not a user name"),
        ("alice 1A2B3C4D sha256:{h} 2025-01-31T09:00:00Z", "is not a token id"),
        ("alice 1a2b3c4d {h} 2025-01-31T09:00:00Z", "the third field is not sha256"),
        ("alice 1a2b3c4d sha256:{h}0 2025-01-31T09:00:00Z", "the third field is not sha256"),
        ("alice 1a2b3c4d sha256:{h} yesterday", "'yesterday' is not a UTC time"),
        ("alice 1a2b3c4d sha256:{h} 2025-02-31T09:00:00Z", "is not a date and time"),
        ("alice 1a2b3c4d sha256:{h} 2025-01-31T09:00:00Z note\x1bwith escape", "control"),
        (
            "alice 0000beef sha256:{h} 2025-01-31T09:00:00Z",
            "repeats the token id 0000beef of line 2",
        ),
    ],
)
def test_a_malformed_line_is_a_sentence_with_its_number(
    tokens_file: Path, line: str, problem: str
) -> None:
    digest = "ab" * 32
    tokens_file.parent.mkdir(mode=0o700)
    tokens_file.write_text(
        f"# header\nbob 0000beef sha256:{digest} 2025-01-31T09:00:00Z\n\n{line.format(h=digest)}\n"
    )
    tokens_file.chmod(0o600)
    sentence = refusal(tokens_file)
    assert sentence.startswith(f"Line 4 of the service token file {tokens_file}")
    assert problem in sentence
    # The commands refuse to rewrite a file they cannot read rightly.
    with pytest.raises(TokenFileRefused, match="Line 4"):
        add_token(str(tokens_file), "alice")


def test_a_file_that_is_not_text_is_refused(tokens_file: Path) -> None:
    add_token(str(tokens_file), "alice")
    with tokens_file.open("ab") as f:
        f.write(b"# caf\xe9\n")
    assert refusal(tokens_file) == (
        f"Line 4 of the service token file {tokens_file} is not UTF-8 text."
    )


def test_a_directory_others_can_write_is_refused(top: Path) -> None:
    for mode in (0o775, 0o1777):
        where = top / f"d{mode:o}"
        where.mkdir()
        add_token(str(where / "tokens"), "alice")
        where.chmod(mode)
        sentence = refusal(where / "tokens")
        assert "is writable by other users" in sentence, sentence
        with pytest.raises(TokenFileRefused, match="writable by other users"):
            add_token(str(where / "tokens"), "bob")


# The outsider: a user outside the docker group, with a shell


@needs_accounts
def test_a_file_an_outsider_owns_is_refused(tokens_file: Path) -> None:
    add_token(str(tokens_file), "alice")
    os.chown(tokens_file, *ids_of(MALLORY))
    assert refusal(tokens_file) == (
        f"The service token file {tokens_file} belongs to {MALLORY} (uid {ids_of(MALLORY)[0]}), "
        "who could give themselves or anyone a token. It must belong to root or to the "
        "service's user (root (uid 0))."
    )


@needs_accounts
def test_a_directory_an_outsider_owns_is_refused(top: Path) -> None:
    where = top / "theirs"
    where.mkdir(mode=0o700)
    add_token(str(where / "tokens"), "alice")
    add_token(str(where / "sub" / "tokens"), "alice")
    os.chown(where, *ids_of(MALLORY))
    assert refusal(where / "tokens") == (
        f"The directory of the service token file cannot be used: {where} belongs to "
        f"{MALLORY}, who could replace what lies below it."
    )
    # Even a directory above the file's.
    assert f"{where} belongs to {MALLORY}" in refusal(where / "sub" / "tokens")
    with pytest.raises(TokenFileRefused, match=f"{where} belongs to {MALLORY}"):
        add_token(str(where / "sub" / "tokens"), "bob")


@needs_accounts
def test_the_commands_refuse_an_outsider(tokens_file: Path) -> None:
    token, _ = add_token(str(tokens_file), "alice")
    before = tokens_file.read_bytes()
    for args in (("add", MALLORY), ("revoke", "alice"), ("list",)):
        done = cli(*args, "--tokens-file", str(tokens_file), user=MALLORY)
        assert done.returncode == 1, done
        assert done.stderr.strip() == (
            f"The service token file {tokens_file} cannot be read by {MALLORY} (uid "
            f"{ids_of(MALLORY)[0]}): it belongs to root (uid 0) with mode 0600. Run this "
            "command as root or as the file's owner."
        ), done.stderr
        assert done.stdout == ""
    # A directory they cannot enter is a sentence too.
    tokens_file.parent.chmod(0o700)
    done = cli("list", "--tokens-file", str(tokens_file), user=MALLORY)
    assert done.returncode == 1
    assert "Permission denied. Run this command as root or as the token file's owner." in (
        done.stderr
    )
    assert "Traceback" not in done.stderr
    assert tokens_file.read_bytes() == before
    assert service(tokens_file).user_for(token) == "alice"


@needs_accounts
def test_a_file_only_its_owner_may_change(top: Path) -> None:
    """A service account's own file: it runs the commands itself; root may too, and the file
    stays the account's."""
    where = top / "svc"
    where.mkdir(mode=0o700)
    os.chown(where, *ids_of(MALLORY))
    path = where / "tokens"
    done = cli("add", "alice", "--tokens-file", str(path), user=MALLORY)
    assert done.returncode == 0, done.stderr
    assert path.stat().st_uid == ids_of(MALLORY)[0]
    # check() as that account accepts it (it is the service's user there).
    check = subprocess.run(
        [
            *as_user(MALLORY),
            sys.executable,
            "-c",
            "import sys; from jupyter_gpu_containers.host.tokens import ServiceTokens as S; "
            "s = S(tokens_file=sys.argv[1]); s.check(); print(s.user_for(sys.argv[2]))",
            str(path),
            done.stdout.strip(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert check.stdout.strip() == "alice", check.stderr


@needs_accounts
def test_root_changes_a_service_accounts_file_and_it_stays_theirs(tokens_file: Path) -> None:
    """The documented layout for a service account: root's directory, the account's file."""
    add_token(str(tokens_file), "alice")
    os.chown(tokens_file, *ids_of(MALLORY))
    done = cli("add", "bob", "--tokens-file", str(tokens_file))
    assert done.returncode == 0, done.stderr
    assert f"belongs to {MALLORY}: only a service running as {MALLORY} (or root)" in done.stderr
    assert (tokens_file.stat().st_uid, tokens_file.stat().st_gid) == ids_of(MALLORY)
    assert tokens_file.stat().st_mode & 0o777 == 0o600
    # The account itself may not change it: the directory is root's.
    done = cli("revoke", "bob", "--tokens-file", str(tokens_file), user=MALLORY)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"The service token file {tokens_file} cannot be written by {MALLORY} (uid "
        f"{ids_of(MALLORY)[0]}): Permission denied. Run this command as root or as the owner "
        "of its directory."
    )
    assert "\nbob " in tokens_file.read_text()


# The commands


def test_the_commands_add_list_and_revoke(tokens_file: Path) -> None:
    added = cli("add", "alice", "--note", "lab pc 3", "--tokens-file", str(tokens_file))
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    m = TOKEN.fullmatch(token)
    assert m is not None, added.stdout  # stdout is the token alone: TOKEN=$(... token add alice)
    token_id = m.group(1)
    assert f"Added token {token_id} for alice to {tokens_file}." in added.stderr
    assert "shown only this once" in added.stderr
    other = cli("add", "alice", "--tokens-file", str(tokens_file)).stdout.strip()
    other_m = TOKEN.fullmatch(other)
    assert other_m is not None, other

    listed = cli("list", "--tokens-file", str(tokens_file))
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(
        rf"alice  {token_id}  \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ  lab pc 3", lines[0]
    )
    rows = json.loads(cli("list", "--json", "--tokens-file", str(tokens_file)).stdout)
    assert [row["id"] for row in rows] == [token_id, other_m.group("id")]
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert digest not in listed.stdout
    assert all(set(row) == {"username", "id", "created", "note"} for row in rows)

    revoked = cli("revoke", "alice", "--id", token_id, "--tokens-file", str(tokens_file))
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.strip() == f"Revoked 1 token(s) of alice ({token_id}) in {tokens_file}."
    tokens = service(tokens_file)
    assert tokens.user_for(token) is None
    assert tokens.user_for(other) == "alice"
    again = cli("revoke", "alice", "--id", token_id, "--tokens-file", str(tokens_file))
    assert again.returncode == 1
    assert again.stderr.strip() == (
        f"alice has no token {token_id} in {tokens_file}; nothing was revoked."
    )
    assert cli("revoke", "alice", "--tokens-file", str(tokens_file)).returncode == 0
    assert cli("list", "--tokens-file", str(tokens_file)).stdout.strip() == (
        f"No tokens in {tokens_file}."
    )


def test_the_commands_say_what_is_wrong_in_a_sentence(tokens_file: Path) -> None:
    for args, said in [
        (("add",), "Give one user name: jupyter gpu-containers token add USERNAME"),
        (("add", "a", "b"), "Give one user name"),
        (("add", "bad name"), "'bad name' is not a user name tokens can be given to"),
        (("add", "x", "--note", "a\tb"), "A token's note must be printable text on one line"),
        (("revoke", "x", "--id", "nope"), "'nope' is not a token id"),
        (("list", "extra"), "token list takes no arguments."),
    ]:
        done = cli(*args, "--tokens-file", str(tokens_file))
        assert done.returncode in (1, 2), (args, done)
        assert said in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    done = cli("list", "--tokens-file", "tokens")
    # An administrator's command: the sentence, and the option it is about.
    assert done.stderr.strip() == (
        "The service's token file must be a normalised absolute path; it is 'tokens'. "
        "(setting: ServiceTokens.tokens_file)"
    )
    assert not tokens_file.exists()


def test_the_commands_read_the_services_config_file(tokens_file: Path, top: Path) -> None:
    config = top / "config"
    config.mkdir()
    (config / "jupyter_gpu_containers_serve_config.json").write_text(
        json.dumps({"ServiceTokens": {"tokens_file": str(tokens_file)}})
    )
    done = cli("add", "alice", config_dir=config)
    assert done.returncode == 0, done.stderr
    assert service(tokens_file).user_for(done.stdout.strip()) == "alice"


def test_the_jupyter_command_dispatches_to_token(tokens_file: Path) -> None:
    jupyter = Path(sys.executable).parent / "jupyter"
    if not jupyter.exists():
        pytest.skip("no jupyter launcher beside this Python")
    done = subprocess.run(
        [str(jupyter), "gpu-containers", "token", "add", "alice", f"--tokens-file={tokens_file}"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "JUPYTER_CONFIG_DIR": "/nonexistent"},
    )
    assert done.returncode == 0, done.stderr
    assert TOKEN.fullmatch(done.stdout.strip())
    helped = subprocess.run(
        [str(jupyter), "gpu-containers", "token", "add", "--help-all"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "--ServiceTokens.tokens_file" in helped.stdout
    assert "--tokens-file" in helped.stdout
