"""Widget values kept in the page's address (?class=3&page=2&correct=wrong…), so a reload or a shared link
opens the same view. A value from the address seeds the widget once per browser session; afterwards the
widget writes its value back."""

from __future__ import annotations

from typing import Callable

import streamlit as st


def seed(key: str, name: str, parse: Callable[[str], object], allowed=None) -> None:
    """Before creating widget `key`: take its start value from ?name=… when this session has none yet.
    Values that do not parse or are not `allowed` are ignored (an address is user input)."""
    seeded = st.session_state.setdefault("_seeded_from_address", set())
    if key in seeded:
        return
    seeded.add(key)
    raw = st.query_params.get(name)
    if raw is None or key in st.session_state:
        return
    try:
        value = parse(raw)
    except (ValueError, TypeError):
        return
    if allowed is not None:
        if isinstance(value, list):
            value = [v for v in value if v in allowed]
        elif value not in allowed:
            return
    st.session_state[key] = value


def keep(name: str, value, default=None) -> None:
    """After the widget: write its value into the address (dropped when it is the default)."""
    text = ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else ("" if value is None else str(value))
    default_text = ",".join(str(v) for v in default) if isinstance(default, (list, tuple)) else \
        ("" if default is None else str(default))
    if text == default_text:
        if name in st.query_params:
            del st.query_params[name]
    elif st.query_params.get(name) != text:
        st.query_params[name] = text


def int_list(raw: str) -> list[int]:
    return [int(v) for v in raw.split(",") if v.strip()]


def str_list(raw: str) -> list[str]:
    return [v for v in raw.split(",") if v]
