"""`mtl train`: a folder of class folders in, a trained classifier and a run folder out."""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from mtl.cli._common import (
    Bars,
    CacheDir,
    Quiet,
    Verbose,
    WeightsDir,
    call,
    detail,
    download_progress,
    fail,
    info,
    out,
    print_json,
    progress,
    verbosity,
    warn,
)
from mtl.pipeline.config import CHOICES, SETTINGS, TrainConfig

EXAMPLES = """
[bold]Examples[/bold]

  mtl train data/ --epochs 10

  mtl train data/ --config blog --out runs/blog     (a preset shipped with mtl)

  mtl train data/ --freeze 60 --fine-tune-epochs 5 --augment --class-weight auto

  mtl train data/ --json | jq .val.accuracy

  mtl train --resume runs/train3     (continue an interrupted run)

The data folder holds one sub-folder per class, or train/ (with val/, valid/ or
validation/ as given validation photos, and test/ as held-out photos scored once
after training, never trained on), each with class folders. The run folder gets
model.keras, labels.txt, config.json, split.csv, history.csv, metrics.json and
PNG plots.
"""


_DEFAULTS = TrainConfig().to_dict()


def _setting_option(key: str) -> inspect.Parameter:
    """The option of config key ``key``, made from :data:`mtl.pipeline.config.SETTINGS`:
    None when not given (the config file or the built-in default then decides), its help
    showing the built-in default. Values are checked by the core's rules (one style, with
    "did you mean"), not by the parser."""
    row = SETTINGS[key]
    default = _DEFAULTS[key]
    shown = ",".join(map(str, default)) or "none" if isinstance(default, list) else default
    metavar = row.metavar or (f"<{'|'.join(CHOICES[key])}>" if key in CHOICES else None)
    if isinstance(default, bool):
        flag = row.flags[0]
        kind: Any = bool
        option = typer.Option(
            f"{flag}/--no-{flag[2:]}",
            *row.flags[1:],
            help=row.help,
            show_default=str(default).lower(),
        )
    else:
        kind = type(default) if isinstance(default, (int, float)) and key != "freeze" else str
        option = typer.Option(*row.flags, help=row.help, show_default=str(shown), metavar=metavar)
    return inspect.Parameter(
        key, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, option]
    )


