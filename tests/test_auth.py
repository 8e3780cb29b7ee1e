"""Sign-in for a shared app: the users file, password hashes, the command line `spuraudit app` builds, and the
signed-in name on the Review page."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from spuraudit import paths
from spuraudit.auth import (
    TOKEN_ENV,
    USERS_ENV,
    UsersFileError,
    add_user,
    check_password,
    hash_password,
    is_loopback,
    read_users,
    role_allows,
    verify_password,
)
from spuraudit.cli import app_launch, build_parser, main

ROOT = Path(__file__).resolve().parents[1]


# ---- passwords and the users file -------------------------------------------------------------------
def test_password_hash_is_salted_scrypt_and_verifies():
    one, two = hash_password("correct horse"), hash_password("correct horse")
    assert one.startswith("scrypt$") and one != two  # a fresh salt each time
    assert "correct horse" not in one
    assert verify_password("correct horse", one) and verify_password("correct horse", two)
    assert not verify_password("correct horsf", one)
    assert not verify_password("correct horse", "scrypt$broken") and not verify_password("x", "md5$00$00")


def test_users_file_round_trip_private_and_atomic(tmp_path):
    file = tmp_path / "users.tsv"
    assert add_user(file, "ana", "admin", "pw-ana") is True
    assert add_user(file, "bo", "viewer", "pw-bo") is True
    assert add_user(file, "bo", "annotator", "pw-bo2") is False  # replaced, not doubled
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert {u.name: u.role for u in read_users(file).values()} == {"ana": "admin", "bo": "annotator"}
    assert check_password(file, "bo", "pw-bo2").role == "annotator"
    assert check_password(file, "bo", "pw-bo") is None
    assert check_password(file, "nobody", "pw-bo2") is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".users-")]
    with pytest.raises(UsersFileError, match="role 'root'"):
        add_user(file, "cy", "root", "pw")
    with pytest.raises(UsersFileError, match="'../x'"):
        add_user(file, "../x", "viewer", "pw")
    assert len(read_users(file)) == 2


def test_roles_are_ordered():
    assert role_allows("admin", "annotator") and role_allows("annotator", "viewer")
    assert not role_allows("viewer", "annotator") and not role_allows("annotator", "admin")


def test_users_command_reads_the_password_from_stdin(tmp_path, monkeypatch, capsys):
    import io

    file = tmp_path / "users.tsv"
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret\n"))
    assert main(["users", "add", "dee", "--role", "admin", "--file", str(file)]) == 0
    assert check_password(file, "dee", "s3cret").role == "admin"
    assert main(["users", "list", "--file", str(file)]) == 0
    assert "dee\tadmin" in capsys.readouterr().out


# ---- the command line `spuraudit app` starts ----------------------------------------------------------
def _launch(*argv: str):
    return app_launch(build_parser().parse_args(["app", *argv]))


def test_the_app_listens_on_this_machine_only_by_default(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    argv, env, token = _launch()
    assert argv[argv.index("--server.address") + 1] == "127.0.0.1"
    assert token is None and TOKEN_ENV not in env and USERS_ENV not in env
    assert env[paths.DATA_ROOTS_ENV] == str(Path.home().resolve())


def test_any_other_address_needs_sign_in_and_keeps_secrets_off_the_command_line(tmp_path, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    for host in ("0.0.0.0", "10.1.2.3", "127.0.0.2", "::"):
        with pytest.raises(SystemExit, match="needs sign-in"):
            _launch("--host", host)
    argv, env, token = _launch("--host", "0.0.0.0", "--token", "--data-root", str(tmp_path))
    assert argv[argv.index("--server.address") + 1] == "0.0.0.0"
    assert len(token) >= 24 and env[TOKEN_ENV] == token and env["SPURAUDIT_SHARED"] == "1"
    assert not any(token in a for a in argv)
    assert env[paths.DATA_ROOTS_ENV] == str(tmp_path.resolve())
    users = tmp_path / "users.tsv"
    add_user(users, "ana", "admin", "pw")
    argv, env, token = _launch("--host", "0.0.0.0", "--users", str(users))
    assert token is None and env[USERS_ENV] == str(users.resolve())
    assert "SPURAUDIT_ALLOW_PICKLE_UPLOADS" not in env
    assert _launch("--allow-pickle-uploads")[1]["SPURAUDIT_ALLOW_PICKLE_UPLOADS"] == "1"


def test_loopback_names():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("")


# ---- the signed-in name on the Review page ------------------------------------------------------------
def test_votes_carry_the_signed_in_name_whatever_the_address_says(demo_copy, tmp_path, monkeypatch):
    home = demo_copy.folder.parent.parent
    users = tmp_path / "users.tsv"
    add_user(users, "bo", "annotator", "pw-bo")
    add_user(users, "cy", "viewer", "pw-cy")
    monkeypatch.setenv("SPURAUDIT_HOME", str(home))
    monkeypatch.setenv(USERS_ENV, str(users))

    def signed_in(name: str, password: str) -> AppTest:
        at = AppTest.from_file(str(ROOT / "pages" / "review.py"), default_timeout=180)
        at.query_params["project"] = "demo"
        at.query_params["annotator"] = "mallory"
        at.session_state["review_attacks"] = False
        at.run()
        assert at.title[0].value == "spuraudit: sign in" and not at.metric  # nothing before signing in
        at.text_input(key="signin_name").set_value(name)
        at.text_input(key="signin_password").set_value(password)
        at.button[0].click().run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    at = signed_in("bo", "pw-bo")
    box = at.sidebar.text_input(key="reviewer")
    assert box.value == "bo" and box.disabled
    at.button(key="vote-background").click().run()
    assert not at.exception, [e.value for e in at.exception]
    store = demo_copy.labels()
    assert [v.annotator for v in store.votes()] == ["bo"]

    viewer = signed_in("cy", "pw-cy")
    assert viewer.sidebar.text_input(key="reviewer").value == "cy"
    assert viewer.button(key="vote-main_object").disabled  # a viewer may look, not vote
    assert [v.annotator for v in store.votes()] == ["bo"]
