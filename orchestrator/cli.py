"""The ``orchestrator`` command line (Typer). See docs/cli.md for every command.

Commands resolve :class:`contract.settings.Settings` once and hand it down. Any
command that needs Redis starts the embedded server when ``REDIS_URL`` is unset.
Commands that report something accept ``--json`` and then print exactly one
JSON document on stdout (shapes documented in docs/cli.md).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from contract.errors import EscError
from contract.settings import Settings, redact_url
from orchestrator import dataset_cli as dc
from orchestrator.layout_common import DatasetOptions

app = typer.Typer(
    help="Distributed feature extraction and cross-validation for environmental sound datasets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stderr = Console(stderr=True)  # messages and progress
# results; tables keep their columns when stdout is piped to a file or a program
stdout = Console(width=None if sys.stdout.isatty() else 160)
MAX_FAILURES_SHOWN = 20


def _settings() -> Settings:
    return Settings.from_env()


def _fail(message: str, code: int = 2) -> typer.Exit:
    stderr.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def _ensure_redis(settings: Settings) -> str:
    """URL of the Redis to use; starts the embedded server when none is configured."""
    if settings.redis_url:
        return settings.redis_url
    from orchestrator.embedded_redis import EmbeddedRedis

    return EmbeddedRedis.for_home(settings.home).ensure_running()


def _redis(settings: Settings) -> Any:
    """A client of the configured (or embedded) Redis that answered a ping."""
    from workers.context import redis_client

    url = _ensure_redis(settings)
    client = redis_client(url)
    try:
        client.ping()
    except Exception as exc:
        raise _fail(f"cannot reach Redis at {redact_url(url)}: {exc}") from None
    return client


def _redis_and_app(settings: Settings) -> tuple[Any, Any]:
    from workers.celery_app import create_app

    return _redis(settings), create_app(settings)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document (see docs/cli.md).")]
StoreOpt = Annotated[
    str | None,
    typer.Option("--store", help="Feature store URL (path or s3://...). Default: $ESC_STORE."),
]


def _feature_config(
    mode: str, short_clip: str, pad_mode: str, n_fft: int, frames: int = 41,
    step_frames: int | None = None,
) -> Any:  # fmt: skip
    from workers.features import FeatureConfig

    step = step_frames if step_frames is not None else max(1, (frames - 1) // 2)
    try:
        return FeatureConfig(
            mode=mode,  # type: ignore[arg-type]
            short_clip=short_clip,  # type: ignore[arg-type]
            pad_mode=pad_mode,  # type: ignore[arg-type]
            n_fft=n_fft,
            frames=frames,
            step_frames=step,
        )
    except ValueError as exc:
        raise _fail(str(exc)) from None


ModeOpt = Annotated[
    str, typer.Option("--mode", help="parity (per-window STFT) or fast (one STFT per clip).")
]
ShortOpt = Annotated[
    str, typer.Option("--short-clip", help="pad: pad clips shorter than a window; drop: skip.")
]
PadOpt = Annotated[str, typer.Option("--pad-mode", help="zeros or loop (with --short-clip pad).")]
NfftOpt = Annotated[int, typer.Option("--n-fft", help="FFT size (Piczak used 1024).")]
FramesOpt = Annotated[
    int, typer.Option("--frames", help="STFT frames per window (41; Piczak's long: 101).")
]
StepOpt = Annotated[
    int | None,
    typer.Option("--step-frames", help="Window step in frames (default: about half a window)."),
]
RecipeOpt = Annotated[
    str | None,
    typer.Option(
        help="Training recipe: default (= v3: v2 on a fixed cosine schedule), v2, v1 (the "
        "default before issue 12) or notebook (alias: seed); see docs/training.md."
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Any TrialConfig field, KEY=VALUE (repeatable), e.g. --set freq_mask_bands=8.",
    ),
]


@app.command()
def features(
    files: Annotated[list[Path], typer.Argument(help="Audio files.")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Save one .npy per file.")] = None,
    mode: ModeOpt = "parity",
    short_clip: ShortOpt = "pad",
    pad_mode: PadOpt = "zeros",
    n_fft: NfftOpt = 2048,
    frames: FramesOpt = 41,
    step_frames: StepOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Extract features of FILES locally (no queue, no store) and show their shapes."""
    from orchestrator.local_features import extract_files

    if _settings().keep_freed_memory:
        from workers.allocator import keep_freed_memory

        keep_freed_memory()
    results = extract_files(
        files, out_dir, _feature_config(mode, short_clip, pad_mode, n_fft, frames, step_frames)
    )
    if as_json:
        _print_json(results)
    else:
        from rich.table import Table

        table = Table("file", "shape", "windows", "real", "seconds", "error")
        for r in results:
            table.add_row(
                str(r["path"]),
                str(r.get("shape") or ""),
                str(r.get("n_windows", "")),
                str(r.get("n_real", "")),
                f"{r['seconds']:.2f}" if r.get("seconds") is not None else "",
                r.get("error") or "",
            )
        stdout.print(table)
    if any(r.get("error") for r in results):
        raise typer.Exit(1)


