"""The one config layer (#28): one TOML reader, one ``--set`` parser, one override order, CLI defaults from the
library's dataclasses."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from patterson import datasets, training
from patterson.cli import Default, build_parser, main, resolve_defaults
from patterson.config import apply_changes, build, default_of, merge, parse_sets, parse_value, read_toml
from patterson.errors import PattersonError


@dataclass(frozen=True)
class Inner:
    seed: int = 7
    name: str = "x"


@dataclass(frozen=True)
class Outer:
    n: int = 1
    cell: tuple[float, ...] | None = (1.0, 2.0)
    inner: Inner = Inner()
    options: dict = field(default_factory=dict)


def _sections(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


# --- parsing ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, value",
    [("8", 8), ("1e-4", 1e-4), ("true", True), ("[12, 12, 12]", [12, 12, 12]), ('"x y"', "x y"),
     ("0.9,0.99", [0.9, 0.99]), ("circular", "circular"), ("random:n=16,cell=12", "random:n=16,cell=12"),
     ("/tmp/a b/c.pt", "/tmp/a b/c.pt"), ("none", None), (" 3 ", 3)],
)  # fmt: skip
def test_a_set_value_is_read_as_toml_else_kept_as_text(text, value):
    assert parse_value(text) == value


def test_set_items_nest_by_their_dots_and_the_last_wins():
    assert parse_sets(["a=1", "model.c1=8", "model.c2=[1, 2]", "a=2"]) == {"a": 2, "model": {"c1": 8, "c2": [1, 2]}}
    assert parse_sets(["model=paper-se", "model.c1=8"], {"model": "model.name"}) == {
        "model": {"name": "paper-se", "c1": 8}
    }


@pytest.mark.parametrize(
    "items, message",
    [(["epochs"], "--set needs key=value, got 'epochs'"), (["=3"], "--set needs key=value"),
     (["a..b=3"], "is not a name"), (["a b=3"], "is not a name"), (["a=1", "a.b=2"], "'a' is a value, not a section"),
     (["a.b=1", "a=2"], "'a' is a section")],
)  # fmt: skip
def test_malformed_set_items_are_one_line_errors(items, message):
    with pytest.raises(PattersonError, match=message) as info:
        parse_sets(items)
    assert "\n" not in str(info.value)


def test_bad_toml_files_are_one_line_errors(tmp_path):
    (tmp_path / "bad.toml").write_text("epochs = = 3\n")
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00")
    for name, message in [("missing.toml", "cannot read"), ("bad.toml", "not valid TOML"), ("binary.toml", "not valid"),
                          (".", "cannot read")]:  # fmt: skip
        with pytest.raises(PattersonError, match=message) as info:
            read_toml(tmp_path / name)
        assert "\n" not in str(info.value)


# --- applying -----------------------------------------------------------------------------------------------------


def test_changes_reach_nested_sections_and_unknown_keys_name_the_known_ones():
    config = apply_changes(Outer(), {"n": 3, "cell": [4, 5], "inner": {"seed": 1}, "options": {"c1": 8}})
    assert config == Outer(n=3, cell=(4, 5), inner=Inner(seed=1, name="x"), options={"c1": 8})
    assert build(Outer, {"inner": {"name": "y"}}).inner == Inner(seed=7, name="y")
    with pytest.raises(PattersonError, match=r"unknown config key 'nn' \(known: n, cell, inner, options\)"):
        apply_changes(Outer(), {"nn": 3})
    with pytest.raises(PattersonError, match=r"unknown config key 'inner.sed' \(known: seed, name\)"):
        apply_changes(Outer(), {"inner": {"sed": 3}})
    for changes, message in [({"n": "three"}, "'n' needs a whole number"), ({"n": None}, "'n' cannot be none"),
                             ({"inner": {"seed": 1.5}}, "'inner.seed' needs a whole number"),
                             ({"cell": 3}, "'cell' needs a list")]:  # fmt: skip
        with pytest.raises(PattersonError, match=message):
            apply_changes(Outer(), changes)
    assert apply_changes(Outer(), {"cell": None}).cell is None


def test_merge_stacks_tables_key_by_key():
    assert merge({"a": 1, "m": {"x": 1, "y": 2}}, {"m": {"y": 3}}, {"b": 4}) == {"a": 1, "m": {"x": 1, "y": 3}, "b": 4}


def test_defaults_are_read_from_dataclasses_and_functions():
    assert default_of(Outer, "inner.seed") == 7 and default_of(Outer, "options") == {}
    assert default_of(datasets.generate, "workers") == 1


# --- one order everywhere ----------------------------------------------------------------------------------------


def _generate(path, sets, field_value):
    return datasets.load_config(path, sets, preset="paper-2", seed=field_value).seed


def _train(path, sets, field_value):
    return training.load_config(path, sets, data=field_value).data


@pytest.mark.parametrize(
    "load, key, values", [(_generate, "seed", (3, 4, 5)), (_train, "data", ('"toml"', "field", "set"))]
)
def test_generate_and_train_stack_toml_then_fields_then_set(load, key, values, tmp_path):
    """#28: generate applied --set before its own fields and train after them; now both: TOML < fields < --set."""
    toml, given, last = values
    path = tmp_path / "c.toml"
    path.write_text(f"{key} = {toml}\n")
    toml = toml.strip('"') if isinstance(toml, str) else toml
    assert load(path, [f"{key}={last}"], given) == last
    assert load(path, [], given) == given
    assert load(path, [], None) == toml
    assert load(None, [f"{key}={last}"], given) == last


