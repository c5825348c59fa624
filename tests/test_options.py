"""The option table: one parser per type of option, used by the CLI, the plugin and the
environment alike (an ``off`` switch is off everywhere)."""

from __future__ import annotations

import pytest

from xattn_ref.errors import UsageError
from xattn_ref.options import RUN_OPTIONS, Option, parse_switch


@pytest.mark.parametrize("text", ["1", "true", "True", "yes", "on", "ON"])
def test_switches_read_on(text):
    assert parse_switch(text, "$XATTN_STRICT") is True


@pytest.mark.parametrize("text", ["0", "false", "False", "no", "off", "OFF", ""])
def test_switches_read_off(text):
    assert parse_switch(text, "$XATTN_STRICT") is False


def test_a_switch_that_is_neither_names_its_source():
    with pytest.raises(UsageError, match=r"\$XATTN_STRICT takes no value, or one of 1/0.*got 'maybe'"):
        parse_switch("maybe", "$XATTN_STRICT")


def test_a_list_option_checks_each_item_and_suggests_the_closest():
    dtype = next(o for o in RUN_OPTIONS if o.name == "dtype")
    assert dtype.parse("float32, bfloat16", "--dtype") == ["float32", "bfloat16"]
    with pytest.raises(UsageError, match=r"--dtype: unknown dtype 'bfloat61'.*\(did you mean bfloat16\?\)"):
        dtype.parse("float32,bfloat61", "--dtype")


def test_a_value_that_begins_with_a_dash_is_joined_to_its_flag_so_the_command_runs_as_printed():
    sentinel = Option("sentinel", "", type="text", default="min")
    assert sentinel.cli_args("-1e4") == ["--sentinel=-1e4"]
    assert sentinel.cli_args("min") == []
    assert Option("dim", "").cli_args(16) == ["--dim", "16"]


def test_every_option_has_one_flag_one_pytest_flag_and_one_environment_variable():
    names = [o.name for o in RUN_OPTIONS]
    assert len(names) == len(set(names))
    seed = next(o for o in RUN_OPTIONS if o.name == "seed")
    assert (seed.flag, seed.pytest_flag, seed.env) == ("--seed", "--xattn-seed", "XATTN_SEED")
