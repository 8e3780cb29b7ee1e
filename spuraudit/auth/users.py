"""The users file: one line per person, `name<TAB>role<TAB>password hash`, written by `spuraudit users add`.

Passwords are stored as `scrypt$n$r$p$salt$hash` (hex salt and hash, hashlib.scrypt), never in clear;
checking one compares in constant time.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

# In order of what they may do: each role can do everything the roles before it can.
ROLES = ("viewer", "annotator", "admin")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # 16 MiB of memory per check: slow to guess, quick to sign in
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class UsersFileError(ValueError):
    """A users file or a user entry that cannot be used; the message names the file, line and fix."""


@dataclass(frozen=True)
class User:
    name: str
    role: str

    def can(self, role: str) -> bool:
        return role_allows(self.role, role)


def role_allows(have: str, need: str) -> bool:
    """Whether a person with role `have` may do what needs role `need`."""
    return ROLES.index(have) >= ROLES.index(need)


def valid_name(name: str) -> bool:
    """Names that read well in vote records: letters, digits, '.', '_', '@', '-', up to 64 characters; the
    auto-labelers' 'auto:' names cannot be taken (':' is not allowed)."""
    return bool(_NAME.match(name))


def hash_password(password: str, salt: bytes | None = None) -> str:
    if not password:
        raise UsersFileError("an empty password is not allowed.")
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of `password` against a stored `scrypt$...` hash; False for any malformed hash."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt" or int(n) > 2**20:
            return False
        computed = hashlib.scrypt(password.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n), r=int(r),
                                  p=int(p), dklen=len(bytes.fromhex(digest)), maxmem=2**27)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(computed, bytes.fromhex(digest))


def _parse(path: Path) -> list[tuple[str, str, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsersFileError(f"{path}: no such users file. Create it with `spuraudit users add NAME --file {path}`.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsersFileError(f"{path}: cannot be read ({exc}).") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise UsersFileError(f"{path}, line {number}: expected name, role and hash separated by tabs.")
        name, role, stored = fields
        if not valid_name(name) or role not in ROLES or not stored.startswith("scrypt$"):
            raise UsersFileError(f"{path}, line {number}: bad name, role (one of {list(ROLES)}) or hash.")
        rows.append((name, role, stored))
    return rows


def read_users(path: str | Path) -> dict[str, User]:
    """The users in the file by name (the file is checked whole: a bad line raises UsersFileError)."""
    return {name: User(name, role) for name, role, _ in _parse(Path(path))}


@functools.lru_cache(maxsize=1)
def _decoy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def check_password(path: str | Path, name: str, password: str) -> User | None:
    """The user when `password` is theirs, else None. An unknown name costs a hash too, so that timing does
    not tell which names exist."""
    entries = {n: (r, h) for n, r, h in _parse(Path(path))}
    role, stored = entries.get(name, ("viewer", _decoy_hash()))
    ok = verify_password(password, stored)
    return User(name, role) if ok and name in entries else None


def add_user(path: str | Path, name: str, role: str, password: str) -> bool:
    """Add a user or replace one's role and password; the file is rewritten atomically and kept private.
    Returns True when the name was new."""
    path = Path(path)
    if not valid_name(name):
        raise UsersFileError(f"'{name}': a user name is 1-64 letters, digits, '.', '_', '@' or '-'.")
    if role not in ROLES:
        raise UsersFileError(f"role '{role}': choose one of {list(ROLES)}.")
    rows = _parse(path) if path.exists() else []
    new = all(n != name for n, _, _ in rows)
    rows = [r for r in rows if r[0] != name] + [(name, role, hash_password(password))]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".users-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("# spuraudit users: name, role, scrypt password hash (write with `spuraudit users add`)\n")
            out.writelines(f"{n}\t{r}\t{h}\n" for n, r, h in rows)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return new
