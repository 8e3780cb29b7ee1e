"""The sign-in configuration a server process was started with, read from its environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TOKEN_ENV = "SPURAUDIT_AUTH_TOKEN"
USERS_ENV = "SPURAUDIT_USERS_FILE"
SHARED_ENV = "SPURAUDIT_SHARED"
ALLOW_PICKLE_ENV = "SPURAUDIT_ALLOW_PICKLE_UPLOADS"


def is_loopback(host: str) -> bool:
    """Whether a bind address is one of the usual local-only ones. Anything else, other loopback addresses
    included, is treated as shared: the rule stays simple and errs on the side of signing in."""
    return host.strip("[]").lower() in ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class AuthConfig:
    token: str | None
    users_file: Path | None
    shared: bool
    allow_pickle_uploads: bool

    @property
    def enabled(self) -> bool:
        """Whether people must sign in."""
        return bool(self.token) or self.users_file is not None


def auth_config() -> AuthConfig:
    users = os.environ.get(USERS_ENV)
    return AuthConfig(
        token=os.environ.get(TOKEN_ENV) or None,
        users_file=Path(users) if users else None,
        shared=os.environ.get(SHARED_ENV) == "1",
        allow_pickle_uploads=os.environ.get(ALLOW_PICKLE_ENV) == "1",
    )
