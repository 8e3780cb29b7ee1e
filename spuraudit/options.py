"""Declared options of plug-ins (mitigation methods, auto-labelers): one declaration, every front end.

A plug-in lists its options; the app renders a form field per option (`spuraudit.ui.option_form`), the
command line a flag per option (`add_option_flags`), and `check` converts whatever a form, a flag or a
job's JSON gave into the declared type, with an error naming the option.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from .typed import coerce


class OptionError(ValueError):
    """An option value that does not fit its declaration; the message names the option."""


@dataclass(frozen=True)
class Option:
    """One option: its default, help text and allowed values.

    kind: the value's type; by default the default's type. Give it when the default is None, which then
        means "not set" (the plug-in fills it in, e.g. from the project's settings).
    multiline: text entered over several lines (a list of concepts, one a line); several words on the
        command line.
    when: (other option, value): the option applies only while the other one has that value (a form
        shows it only then, and leaves it out otherwise).
    per_class: a {class index: text} mapping, entered as one text field per class.
    flag: the command-line flag, when it differs from `--name-with-dashes`.
    label: the form field's label (default: the name).
    """

    name: str
    default: Any
    help: str
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    kind: type | None = None
    multiline: bool = False
    when: tuple[str, Any] | None = None
    per_class: bool = False
    flag: str = ""
    label: str = ""

    error: ClassVar[type[Exception]] = OptionError  # plug-in families raise their own error class

    @property
    def value_type(self) -> type:
        return self.kind or type(self.default)

    def check(self, value: Any) -> Any:
        """`value` converted to the option's type and checked against its bounds and choices."""
        if value is None and self.default is None:
            return None
        kind = self.value_type
        try:
            value = coerce(value, kind)
        except (TypeError, ValueError):
            raise self.error(f"option '{self.name}' must be a {kind.__name__}, got {value!r}.") from None
        if kind is float and not math.isfinite(value):  # nan passes every bound check below
            raise self.error(f"option '{self.name}' must be a finite number, got {value!r}.")
        if self.choices is not None and value not in self.choices:
            raise self.error(f"option '{self.name}' must be one of {list(self.choices)}, got {value!r}.")
        if self.minimum is not None and value < self.minimum:
            raise self.error(f"option '{self.name}' must be ≥ {self.minimum}, got {value!r}.")
        if self.maximum is not None and value > self.maximum:
            raise self.error(f"option '{self.name}' must be ≤ {self.maximum}, got {value!r}.")
        return value


def resolve_options(owner: str, declared: Sequence[Option], given: dict | None, error: type[Exception]) -> dict:
    """Defaults overlaid with `given`, each checked; an unknown name is an error, not ignored."""
    given = dict(given or {})
    known = {opt.name: opt for opt in declared}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise error(f"{owner} has no option(s) {unknown}; its options are {sorted(known)}.")
    return {name: opt.check(given.get(name, opt.default)) for name, opt in known.items()}


# ---- command line --------------------------------------------------------------------------------
def flag_name(option: Option) -> str:
    return option.flag or "--" + option.name.replace("_", "-")


def on_command_line(option: Option) -> bool:
    """Whether the option has a flag: mappings and lists are for Python callers and forms only."""
    return option.value_type not in (dict, list, tuple)


def add_option_flags(parser: argparse.ArgumentParser | Any, options: Sequence[Option], owner: str,
                     seen: set[str] | None = None) -> None:
    """One flag per option (`--images-per-pair`), parsed by `Option.check` later; flags already added for
    another plug-in (`seen`) are shared rather than added twice. Values stay unset (None) unless given."""
    seen = set() if seen is None else seen
    for option in options:
        flag = flag_name(option)
        if flag in seen or not on_command_line(option):
            continue
        seen.add(flag)
        shown = "" if option.default in (None, "") else f" (default: {option.default})"
        extra: dict[str, Any] = {}
        if option.choices is not None:
            extra["choices"] = [str(c) for c in option.choices]
        else:
            extra["metavar"] = option.name.upper()
        if option.multiline:
            extra["nargs"] = "+"
        parser.add_argument(flag, dest=f"opt_{option.name}", default=None, help=f"[{owner}] {option.help}{shown}",
                            **extra)


def options_from_flags(args: argparse.Namespace, options: Sequence[Option]) -> dict[str, Any]:
    """The options given on the command line (unset flags left out, so the declared defaults apply)."""
    out: dict[str, Any] = {}
    for option in options:
        value = getattr(args, f"opt_{option.name}", None)
        if value is None:
            continue
        out[option.name] = "\n".join(value) if isinstance(value, list) else value
    return out
