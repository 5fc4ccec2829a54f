"""Command-line options that say how to read a dataset (shared by submit-dataset and run)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from orchestrator.fold_assignment import DEFAULT_ASSIGNED_FOLDS
from orchestrator.layout_common import DatasetOptions

LayoutOpt = Annotated[
    str,
    typer.Option(
        "--layout", help="auto (detect), urbansound8k, esc50, folders (one per class) or csv."
    ),
]
SubsetOpt = Annotated[
    str | None, typer.Option("--subset", help="esc10: ESC-50's rows whose esc10 is true.")
]
CsvOpt = Annotated[
    str | None,
    typer.Option("--csv", help="Metadata CSV (relative to PATH or absolute): the csv layout."),
]
PathColOpt = Annotated[
    str | None, typer.Option("--path-column", help="CSV column of the audio path.")
]
LabelColOpt = Annotated[str | None, typer.Option("--label-column", help="CSV column of the class.")]
FoldColOpt = Annotated[
    str | None, typer.Option("--fold-column", help="CSV column of the fold (none: assigned).")
]
GroupColOpt = Annotated[
    str | None, typer.Option("--group-column", help="CSV column of the source recording.")
]
FoldPatternOpt = Annotated[
    str | None,
    typer.Option("--fold-pattern", help=r"Regex on file names, group 1 = fold, e.g. '^(\d+)-'."),
]
GroupPatternOpt = Annotated[
    str | None,
    typer.Option(
        "--group-pattern", help=r"Regex on file names, group 1 = source recording, '^\d+-(\d+)-'."
    ),
]
AssignFoldsOpt = Annotated[
    int, typer.Option("--assign-folds", help="K folds to assign when the dataset has none.")
]
ClipSecondsOpt = Annotated[
    float | None,
    typer.Option("--clip-seconds", help="Clip length (default: the layout's or the store's)."),
]


# (parameter name, its annotation, its default), in the order --help lists them
_PARAMETERS: tuple[tuple[str, Any, Any], ...] = (
    ("layout", LayoutOpt, "auto"),
    ("subset", SubsetOpt, None),
    ("csv_path", CsvOpt, None),
    ("path_column", PathColOpt, None),
    ("label_column", LabelColOpt, None),
    ("fold_column", FoldColOpt, None),
    ("group_column", GroupColOpt, None),
    ("fold_pattern", FoldPatternOpt, None),
    ("group_pattern", GroupPatternOpt, None),
    ("assign_folds", AssignFoldsOpt, DEFAULT_ASSIGNED_FOLDS),
    ("clip_seconds", ClipSecondsOpt, None),
)

DEFAULT_OPTIONS = DatasetOptions()
_F = TypeVar("_F", bound=Callable[..., Any])


def with_dataset_options(command: _F) -> _F:
    """Give a Typer command the dataset options in place of its ``options`` parameter.

    The command declares ``options: DatasetOptions`` where the options belong in its
    ``--help``; Typer sees the eleven options of :data:`_PARAMETERS` there instead, and
    the command is called with the :class:`DatasetOptions` they make (``build_options``).
    """
    signature = inspect.signature(command, eval_str=True)
    if "options" not in signature.parameters:
        raise TypeError(f"{command.__name__} has no 'options' parameter")
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann)
        for name, ann, default in _PARAMETERS
    ]
    parameters: list[inspect.Parameter] = []
    for p in signature.parameters.values():
        if p.name == "options":
            parameters += added
        else:
            # keyword-only from here on, so the added ones may follow any of them
            parameters.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name, _, _ in _PARAMETERS}
        return command(*args, options=build_options(**values), **kwargs)

    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    if signature.return_annotation is not inspect.Signature.empty:
        wrapper.__annotations__["return"] = signature.return_annotation
    return wrapper  # type: ignore[return-value]


def build_options(
    layout: str = "auto",
    subset: str | None = None,
    csv_path: str | None = None,
    path_column: str | None = None,
    label_column: str | None = None,
    fold_column: str | None = None,
    group_column: str | None = None,
    fold_pattern: str | None = None,
    group_pattern: str | None = None,
    assign_folds: int = DEFAULT_ASSIGNED_FOLDS,
    clip_seconds: float | None = None,
) -> DatasetOptions:
    """:class:`DatasetOptions` from the command-line values (raises ``DatasetError``)."""
    return DatasetOptions(
        layout=layout,
        subset=subset,
        csv_path=csv_path,
        path_column=path_column,
        label_column=label_column,
        fold_column=fold_column,
        group_column=group_column,
        fold_pattern=fold_pattern,
        group_pattern=group_pattern,
        n_folds=assign_folds,
        clip_seconds=clip_seconds,
    )


def option_args(options: DatasetOptions) -> list[str]:
    """The command-line arguments that reproduce ``options`` (defaults left out)."""
    pairs = [
        ("--layout", options.layout if options.layout != "auto" else None),
        ("--subset", options.subset),
        ("--csv", options.csv_path),
        ("--path-column", options.path_column),
        ("--label-column", options.label_column),
        ("--fold-column", options.fold_column),
        ("--group-column", options.group_column),
        ("--fold-pattern", options.fold_pattern),
        ("--group-pattern", options.group_pattern),
        (
            "--assign-folds",
            str(options.n_folds) if options.n_folds != DEFAULT_ASSIGNED_FOLDS else None,
        ),
        ("--clip-seconds", str(options.clip_seconds) if options.clip_seconds else None),
    ]
    args: list[str] = []
    for flag, value in pairs:
        if value is not None:
            args += [flag, value]
    return args
