"""The sign-in gate every page passes through (`page_setup` calls `gate`), and who the person is.

Without sign-in configured (a local server) everyone may do everything and names are typed, as before.
With it, a page shows only the sign-in form until the browser session has signed in, with the access
token (in the address, `?token=`, or typed) or a user name and password; then the role decides what the
pages offer, and the signed-in name is the one every vote carries.
"""

from __future__ import annotations

import hmac
import time

import streamlit as st

from ..auth import ROLES, User, UsersFileError, auth_config, check_password, is_loopback, valid_name

SESSION_KEY = "_signed_in_user"
TOKEN_USER_ROLE = "admin"  # the token is the operator's key, as in Jupyter
FAILED_SIGN_IN_DELAY_S = 1.0  # each wrong try costs a second, so guessing is slow


def current_user() -> User | None:
    """The signed-in person, or None (not signed in, or no sign-in on this server)."""
    value = st.session_state.get(SESSION_KEY)
    return User(*value) if value else None


def sign_in_required() -> bool:
    return auth_config().enabled


def allowed(role: str) -> bool:
    """Whether the person may do what needs `role` ('viewer', 'annotator' or 'admin'); always on a local server."""
    if not sign_in_required():
        return True
    user = current_user()
    return user is not None and user.can(role)


def require_role(role: str, what: str) -> None:
    """Stop the page with a notice when the person's role lacks `role`."""
    if not allowed(role):
        user = current_user()
        st.info(f"{what} needs the **{role}** role; you are signed in as **{user.name if user else '?'}** "
                f"({user.role if user else 'no role'}). Ask the operator for it.")
        st.stop()


def pickle_trust_offered() -> bool:
    """Whether pages may offer "I trust this file" (full pickle loading, which can run code on the server):
    on a local server as before; on a shared or signed-in one only when the operator allowed it explicitly
    (`spuraudit app --allow-pickle-uploads`)."""
    config = auth_config()
    if config.allow_pickle_uploads:
        return allowed("admin")
    return not (config.enabled or config.shared or _bound_beyond_this_machine())


def server_path(text: str, what: str) -> str:
    """A path typed into a page, resolved and checked against the server's data roots; raises
    `paths.PathNotAllowed` (a ValueError) naming the path and the roots when it lies outside them."""
    from .. import paths

    if not text:
        return text
    return str(paths.confine(text, paths.data_roots(), what))


def _bound_beyond_this_machine() -> bool:
    address = st.get_option("server.address")
    return bool(address) and not is_loopback(str(address))


def _token_ok(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


def _sign_in(user: User) -> None:
    st.session_state[SESSION_KEY] = (user.name, user.role)
    if "token" in st.query_params:
        del st.query_params["token"]  # out of the address bar, history and screenshots
    st.rerun()


def _sign_in_form(config) -> None:
    st.title("spuraudit: sign in")
    if config.users_file is not None:
        with st.form("sign-in-password"):
            name = st.text_input("User name", key="signin_name")
            password = st.text_input("Password", type="password", key="signin_password")
            submitted = st.form_submit_button("Sign in", type="primary")
        if submitted:
            try:
                user = check_password(config.users_file, name.strip(), password)
            except UsersFileError as exc:
                st.error(f"The server's users file cannot be used ({exc}). Tell the operator.")
                return
            if user is None:
                time.sleep(FAILED_SIGN_IN_DELAY_S)
                st.error("Unknown user name or wrong password.")
            else:
                _sign_in(user)
    if config.token:
        with st.form("sign-in-token"):
            st.caption("Or with the access token printed when the server started.")
            token = st.text_input("Access token", type="password", key="signin_token")
            name = st.text_input("Your name (for your votes)", key="signin_token_name", value="admin")
            submitted = st.form_submit_button("Sign in with the token")
        if submitted:
            if not _token_ok(token.strip(), config.token):
                time.sleep(FAILED_SIGN_IN_DELAY_S)
                st.error("Wrong access token.")
            elif not valid_name(name.strip()):
                st.error("Names are 1-64 letters, digits, '.', '_', '@' or '-'.")
            else:
                _sign_in(User(name.strip(), TOKEN_USER_ROLE))


def gate() -> None:
    """Show only the sign-in form until the session has signed in (when sign-in is configured); refuse to
    serve at all on a server bound beyond this machine without sign-in."""
    config = auth_config()
    if not config.enabled:
        if config.shared or _bound_beyond_this_machine():
            st.error("This server listens beyond this machine but has no sign-in configured, so it shows "
                     "nothing. Start it with `spuraudit app --host ... --token` or `--users FILE`.")
            st.stop()
        return
    if current_user() is not None:
        _signed_in_sidebar()
        return
    given = st.query_params.get("token")
    if given and config.token and _token_ok(given, config.token):
        _sign_in(User(TOKEN_USER_ROLE, TOKEN_USER_ROLE))
    _sign_in_form(config)
    st.stop()


def _signed_in_sidebar() -> None:
    user = current_user()
    with st.sidebar:
        st.caption(f"Signed in as **{user.name}** ({user.role})")
        if st.button("Sign out", key="sign_out"):
            del st.session_state[SESSION_KEY]
            st.rerun()


__all__ = ["ROLES", "allowed", "current_user", "gate", "pickle_trust_offered", "require_role", "server_path",
           "sign_in_required"]