@app.command("make-dataset")
def make_dataset(
    out_dir: Annotated[Path, typer.Argument(help="Folder to create the dataset in.")],
    folds: Annotated[int, typer.Option(help="Number of folds.")] = 4,
    clips_per_class: Annotated[int, typer.Option(help="Clips per class and fold.")] = 6,
    classes: Annotated[int, typer.Option(help="Number of classes (<= 10).")] = 10,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    layout: Annotated[
        str, typer.Option(help="urbansound8k, esc50, folders or csv (see docs/datasets.md).")
    ] = "urbansound8k",
) -> None:
    """Generate a small synthetic dataset in the UrbanSound8K (or another) layout."""
    from orchestrator.synthetic_layouts import make_layout_dataset

    try:
        root = make_layout_dataset(
            out_dir,
            layout,
            n_classes=classes,
            folds=folds,
            clips_per_class_per_fold=clips_per_class,
            seed=seed,
        )
    except (ValueError, FileExistsError) as exc:
        raise _fail(str(exc)) from None
    stdout.print(f"synthetic dataset at {root}")


@app.command()
def up() -> None:
    """Start the embedded Redis server (if REDIS_URL is unset) and say where it is."""
    settings = _settings()
    if settings.redis_url:
        stdout.print(f"REDIS_URL is set ({redact_url(settings.redis_url)}); nothing to start")
        return
    from orchestrator.embedded_redis import EmbeddedRedis

    server = EmbeddedRedis.for_home(settings.home)
    server.ensure_running()
    stdout.print(server.describe())


@app.command()
def down() -> None:
    """Stop the embedded Redis server cleanly (its append-only file keeps queued work)."""
    settings = _settings()
    from orchestrator.embedded_redis import EmbeddedRedis

    server = EmbeddedRedis.for_home(settings.home)
    stdout.print("stopped embedded Redis" if server.stop() else "embedded Redis was not running")


