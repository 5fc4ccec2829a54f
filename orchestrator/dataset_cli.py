"""Command-line options that say how to read a dataset (shared by submit-dataset and run).

One table, :data:`_OPTIONS`, says each option's :class:`DatasetOptions` field, flag, type
and help; the commands' parameters (:func:`with_dataset_options`) and the arguments that
reproduce a record (:func:`option_args`) are both made from it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from orchestrator.layout_common import DatasetOptions

# (DatasetOptions field, flag, type, help), in the order --help lists them
_OPTIONS: tuple[tuple[str, str, Any, str], ...] = (
    (
        "layout",
        "--layout",
        str,
        "auto (detect), urbansound8k, esc50, folders (one per class) or csv.",
    ),
    ("subset", "--subset", str | None, "esc10: ESC-50's rows whose esc10 is true."),
    (
        "csv_path",
        "--csv",
        str | None,
        "Metadata CSV (relative to PATH or absolute): the csv layout.",
    ),
    ("path_column", "--path-column", str | None, "CSV column of the audio path."),
    ("label_column", "--label-column", str | None, "CSV column of the class."),
    ("fold_column", "--fold-column", str | None, "CSV column of the fold (none: assigned)."),
    ("group_column", "--group-column", str | None, "CSV column of the source recording."),
    (
        "fold_pattern",
        "--fold-pattern",
        str | None,
        r"Regex on file names, group 1 = fold, e.g. '^(\d+)-'.",
    ),
    (
        "group_pattern",
        "--group-pattern",
        str | None,
        r"Regex on file names, group 1 = source recording, '^\d+-(\d+)-'.",
    ),
    ("n_folds", "--assign-folds", int, "K folds to assign when the dataset has none."),
    (
        "clip_seconds",
        "--clip-seconds",
        float | None,
        "Clip length (default: the layout's or the store's).",
    ),
)

DEFAULT_OPTIONS = DatasetOptions()
_F = TypeVar("_F", bound=Callable[..., Any])


def with_dataset_options(command: _F) -> _F:
    """Give a Typer command the dataset options in place of its ``options`` parameter.

    The command declares ``options: DatasetOptions`` where the options belong in its
    ``--help``; Typer sees the options of :data:`_OPTIONS` there instead (defaults:
    :data:`DEFAULT_OPTIONS`), and the command is called with the :class:`DatasetOptions`
    they make (which refuses bad values with ``DatasetError``).
    """
    signature = inspect.signature(command, eval_str=True)
    if "options" not in signature.parameters:
        raise TypeError(f"{command.__name__} has no 'options' parameter")
    added = [
        inspect.Parameter(
            field,
            inspect.Parameter.KEYWORD_ONLY,
            default=getattr(DEFAULT_OPTIONS, field),
            annotation=Annotated[kind, typer.Option(flag, help=text)],
        )
        for field, flag, kind, text in _OPTIONS
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
        options = DatasetOptions(**{field: kwargs.pop(field) for field, *_ in _OPTIONS})
        return command(*args, options=options, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    if signature.return_annotation is not inspect.Signature.empty:
        wrapper.__annotations__["return"] = signature.return_annotation
    return wrapper  # type: ignore[return-value]


def option_args(options: DatasetOptions) -> list[str]:
    """The command-line arguments that reproduce ``options`` (defaults left out)."""
    args: list[str] = []
    for field, flag, _, _ in _OPTIONS:
        value = getattr(options, field)
        if value != getattr(DEFAULT_OPTIONS, field):
            args += [flag, str(value)]
    return args
