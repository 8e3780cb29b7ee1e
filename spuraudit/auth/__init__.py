"""Who may use a shared spuraudit server, and as what (no Streamlit here; the page gate is `spuraudit.ui.auth`).

`spuraudit app` passes the configuration to the Streamlit process through environment variables (so no
secret shows in the process list): an access token (`SPURAUDIT_AUTH_TOKEN`), a users file
(`SPURAUDIT_USERS_FILE`), whether the server listens beyond this machine (`SPURAUDIT_SHARED`), and whether
the operator allows pickled checkpoints from browsers (`SPURAUDIT_ALLOW_PICKLE_UPLOADS`).
"""

from __future__ import annotations

from .config import (
    ALLOW_PICKLE_ENV,
    SHARED_ENV,
    TOKEN_ENV,
    USERS_ENV,
    AuthConfig,
    auth_config,
    is_loopback,
)
from .users import (
    ROLES,
    User,
    UsersFileError,
    add_user,
    check_password,
    hash_password,
    read_users,
    role_allows,
    valid_name,
    verify_password,
)

__all__ = [
    "ALLOW_PICKLE_ENV", "SHARED_ENV", "TOKEN_ENV", "USERS_ENV", "AuthConfig", "auth_config", "is_loopback",
    "ROLES", "User", "UsersFileError", "add_user", "check_password", "hash_password", "read_users",
    "role_allows", "valid_name", "verify_password",
]
