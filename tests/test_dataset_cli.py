"""The dataset options that submit-dataset and run share (orchestrator.dataset_cli)."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from orchestrator import dataset_cli as dc
from orchestrator.layout_common import DatasetOptions


def _app(seen: list[DatasetOptions]) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @dc.with_dataset_options
    def command(
        path: str,
        before: int = 1,
        options: DatasetOptions = dc.DEFAULT_OPTIONS,
        after: bool = False,
    ) -> None:
        seen.append(options)
        print(path, before, after)

    return app


def test_the_options_reach_the_command_as_one_record() -> None:
    seen: list[DatasetOptions] = []
    args = ["here", "--before", "3", "--after", "--layout", "csv", "--csv", "m.csv"]
    args += ["--fold-column", "f", "--assign-folds", "4", "--clip-seconds", "2.5"]
    result = CliRunner().invoke(_app(seen), args)
    assert result.exit_code == 0, result.output
    assert result.output.split() == ["here", "3", "True"]
    assert seen == [
        DatasetOptions(layout="csv", csv_path="m.csv", fold_column="f", n_folds=4, clip_seconds=2.5)
    ]
    # and option_args gives back what reproduces them
    assert dc.option_args(seen[0]) == args[4:]


def test_defaults_give_the_default_options() -> None:
    seen: list[DatasetOptions] = []
    assert CliRunner().invoke(_app(seen), ["here"]).exit_code == 0
    assert seen == [DatasetOptions()]
    assert dc.option_args(seen[0]) == []


def test_help_lists_the_options_where_the_command_declares_them() -> None:
    out = CliRunner().invoke(_app([]), ["--help"], env={"COLUMNS": "200"}).output
    flags = ["--before", "--layout", "--subset", "--csv", "--clip-seconds", "--after"]
    positions = [out.index(f) for f in flags]
    assert positions == sorted(positions), out


def test_a_bad_value_is_refused_by_the_record() -> None:
    seen: list[DatasetOptions] = []
    result = CliRunner().invoke(_app(seen), ["here", "--assign-folds", "1"])
    assert result.exit_code != 0 and not seen
    assert "--assign-folds must be at least 2" in str(result.exception)


def test_a_command_without_an_options_parameter_is_refused() -> None:
    def command(path: str) -> None: ...

    with pytest.raises(TypeError, match="no 'options' parameter"):
        dc.with_dataset_options(command)