def test_a_preset_lies_below_the_toml_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('preset = "paper-2"\nd_min = 2.0\n')
    config = datasets.load_config(path)
    assert (config.preset, config.d_min, config.clash_distance) == ("paper-2", 2.0, 2.5)
    assert datasets.load_config(path, ["d_min=1.8"]).d_min == 1.8
    assert datasets.load_config(path, ["preset=paper-1b"]).cell == (10.0, 10.0, 10.0, 90.0, 90.0, 90.0)


def test_a_model_named_above_drops_the_options_of_another_model_below(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[model]\nname = "paper-se"\nn_blocks = 2\n')
    assert training.load_config(path, ["model.c1=8"]).model_options == {"n_blocks": 2, "c1": 8}
    assert training.load_config(path, model="paper-se").model_options == {"n_blocks": 2}
    assert training.load_config(path, ["model=mlp"]).model_options == {}
    assert training.load_config(path, ["model=mlp", "model.hidden=[64]"]).model_options == {"hidden": (64,)}


# --- the command line --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["generate", "train"])
@pytest.mark.parametrize(
    "extra, message",
    [(["--set", "n"], "--set needs key=value"), (["--set", "bogus=1"], "unknown"),
     (["--config", "{missing}"], "cannot read the config"), (["--config", "{bad}"], "not valid TOML")],
)  # fmt: skip
def test_bad_set_items_and_toml_files_stop_the_cli_with_one_line(command, extra, message, tmp_path, capsys):
    (tmp_path / "bad.toml").write_text("[unclosed\n")
    extra = [e.format(missing=tmp_path / "missing.toml", bad=tmp_path / "bad.toml") for e in extra]
    out = tmp_path / "out"
    base = ["generate", "--preset", "paper-2"] if command == "generate" else ["train", "--data", "random:n=8"]
    assert main([*base, *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("patterson: error:") and message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_cli_defaults_are_the_library_defaults():
    """#28: the seed 7 of the demo (and every other default) lives in the library's dataclass, not in the CLI."""
    checked = 0
    for name, sub in _sections(build_parser()):
        for action in sub._actions:
            if isinstance(action.default, Default):
                shown = " ".join(sub.format_help().split())
                assert f"default {' '.join(str(action.default).split())}" in shown, (name, action.dest)  # resolves
                checked += 1
    assert checked >= 25
    args = resolve_defaults(build_parser().parse_args(["generate", "--preset", "paper-2", "--n", "5"]))
    assert (args.n, args.seed, args.source, args.workers) == (5, None, None, 1)  # layers: not given is None
    from patterson.demo import DemoConfig

    assert resolve_defaults(build_parser().parse_args(["demo"])).seed == DemoConfig().phasing.seed


def test_no_default_is_copied_into_the_cli():
    import re

    from patterson import cli

    text = Path(cli.__file__).read_text()
    assert not re.findall(r"default=(?!None\b|\w*Default\()", text)
