"""Form fields for declared plug-in options (`spuraudit.options.Option`): mitigations and auto-labelers."""

from __future__ import annotations

from typing import Any, Sequence

import streamlit as st

from ..options import Option


def option_widget(option: Option, key: str, container: Any = st, class_names: Sequence[str] = ()) -> Any:
    """One form field for `option`, typed from its declaration; returns the value entered.

    A per-class option shows a text field per class (the first 12) and returns {class index: text} for
    the classes whose text differs from their name.
    """
    label = option.label or option.name
    kind = option.value_type
    if option.per_class:
        if len(class_names) > 12:
            container.caption("The first 12 classes can be described here; the others are described by their names.")
        columns = container.columns(min(4, max(1, len(class_names))))
        texts = {}
        for i, name in enumerate(list(class_names)[:12]):
            text = columns[i % len(columns)].text_input(f"Class {i} {label}", value=name, key=f"{key}_{i}",
                                                        help=option.help)
            if text.strip() and text.strip() != name:
                texts[str(i)] = text.strip()
        return texts
    if option.choices is not None:
        choices = list(option.choices)
        index = choices.index(option.default) if option.default in choices else 0
        return container.selectbox(label, choices, index=index, help=option.help, key=key)
    if kind is bool:
        return container.checkbox(label, value=bool(option.default), help=option.help, key=key)
    if kind is int:
        return container.number_input(label, value=option.default, step=1, help=option.help, key=key,
                                      min_value=None if option.minimum is None else int(option.minimum),
                                      max_value=None if option.maximum is None else int(option.maximum),
                                      placeholder="default" if option.default is None else None)
    if kind is float:
        return container.number_input(label, value=option.default, help=option.help, key=key, format="%g",
                                      min_value=None if option.minimum is None else float(option.minimum),
                                      max_value=None if option.maximum is None else float(option.maximum),
                                      placeholder="default" if option.default is None else None)
    if option.multiline:
        return container.text_area(label, value=str(option.default or ""), help=option.help, key=key)
    return container.text_input(label, value="" if option.default is None else str(option.default),
                                help=option.help, key=key)