# One alias per option that is not a setting, so the command's signature reads as a list.
Data = Annotated[
    Path | None, typer.Argument(help="Dataset folder: one sub-folder of images per class.")
]
OutDir = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Run folder.", show_default="runs/train, runs/train2, ..."),
]
Force = Annotated[
    bool, typer.Option("--force", help="Train into an existing, non-empty run folder.")
]
Resume = Annotated[
    Path | None,
    typer.Option(
        "--resume",
        help="Continue an interrupted run folder from its last complete epoch, "
        "with its own settings and split.",
    ),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="A TOML file, or a preset's name (blog, default); options override it.",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")]


def register(app: typer.Typer) -> None:
    def train(
        data: Data = None,
        out_dir: OutDir = None,
        force: Force = False,
        resume: Resume = None,
        config_file: ConfigFile = None,
        weights_dir: WeightsDir = None,
        cache_dir: CacheDir = None,
        as_json: AsJson = False,
        quiet: Quiet = False,
        verbose: Verbose = False,
        **settings: Any,
    ) -> None:
        """Train a classifier on a folder of class folders (transfer learning from ImageNet)."""
        _train(settings, data, out_dir, force, resume, config_file, weights_dir, cache_dir, as_json)

    # The settings' options come from the one table (mtl.pipeline.config.SETTINGS): adding
    # a setting there adds its option here.
    fixed = [
        p.replace(kind=p.KEYWORD_ONLY)  # Typer passes every parameter by name
        for p in inspect.signature(train, eval_str=True).parameters.values()
        if p.kind != p.VAR_KEYWORD
    ]
    params = [*fixed[:5], *(_setting_option(key) for key in SETTINGS), *fixed[5:]]
    train.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    train.__annotations__ = {p.name: p.annotation for p in params}
    app.command("train", epilog=EXAMPLES)(train)


def _train(
    overrides: dict[str, Any],
    data: Path | None,
    out_dir: Path | None,
    force: bool,
    resume: Path | None,
    config_file: Path | None,
    weights_dir: Path | None,
    cache_dir: Path | None,
    as_json: bool,
) -> None:
    """Parse what the options mean together, call the core, render."""
    from mtl.inference.heldout import needs_test, score_test
    from mtl.pipeline.config import resolve
    from mtl.training.trainer import train as run

    if resume is not None:
        given = sorted(k for k, v in overrides.items() if v is not None)
        if given or config_file or out_dir or force:
            extra = ", ".join(given) or "--config/--out/--force"
            raise fail(f"--resume uses the run's own settings; drop {extra}", 2)
        cfg = None
        from mtl.training.trainer import is_finished

        if is_finished(resume) and needs_test(resume):  # stopped while scoring test/
            _finish_test(resume, as_json)
            raise typer.Exit(0)
        if is_finished(resume):  # idempotent for scripts: nothing left to do is success
            if as_json:
                print_json({"run_dir": str(resume), "finished": True, "resumed": False})
            info(f"{resume} already finished; nothing to resume")
            raise typer.Exit(0)
    else:
        if data is None:
            raise fail("missing DATA: the dataset folder (or --resume RUN)", 2)
        cfg = call(resolve, config_file, overrides)
    display: _Display | None = None
    try:
        with download_progress() as on_download, progress() as bars:
            display = _Display(bars)
            result = call(
                run,
                data,
                cfg,
                out=out_dir,
                force=force,
                resume=resume,
                weights_dir=weights_dir,
                cache_dir=cache_dir,
                on_download=on_download,
                on_progress=display.progress,
                on_start=display.start,
                on_epoch=display.epoch,
            )
            # DATA/test/ (held out, never trained on): scored by the model just written.
            result = call(score_test, result, lambda d, t: display.progress("scoring test/", d, t))
    except KeyboardInterrupt as exc:  # between the core's own handlers: say what it left
        raise _interrupted_after_model(display, exc) from None
    for message in result.warnings[len(display.warned) :]:
        warn(message)
    detail("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in result.seconds.items()))
    if as_json:
        print_json(result.to_json())
    else:
        _summary_table(result)


def _interrupted_after_model(display: _Display | None, exc: BaseException) -> BaseException:
    """A Ctrl-C (or SIGTERM) that lands after ``model.keras`` is written but outside the
    core's handlers (its clean-up, the lock's release, between training and scoring):
    the run is complete but for its test/ scores, and ``--resume`` adds them."""
    import shlex

    from rich.markup import escape

    from mtl.cli._common import err, interrupt_reported
    from mtl.errors import interrupt_exit_code
    from mtl.inference.heldout import needs_test

    run_dir = display.run_dir if display is not None else None
    if run_dir is None or not (run_dir / "model.keras").is_file():
        return exc
    resume = f"mtl train --resume {shlex.quote(str(run_dir))}"
    left = f"score its test/ photos with {resume}" if needs_test(run_dir) else "the run is complete"
    said = f"interrupted after {run_dir / 'model.keras'} was written: {left}"
    err.print(f"[red]{escape(said)}[/red]", highlight=False)
    interrupt_reported()
    return typer.Exit(interrupt_exit_code(exc))


def _finish_test(run: Path, as_json: bool) -> None:
    """``--resume`` of a run whose model is written but whose test/ scoring was stopped."""
    from mtl.inference.heldout import finish_test

    info(f"{run} finished training; scoring its test/ photos")
    with progress() as bars:
        test, bad = call(finish_test, run, bars.task("scoring test/"))
    if bad:
        warn(f"{bad} test photo(s) could not be read and are not scored")
    if as_json:
        brief = {k: test[k] for k in ("accuracy", "loss", "count")}
        print_json({"run_dir": str(run), "finished": True, "resumed": True, "test": brief})
        return
    out.print(
        f"test (held out, never trained on): accuracy {_fmt(test['accuracy'])}, "
        f"loss {_fmt(test['loss'])} on {test['count']} photos",
        highlight=False,
    )


class _Display:
    """Progress on stderr: the file check / feature pass, then one line per epoch."""

    def __init__(self, bars: Bars) -> None:
        self.bars = bars
        self.warned: list[str] = []
        self.run_dir: Path | None = None

    def progress(self, stage: str, done: int, total: int) -> None:
        self.bars.update(stage, done, total)

    def start(self, s: Any) -> None:
        self.run_dir = s.run_dir
        info(f"training on {s.device}")
        counts = ", ".join(
            f"{c} {t}+{v}" for c, t, v in zip(s.classes, s.train_counts, s.val_counts, strict=True)
        )
        how = "given train/ and val/" if s.layout == "train/val" else "stable hash split"
        info(f"{len(s.classes)} classes (train+val, {how}): {counts}")
        info(f"cache: {s.cached}")
        info(f"run folder: {s.run_dir}")
        if s.skipped:
            warn(f"skipped {len(s.skipped)} unreadable file(s):")
            for f, reason in s.skipped:
                self.bars.print(f"  {f}: {reason}")
        for message in s.warnings:
            warn(message)
        self.warned = list(s.warnings)

    def epoch(self, e: Any) -> None:
        self.bars.update("training", e.epoch, e.epochs, f"epoch {e.epoch}/{e.epochs}")
        if verbosity.quiet:  # the epochs are progress; -q prints the result only
            return
        mark = " *" if e.best else ""
        phase = {"fine_tune": " fine-tune", "refit": " refit (all photos)"}.get(e.phase, "")
        self.bars.print(
            f"epoch {e.epoch:>3}/{e.epochs}{phase}  loss {e.loss:.4f}  acc {e.accuracy:.4f}  "
            + (
                ""
                if math.isnan(e.val_loss)
                else f"val_loss {e.val_loss:.4f}  val_acc {e.val_accuracy:.4f}  "
            )
            + f"{e.seconds:.2f}s{mark}"
        )


def _fmt(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def _summary_table(result: Any) -> None:
    from rich.table import Table

    from mtl.cli._common import shown

    val = result.val_metrics
    table = Table(title=f"mtl train: {shown(result.run_dir)}", title_justify="left")
    table.add_column("class")
    table.add_column("train", justify="right")
    table.add_column("val", justify="right")
    table.add_column("val precision", justify="right")
    table.add_column("val recall", justify="right")
    for c, t, v in zip(result.classes, result.train_counts, result.val_counts, strict=True):
        per = val["per_class"][c] if val else {}
        table.add_row(shown(c), str(t), str(v), _fmt(per.get("precision")), _fmt(per.get("recall")))
    table.add_section()
    for key in ("accuracy", "loss"):
        table.add_row(key, _fmt(result.train_metrics[key]), _fmt(val[key] if val else None))
    out.print(table)
    test = result.test_metrics
    if test:
        out.print(
            f"test (held out, never trained on): accuracy {_fmt(test['accuracy'])}, "
            f"loss {_fmt(test['loss'])} on {test['count']} photos",
            highlight=False,
        )
    for note in result.notes:
        out.print(note, highlight=False, markup=False)
    out.print(
        f"{len(result.skipped)} file(s) skipped; {result.seconds['total']:.1f}s",
        highlight=False,
    )
    out.print(f"model: {result.model_path}", highlight=False, markup=False)