@app.command("submit-dataset")
@dc.with_dataset_options
def submit_dataset(
    path: Annotated[Path, typer.Argument(help="Dataset folder (UrbanSound8K/ or its parent).")],
    store: StoreOpt = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow progress.")] = True,
    mode: ModeOpt = "parity",
    short_clip: ShortOpt = "pad",
    pad_mode: PadOpt = "zeros",
    n_fft: NfftOpt = 2048,
    frames: FramesOpt = 41,
    step_frames: StepOpt = None,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Enqueue clips that failed before again.")
    ] = False,
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="Clips per store chunk and per message, for a new store (default "
            "$ESC_EXTRACT_BATCH, 32); an existing store keeps its own."
        ),
    ] = None,
    options: DatasetOptions = dc.DEFAULT_OPTIONS,  # --layout ... --clip-seconds (the decorator)
    variants: Annotated[
        str,
        typer.Option(
            help="Audio variants to extract beside the originals (docs/cli.md): none, "
            "light, sbcnn, or a comma-separated list of set and variant names."
        ),
    ] = "none",
    as_json: JsonOpt = False,
) -> None:
    """Scan PATH, lay out the store and enqueue extraction tasks for the clips not yet done.

    PATH may be UrbanSound8K, ESC-50, a folder of class folders or (with --csv) any
    dataset described by a CSV; see docs/datasets.md.
    """
    from contract.wire import MAX_BATCH
    from orchestrator.submission import LostClipRequeuer, enqueue, plan_submission
    from orchestrator.variant_submission import plan_variants, resolve_variants, variant_specs
    from workers.redis_records import SubmissionRecords

    settings = _settings()
    if batch_size is not None and not 1 <= batch_size <= MAX_BATCH:
        raise _fail(f"batch size must be in 1..{MAX_BATCH}, got {batch_size}")
    try:
        chosen = resolve_variants(variants)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    store_url = store or settings.default_store_url
    client, celery_app = _redis_and_app(settings)
    records = SubmissionRecords(client, ttl=settings.record_ttl)
    plan = plan_submission(
        str(path),
        store_url=store_url,
        settings=settings,
        client=client,
        config=_feature_config(mode, short_clip, pad_mode, n_fft, frames, step_frames),
        retry_failed=retry_failed,
        options=options,
        clips_per_chunk=batch_size,
        variants=variant_specs(chosen),
    )
    record = enqueue(plan, celery_app, records)
    if not as_json:
        _print_plan(plan, record)
    units = [(plan, record)]
    for vplan in plan_variants(plan, chosen, client, records, retry_failed=retry_failed):
        vrecord = enqueue(vplan, celery_app, records)
        units.append((vplan, vrecord))
        if not as_json:
            stderr.print(
                f"  variant {vplan.store.variant}: enqueued {vrecord.enqueued}, already done "
                f"{vrecord.already_done}, already queued {vrecord.already_queued}, failed "
                f"before {vrecord.already_failed} ({vrecord.id})"
            )
    results = [
        _follow(
            settings,
            records,
            p.store_url,
            r,
            wait=wait,
            as_json=as_json,
            requeuer=LostClipRequeuer(p, celery_app, records, client),
            label="extract" if not p.store.variant else p.store.variant,
        )
        for p, r in units
    ]
    if as_json:
        data = results[0]
        if len(results) > 1:
            data = {
                **data,
                "variants": {
                    p.store.variant: d for (p, _), d in zip(units[1:], results[1:], strict=True)
                },
            }
        _print_json(data)
    if wait and any(d["failed"] for d in results):
        raise typer.Exit(1)


def _print_plan(plan: Any, record: Any) -> None:
    m = plan.manifest
    stderr.print(
        f"submission [bold]{record.id}[/]: {len(m.clips)} clips in {m.dataset_root} "
        f"-> {redact_url(plan.store_url)}"
    )
    stderr.print(
        f"  dataset {m.dataset or 'unknown'}: {len(m.class_names)} classes, folds "
        f"{m.folds} ({m.fold_source}), clips of {m.clip_seconds:g} s"
    )
    stderr.print(
        f"  enqueued {record.enqueued}, already done {record.already_done}, "
        f"already queued {record.already_queued}, failed before {record.already_failed} "
        f"(--retry-failed to retry), added to store {record.added_to_store}"
    )
    if m.missing_files:
        stderr.print(
            f"  {len(m.missing_files)} metadata rows have no audio file (partial download)"
        )
    if m.unlisted_files:
        stderr.print(f"  {len(m.unlisted_files)} audio files are not in the metadata: skipped")
    if plan.gone:
        stderr.print(f"  {len(plan.gone)} clips of the store are gone from the dataset: kept")


def _follow(
    settings: Settings,
    records: Any,
    store_url: str,
    record: Any,
    *,
    wait: bool,
    as_json: bool,
    requeuer: Any = None,
    label: str = "extract",
) -> dict[str, Any]:
    """Wait for a submission (unless not ``wait``), finish it; its JSON status.

    The caller prints the JSON (``as_json``) and exits 1 on failures.
    """
    from orchestrator.submission import finish_submission, submission_status, wait_for

    if not wait:
        status = submission_status(records, store_url, record)
        if not as_json:
            stderr.print(f"follow it with: orchestrator status {record.id}")
        return status.to_json()
    try:
        if as_json or not sys.stderr.isatty():
            status = wait_for(records, store_url, record, requeue_lost=requeuer)
        else:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            with Progress(
                TextColumn(f"[bold]{label}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} done"),
                TextColumn("[red]{task.fields[failed]} failed"),
                TextColumn("{task.fields[rate]:.1f} clips/s"),
                TimeRemainingColumn(),
                console=stderr,
            ) as bar:
                task = bar.add_task("extract", total=None, failed=0, rate=0.0)

                def update(s: Any) -> None:
                    bar.update(task, total=s.total, completed=s.done, failed=s.failed, rate=s.rate)

                status = wait_for(
                    records, store_url, record, on_update=update, requeue_lost=requeuer
                )
    except KeyboardInterrupt:
        stderr.print(
            "\ninterrupted: queued tasks keep running. Follow them with "
            f"`orchestrator status {record.id}`; rerunning submit-dataset picks up "
            "where things stand."
        )
        raise typer.Exit(130) from None
    requeued = len(requeuer.requeued) if requeuer is not None else 0
    if requeued:
        stderr.print(
            f"[yellow]{requeued} clip(s) whose message was lost with a worker "
            "were enqueued again[/]"
        )
    status, key = finish_submission(
        records, settings, store_url, record, status, requeued_lost=requeued
    )
    data = status.to_json()
    if not as_json:
        base = redact_url(store_url).split("#variant=")[0]
        _print_summary(data, f"{base}/{key}")
    return data


