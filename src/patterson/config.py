"""One config layer for every stage: read TOML, parse ``--set key=value``, apply changes to frozen dataclasses.

Each concern has one frozen dataclass (``GenerateConfig``, ``TrainConfig``, ...). A command builds it from
layers, each changing only the keys it names, in one order everywhere (lowest first):

1. the dataclass defaults;
2. a named preset (``patterson generate --preset``, or the ``preset`` key of a higher layer);
3. the TOML file (``--config``);
4. the command's own options (``--n``, ``--seed``, ``--source``; ``--model``, ``--data``; not given: no change);
5. each ``--set key=value``, last (``model.c1=8`` names a key of a section).

So a ``--set`` value always wins, and a TOML value beats a preset's. :func:`layers` gives layers 3 to 5 in this
order and :func:`merge` stacks them; :func:`build` and :func:`apply_changes` check keys and types (one-line
:class:`~patterson.errors.PattersonError` for an unknown key, naming the known ones, or a value of the wrong type).
Command-line options take their defaults from these dataclasses (:func:`default_of`), never from copies.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import tomllib
from collections.abc import Iterable, Mapping
from functools import reduce
from pathlib import Path
from typing import Any, TypeVar

from patterson.errors import PattersonError

T = TypeVar("T")
NONE_WORDS = ("none", "None", "null")  # a --set value that means None (TOML has no null)
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_KINDS = (  # (word in the annotation, what the value must be, how to say it), the first that matches
    ("tuple", lambda v: isinstance(v, list | tuple), "a list such as [1, 2, 3]"),
    ("dict", lambda v: isinstance(v, Mapping), "a table such as {c1 = 8}"),
    ("bool", lambda v: isinstance(v, bool), "true or false"),
    ("float", lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
    ("int", lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    ("str", lambda v: isinstance(v, str), "a string"),
)


# --- reading ------------------------------------------------------------------------------------------------------


def read_toml(path: str | Path) -> dict[str, Any]:
    """The tables of a TOML file; a missing, unreadable or invalid file raises a one-line PattersonError."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise PattersonError(f"{path}: cannot read the config ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PattersonError(f"{path}: not valid TOML ({str(exc).splitlines()[0]})") from None


def parse_value(text: str) -> Any:
    """A ``--set`` value read as a TOML literal (``8``, ``1e-4``, ``true``, ``[12, 12, 12]``, ``"x"``).

    ``a,b,c`` is read as the list ``[a, b, c]``; ``none`` is None; anything else that is not TOML stays a string
    (``circular``, ``random:n=16,cell=12``, a path).
    """
    text = text.strip()
    if text in NONE_WORDS:
        return None
    if "\n" in text:
        return text
    candidates = [text, f"[{text}]"] if "," in text and not text.startswith("[") else [text]
    for candidate in candidates:
        try:
            return tomllib.loads(f"v = {candidate}")["v"]
        except tomllib.TOMLDecodeError:
            pass
    return text


def parse_sets(items: Iterable[str], rename: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``--set`` items (``key=value``, ``section.key=value``) as a nested mapping, later items winning.

    ``rename`` maps a key to another before nesting (``{"model": "model.name"}``). A malformed item, or a key that
    is both a value and a section, raises a one-line PattersonError.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise PattersonError(f"--set needs key=value, got {item!r}")
        if not _KEY.fullmatch(key):
            raise PattersonError(f"--set key {key!r} is not a name (letters, digits, _; sections with dots)")
        *sections, last = (rename or {}).get(key, key).split(".")
        table = out
        for depth, part in enumerate(sections):
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise PattersonError(f"--set {item!r}: {'.'.join(sections[: depth + 1])!r} is a value, not a section")
        if isinstance(table.get(last), dict):
            raise PattersonError(f"--set {item!r}: {key!r} is a section; set its keys ({key}.KEY=VALUE)")
        table[last] = parse_value(raw)
    return out


def layers(
    path: str | Path | None, fields: Mapping[str, Any], sets: Iterable[str], rename: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """The layers above the defaults and a preset, lowest first: the TOML file (none without a ``path``), the
    command's own fields (None: not given) and the ``--set`` items (``rename``: see :func:`parse_sets`). Every
    command stacks them in this order."""
    fields = {k: v for k, v in fields.items() if v is not None}
    return [read_toml(path) if path else {}, fields, parse_sets(sets, rename)]


def merge(*mappings: Mapping[str, Any]) -> dict[str, Any]:
    """The mappings stacked, later ones winning key by key; tables in two of them are merged the same way."""
    out: dict[str, Any] = {}
    for mapping in mappings:
        for key, value in mapping.items():
            if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
                value = merge(out[key], value)
            out[key] = dict(value) if isinstance(value, Mapping) else value
    return out


# --- applying -----------------------------------------------------------------------------------------------------


def check_type(key: str, annotation: str, value: Any) -> None:
    """One line naming the key and the type it needs when ``value`` does not fit the field's ``annotation``."""
    words = re.findall(r"\w+", annotation)
    if value is None:
        if "None" not in words and "Any" not in words:
            raise PattersonError(f"config key {key!r} cannot be none")
        return
    for word, fits, say in _KINDS:
        if word in words:
            if not fits(value):
                raise PattersonError(f"config key {key!r} needs {say}, got {value!r}")
            return


def check_keys(cls: type, keys: Iterable[str], what: str = "config", prefix: str = "") -> None:
    """Raise a one-line PattersonError naming the first key that is not a field of dataclass ``cls``, and the
    known ones."""
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in keys:
        if key not in known:
            raise PattersonError(f"unknown {what} key {prefix + key!r} (known: {', '.join(known)})")


def build(cls: type[T], values: Mapping[str, Any], what: str = "config") -> T:
    """A frozen dataclass ``cls`` from a mapping of its fields (the rest keep their defaults), keys and types
    checked first; the dataclass's own checks then run as usual."""
    return _make(cls, values, what, None)


def apply_changes(config: T, changes: Mapping[str, Any], what: str = "config") -> T:
    """A copy of the frozen dataclass ``config`` with ``changes`` applied, keys and types checked.

    A mapping given for a field that holds a dataclass (a section) changes only the keys it names; every other
    field, a dict field too, is replaced whole. Lists become tuples for tuple fields.
    """
    return _make(type(config), changes, what, config)


def _make(cls: type[T], changes: Mapping[str, Any], what: str, base: T | None, prefix: str = "") -> T:
    check_keys(cls, changes, what, prefix)
    types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    values = {}
    for key, value in changes.items():
        current = getattr(base, key) if base is not None else _field_default(cls, key)
        if isinstance(value, Mapping) and dataclasses.is_dataclass(current) and not isinstance(current, type):
            values[key] = _make(type(current), value, what, current, f"{prefix}{key}.")
            continue
        check_type(prefix + key, types[key], value)
        values[key] = tuple(value) if isinstance(value, list) and "tuple" in types[key] else value
    try:
        return dataclasses.replace(base, **values) if base is not None else cls(**values)
    except TypeError as exc:
        raise PattersonError(f"bad {what}: {exc}") from None


def _field_default(cls: type, name: str) -> Any:
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def default_of(owner: Any, name: str) -> Any:
    """The default of field ``name`` of dataclass ``owner`` (``phasing.seed``: a field of that field's default),
    or of parameter ``name`` of function ``owner``: for command-line options that show a library's defaults."""
    first, *rest = name.split(".")
    if dataclasses.is_dataclass(owner):
        value = _field_default(owner, first)
    else:
        value = inspect.signature(owner).parameters[first].default
    return reduce(getattr, rest, value)