def _print_summary(
    data: dict[str, Any], summary_path: str, limit: int = MAX_FAILURES_SHOWN
) -> None:
    stderr.print(
        f"[bold]{data['submission']}[/]: {data['done_now']} clips extracted now, "
        f"{data['skipped_already_done']} skipped as already done, "
        f"[red]{data['failed']} failed[/], {data['remaining']} remaining"
    )
    for f in data["failures"][:limit]:
        stderr.print(f"  [red]failed[/] {f['path']}: {f['reason']}")
    if len(data["failures"]) > limit:
        stderr.print(f"  ... {len(data['failures']) - limit} more in {summary_path}")


@app.command()
def status(
    submission: Annotated[
        str | None, typer.Argument(help="Submission id (default: latest).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """State of a submission: counts, rate, ETA and failures (works from any terminal)."""
    from orchestrator.submission_status import status_of
    from workers.redis_records import SubmissionRecords

    settings = _settings()
    client = _redis(settings)  # no Celery app: status only reads the records
    records = SubmissionRecords(client, ttl=settings.record_ttl)
    sid = submission or records.latest_submission_id()
    found = status_of(records, settings, sid) if sid else None
    if found is None:
        raise _fail(f"no submission {sid!r} in Redis" if sid else "no submissions yet")
    data = found.to_json()
    if as_json:
        _print_json(data)
        return
    from rich.table import Table

    table = Table(title=f"submission {data['submission']} ({data['state']})")
    for key in ("clips", "done", "done_now", "skipped_already_done", "already_queued", "failed"):
        table.add_row(key, str(data[key]))
    table.add_row("remaining", str(data["remaining"]))
    table.add_row("clips/s", str(data["clips_per_second"]))
    table.add_row("eta (s)", str(data["eta_seconds"]))
    stdout.print(table)
    for f in data["failures"][:MAX_FAILURES_SHOWN]:
        stdout.print(f"  [red]failed[/] {f['path']}: {f['reason']}")


@app.command()
def worker(
    kind: Annotated[str, typer.Argument(help="extract, train or all.")] = "all",
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", help="Extraction processes.")
    ] = None,
    gpu: Annotated[
        bool, typer.Option("--gpu/--no-gpu", help="Train worker for a GPU host.")
    ] = False,
    device: Annotated[
        str | None, typer.Option(help="GPU index for this worker (sets CUDA_VISIBLE_DEVICES).")
    ] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
    trials_per_child: Annotated[
        int | None,
        typer.Option(
            "--trials-per-child",
            min=1,
            help="Trials the training worker's child runs before a fresh one replaces it "
            "(default ESC_TRIALS_PER_CHILD, 1).",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the command only.")] = False,
) -> None:
    """Start real Celery worker processes for the extract and/or gpu queues."""
    from orchestrator.local_workers import WorkerKind, worker_commands

    try:
        wkind = WorkerKind(kind)
    except ValueError:
        raise _fail(f"unknown worker kind {kind!r}: use extract, train or all") from None
    settings = _settings()
    per_child = trials_per_child or settings.trials_per_child
    cmds = worker_commands(
        wkind, concurrency=concurrency, loglevel=loglevel, trials_per_child=per_child
    )
    if per_child > 1 and wkind is not WorkerKind.EXTRACT:
        stderr.print(
            f"training worker: {per_child} trials per child process; under TensorFlow each "
            "trial after a child's first keeps about 100 MB more host memory "
            '(docs/training.md, "Trials per process")'
        )
    from orchestrator.quiet import worker_environment

    env = worker_environment()
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    if dry_run:
        for c in cmds:
            stdout.print(" ".join(c), soft_wrap=True, markup=False, highlight=False)
        return
    _ensure_redis(settings)
    from orchestrator.health import command_node_names, node_file, write_node_file

    write_node_file(command_node_names(cmds), node_file(env))
    if gpu and wkind is not WorkerKind.EXTRACT:
        stderr.print(
            "training worker: TensorFlow picks the GPU up in the task's child process; "
            "the first trial logs the device it trains on"
        )
    if len(cmds) == 1:
        os.execvpe(cmds[0][0], cmds[0], env)
    procs = [subprocess.Popen(c, env=env) for c in cmds]

    def forward(signum: int, _frame: Any) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [p.wait() for p in procs]
    raise typer.Exit(max(codes))


@app.command("submit-cv")
def submit_cv(
    store: StoreOpt = None,
    plan: Annotated[
        str,
        typer.Option(
            help="official (UrbanSound8K protocol), notebook (the notebook's; alias: seed) "
            "or custom."
        ),
    ] = "official",
    custom: Annotated[
        str | None,
        typer.Option(
            help="With --plan custom: TRAIN:VALID:TEST per trial, e.g. '1,2:3:4;2,3:4:5'."
        ),
    ] = None,
    trials: Annotated[int | None, typer.Option(help="Run only the first N trials.")] = None,
    recipe: RecipeOpt = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Network: default (our CNN), wide, or notebook (the notebook's; alias: "
            "seed). Without --recipe, default/notebook/seed also pick that recipe."
        ),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Maximum epochs (default: the recipe's, 50).")
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(help="Windows per gradient step (default: by device; 64 on a CPU)."),
    ] = None,
    patience: Annotated[
        int | None, typer.Option(help="Early-stopping patience in epochs (default: the recipe's).")
    ] = None,
    learning_rate: Annotated[
        float | None, typer.Option(help="Learning rate (default: the model's).")
    ] = None,
    augment: Annotated[
        bool | None,
        typer.Option("--augment/--no-augment", help="All window augmentations (default: on)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of weights, shuffling and splits.")] = 0,
    set_fields: SetOpt = None,
    valid_fraction: Annotated[
        float, typer.Option(help="Validation share of training folds when split by fsID.")
    ] = 0.15,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the trials.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Record a cross-validation run and enqueue one fold-trial task per trial (gpu queue)."""
    from orchestrator.cv_submission import parse_custom_plan, parse_settings, resolve_training
    from orchestrator.cv_submission import submit_cv as submit
    from workers.redis_records import SubmissionRecords

    settings = _settings()
    store_url = store or settings.default_store_url
    client, celery_app = _redis_and_app(settings)
    try:
        training = resolve_training(
            recipe,
            model,
            {
                **parse_settings(set_fields or []),
                "epochs": epochs,
                "batch_size": batch_size,
                "patience": patience,
                "learning_rate": learning_rate,
                "augment": augment,
                "seed": seed,
            },
        )
        custom_plan = parse_custom_plan(custom) if custom else None
        run_id, config = submit(
            settings=settings,
            app=celery_app,
            store_url=store_url,
            plan=plan,
            training=training,
            n_trials=trials,
            custom=custom_plan,
            valid_fraction=valid_fraction,
            records=SubmissionRecords(client, ttl=settings.record_ttl),
        )
    except ValueError as exc:  # a bad --custom or training option (PlanError is one too)
        raise _fail(str(exc)) from None
    stderr.print(f"run [bold]{run_id}[/]: {config['plan']['explanation']}")
    if not wait:
        if as_json:
            _print_json({"run_id": run_id, "trials": config["trials"], "state": "queued"})
        else:
            stderr.print(f"follow it with: orchestrator cv-report {run_id}")
        return
    _follow_run(settings, celery_app, store_url, run_id, as_json=as_json)


def _follow_run(
    settings: Settings, celery_app: Any, store_url: str, run_id: str, *, as_json: bool
) -> None:
    from orchestrator.cv_submission import wait_for_run
    from orchestrator.report import render_report
    from storage.runs import RunStore

    runs = RunStore(store_url, storage_options=settings.storage_options(store_url))
    last: dict[int, str] = {}

    def show(states: Any) -> None:
        for s in states:
            line = f"{s.state} {s.detail}".strip()
            if last.get(s.index) != line:
                last[s.index] = line
                stderr.print(f"  trial {s.index}: {line}")

    try:
        report, states = wait_for_run(celery_app, runs, run_id, on_update=show)
    except KeyboardInterrupt:
        stderr.print(f"\ninterrupted: trials keep running; see `orchestrator cv-report {run_id}`")
        raise typer.Exit(130) from None
    failed = {s.index: f"failed: {s.detail}" for s in states if s.state == "failure"}
    if as_json:
        _print_json({**report, "failed_trials": {str(k): v for k, v in failed.items()}})
    else:
        render_report(report, stdout, status=failed or None)
    if failed:
        raise typer.Exit(1)


def _runs(store: str | None) -> tuple[Settings, str, Any]:
    """Settings, the store URL (``--store`` or the default) and its run records."""
    from storage.runs import RunStore

    settings = _settings()
    store_url = store or settings.default_store_url
    return (
        settings,
        store_url,
        RunStore(store_url, storage_options=settings.storage_options(store_url)),
    )


def _run_id(runs: Any, run_id: str | None, store_url: str) -> str:
    """``run_id``, or the latest run of the store; an error when there is none."""
    run_id = run_id or runs.latest_run()
    if run_id is None:
        raise _fail(f"no runs in {redact_url(store_url)}")
    return run_id


@app.command("cv-report")
def cv_report(
    run_id: Annotated[str | None, typer.Argument(help="Run id (default: the latest).")] = None,
    store: StoreOpt = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write a PNG: confusion, folds, curves.")
    ] = None,
    html_file: Annotated[
        Path | None,
        typer.Option("--html", help="Write a self-contained HTML page of the run."),
    ] = None,
    embed_audio: Annotated[
        bool,
        typer.Option(
            "--embed-audio", help="With --html: put the misclassified clips inside the page."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Per-trial table and aggregate of a run; trials still running or failed are shown."""
    from orchestrator.cv_submission import trial_states
    from orchestrator.report import plot_report, render_report
    from workers.run_report import build_report

    settings, store_url, runs = _runs(store)
    run_id = _run_id(runs, run_id, store_url)
    try:
        report = runs.get_report(run_id) or build_report(runs, run_id)
    except FileNotFoundError:
        raise _fail(f"no run {run_id!r} in {redact_url(store_url)}") from None
    pending: dict[int, str] = {}
    if not report.get("complete"):
        celery_app = None
        try:
            _, celery_app = _redis_and_app(settings)
        except typer.Exit:
            stderr.print("[yellow]Redis unreachable: trial states unknown[/]")
        for s in trial_states(celery_app, runs, run_id):
            if s.state != "done":
                pending[s.index] = f"{s.state} {s.detail}".strip()
    if plot is not None:
        plot_report(report, plot)
        stderr.print(f"plot written to {plot}")
    if html_file is not None:
        from workers.html_report import write_html_report

        write_html_report(runs, run_id, html_file, report=report, embed_audio=embed_audio)
        stderr.print(f"HTML report written to {html_file}")
    if as_json:
        _print_json({**report, "pending_trials": {str(k): v for k, v in pending.items()}})
    else:
        render_report(report, stdout, status=pending or None)


@app.command("runs")
def list_runs(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """List the cross-validation runs of a store, oldest first."""
    from orchestrator.cv_submission import run_rows

    _, _, runs = _runs(store)
    rows = run_rows(runs)
    if as_json:
        _print_json(rows)
        return
    from rich.table import Table

    table = Table("run", "model", "plan", "trials", "clip accuracy (mean)")
    for r in rows:
        acc = f"{r['clip_accuracy_mean']:.3f}" if r["clip_accuracy_mean"] is not None else "-"
        table.add_row(r["run_id"], r["model"], r["plan"], f"{r['trials_done']}/{r['trials']}", acc)
    stdout.print(table)


@app.command()
def predict(
    files: Annotated[list[Path], typer.Argument(help="Audio files to classify.")],
    run_id: Annotated[str | None, typer.Option("--run", help="Run (default: latest).")] = None,
    store: StoreOpt = None,
    top_k: Annotated[int, typer.Option(help="Guesses per file.")] = 3,
    model_dir: Annotated[
        Path | None,
        typer.Option("--model", help="Use a model made by `orchestrator export` (no store)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Top guesses for each file from the ensemble of a run's trial models."""
    try:
        if model_dir is not None:
            from orchestrator.export import predict_files_exported

            results = predict_files_exported(files, model_dir, top_k=top_k)
        else:
            from orchestrator.predict import predict_files

            _, store_url, runs = _runs(store)
            run_id = _run_id(runs, run_id, store_url)
            results = predict_files(files, runs, run_id, top_k=top_k)
    except FileNotFoundError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        _print_json(results)
    else:
        for r in results:
            if r.get("error"):
                stdout.print(f"[red]{r['path']}[/]: {r['error']}")
                continue
            guesses = ", ".join(f"{g['class']} {g['probability']:.2f}" for g in r["top"])
            stdout.print(f"{r['path']}: {guesses}")
    if any(r.get("error") for r in results):
        raise typer.Exit(1)


@app.command("export")
def export_model(
    run_id: Annotated[str | None, typer.Argument(help="Run id (default: the latest).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="savedmodel, tflite or onnx.")] = (
        "savedmodel"
    ),
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the model to.")] = Path(
        "exported-model"
    ),
    trial: Annotated[
        int | None, typer.Option(help="Export one trial's model (default: the ensemble).")
    ] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Export a run's models (raw windows in, class probabilities out) for deployment."""
    from orchestrator.export import ExportError, export_run

    _, store_url, runs = _runs(store)
    run_id = _run_id(runs, run_id, store_url)
    try:
        manifest = export_run(runs, run_id, fmt, out_dir, trial=trial)
    except (ExportError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    if as_json:
        _print_json({**manifest, "out": str(out_dir)})
    else:
        stdout.print(
            f"exported run {run_id} (trials {manifest['trials']}) as {fmt}: "
            f"{out_dir / manifest['file']} and {out_dir / 'esc-model.json'}"
        )


@app.command()
@dc.with_dataset_options
def run(
    path: Annotated[
        Path | None, typer.Argument(help="Dataset (default: generate a synthetic one).")
    ] = None,
    store: StoreOpt = None,
    workers_count: Annotated[
        int | None, typer.Option("--workers", help="Extraction processes (default: cores).")
    ] = None,
    plan: Annotated[
        str, typer.Option(help="CV plan: official or notebook (alias: seed).")
    ] = "official",
    recipe: RecipeOpt = None,
    model: Annotated[
        str | None,
        typer.Option(help="Model: default, wide or notebook (alias: seed); see submit-cv."),
    ] = None,
    epochs: Annotated[int, typer.Option(help="Maximum epochs per trial.")] = 30,
    trials: Annotated[int | None, typer.Option(help="Run only the first N trials.")] = None,
    batch_size: Annotated[int, typer.Option(help="Windows per gradient step.")] = 64,
    options: DatasetOptions = dc.DEFAULT_OPTIONS,  # --layout ... --clip-seconds (the decorator)
) -> None:
    """The whole job on one machine: Redis, local workers, extraction, CV, report.

    PATH may have any layout of docs/datasets.md; a dataset too small for the plan is
    refused before anything is extracted.
    """
    from orchestrator.trainability import check_trainable

    settings = _settings()
    if path is None:
        from orchestrator.synthetic import make_synthetic_dataset

        path = settings.home / "demo-dataset"
        if not (path / "UrbanSound8K").exists():
            stderr.print(f"no dataset given: generating a synthetic one in {path}")
            make_synthetic_dataset(path)
    store_url = store or str(settings.home / "stores" / f"{Path(path).resolve().name}.zarr")
    manifest = check_trainable(
        str(path), options, plan, store_url=store_url, settings=settings, n_trials=trials
    )
    stderr.print(
        f"dataset {manifest.dataset or 'unknown'} at {manifest.dataset_root}: "
        f"{len(manifest.clips)} clips, {len(manifest.class_names)} classes, "
        f"folds {manifest.folds} ({manifest.fold_source})"
    )
    _ensure_redis(settings)
    from orchestrator.local_workers import WorkerKind, WorkerSupervisor, worker_command
    from orchestrator.quiet import worker_environment

    logs = settings.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    supervisor = WorkerSupervisor(
        [
            worker_command(WorkerKind.EXTRACT, concurrency=workers_count, loglevel="WARNING"),
            worker_command(
                WorkerKind.TRAIN, loglevel="INFO", max_tasks_per_child=settings.trials_per_child
            ),
        ],
        log_paths=[str(logs / "extract-worker.log"), str(logs / "train-worker.log")],
        env=worker_environment(),
    )
    stderr.print(f"starting 2 local workers, restarted if they exit (logs in {logs})")
    code = 0
    # Each step runs as the very command a user would type, in a child process: the
    # same output, exit code and Ctrl-C handling as by hand, and a step that ends with
    # typer.Exit ends only that step while this process keeps supervising the workers.
    with supervisor:
        code = _invoke(
            ["submit-dataset", str(path), "--store", store_url, *dc.option_args(options)]
        )
        if code not in (0, 1):
            raise typer.Exit(code)
        cv_args = ["submit-cv", "--store", store_url, "--plan", plan]
        cv_args += ["--recipe", recipe] if recipe is not None else []
        cv_args += ["--model", model] if model is not None else []
        cv_args += ["--batch-size", str(batch_size)]
        if trials is not None:
            cv_args += ["--trials", str(trials)]
        # submit-cv --wait prints the report at the end
        code = max(code, _invoke([*cv_args, "--epochs", str(epochs), "--wait"]))
    if supervisor.restarts:
        stderr.print(f"[yellow]{supervisor.restarts} worker restart(s); see {logs}[/]")
    raise typer.Exit(code)


@app.command()
def flower(
    port: Annotated[int | None, typer.Option(help="Port (default: $FLOWER_PORT, 5555).")] = None,
    address: Annotated[
        str | None, typer.Option(help="Bind address (default: $FLOWER_ADDRESS, 127.0.0.1).")
    ] = None,
    db: Annotated[
        str | None, typer.Option(help="Keep Flower's state in this file across restarts.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the command only.")] = False,
) -> None:
    """Start Flower (web monitor) on the configured broker, with basic auth from the env."""
    from orchestrator.flower import build_launch

    settings = _settings()
    launch = build_launch(settings, port=port, address=address, db=db)
    if launch.warning:
        stderr.print(f"[bold yellow]warning:[/] {launch.warning}")
    auth = "basic auth on" if launch.auth_enabled else "no authentication"
    if dry_run:
        stdout.print(" ".join(launch.argv) + f"  # {auth}")
        return
    url = _ensure_redis(settings)
    stderr.print(f"Flower on broker {redact_url(url)} ({auth})")
    os.execvpe(launch.argv[0], launch.argv, launch.env)


@app.command()
def healthcheck(
    pattern: Annotated[
        str | None,
        typer.Option(help="Glob of worker node names (default: workers of this host)."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for a reply.")] = 5.0,
) -> None:
    """Exit 0 if the worker(s) of this container/host answer a ping through the broker.

    Asks exactly the nodes that `orchestrator worker` recorded in $ESC_NODE_FILE
    (default <ESC_HOME>/worker-nodes), all of which must answer; without that file
    (or with --pattern), any node matching the glob.
    """
    from orchestrator.health import node_file, node_pattern, ping_workers, read_node_file

    settings = _settings()
    own = [] if pattern else read_node_file(node_file())
    if own:
        nodes = ping_workers(settings, destination=own, timeout=timeout, limit=len(own))
        missing = sorted(set(own) - set(nodes))
        if missing:
            raise _fail(f"no answer within {timeout:g} s from {', '.join(missing)}", 1)
    else:
        glob = pattern or node_pattern()
        nodes = ping_workers(settings, pattern=glob, timeout=timeout, limit=1)
        if not nodes:
            raise _fail(f"no worker matching {glob!r} answered a ping within {timeout:g} s", 1)
    stdout.print(f"ok: {', '.join(nodes)}")


def _invoke(args: list[str]) -> int:
    """Run another orchestrator command in this process's environment."""
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], check=False).returncode


def main() -> None:
    """Console-script entry point."""
    from orchestrator.quiet import quiet_console

    quiet_console(sys.argv[1:])
    try:
        app()
    except EscError as exc:  # the one place errors become messages and exit codes
        stderr.print(f"[bold red]error:[/] {exc}")
        sys.exit(exc.exit_code)
