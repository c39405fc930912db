"""`mtl train`: a folder of class folders in, a trained classifier and a run folder out."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from mtl.cli._common import (
    Bars,
    cache_dir_option,
    call,
    detail,
    download_progress,
    fail,
    info,
    out,
    print_json,
    progress,
    quiet_option,
    verbose_option,
    verbosity,
    warn,
    weights_dir_option,
)
from mtl.model import backbones
from mtl.pipeline.config import KEYS, TrainConfig

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


def _opt(key: str, *names: str, help: str) -> Any:
    """An option for config key ``key``: None when not given (the config file or the
    built-in default then decides), its help showing the built-in default."""
    default = _DEFAULTS[key]
    if isinstance(default, list):
        default = ",".join(map(str, default)) or "none"
    return typer.Option(*names, help=help, show_default=str(default))


# One alias per option, so the command's signature reads as a list of its options.
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
Epochs = Annotated[int | None, _opt("epochs", "--epochs", "-e", help="Epochs of the first phase.")]
BatchSize = Annotated[int | None, _opt("batch_size", "--batch-size", "-b", help="Images per step.")]
LearningRate = Annotated[
    float | None, _opt("learning_rate", "--lr", "--learning-rate", help="Learning rate.")
]
Optimizer = Annotated[
    Literal["adam", "adamw", "sgd", "rmsprop"] | None,
    _opt("optimizer", "--optimizer", help="adam, adamw, sgd or rmsprop."),
]
Head = Annotated[
    str | None,
    _opt("head", "--head", help="Hidden dense layers, e.g. 1024,1024,512; 'none' for linear."),
]
Dropout = Annotated[float | None, _opt("dropout", "--dropout", help="Dropout before the softmax.")]
Freeze = Annotated[
    str | None,
    _opt(
        "freeze",
        "--freeze",
        help="'all' (whole base frozen) or N: freeze the first N base layers.",
    ),
]
FineTuneEpochs = Annotated[
    int | None,
    _opt(
        "fine_tune_epochs",
        "--fine-tune-epochs",
        help="Second phase: unfreeze the top of the base. Slow (Keras, the photo alone), "
        "and on the benchmark it did not beat the frozen defaults (docs/train.md).",
    ),
]
FineTuneLr = Annotated[
    float | None, _opt("fine_tune_lr", "--fine-tune-lr", help="Its learning rate.")
]
FineTuneLayers = Annotated[
    int | None,
    _opt("fine_tune_layers", "--fine-tune-layers", help="How many top base layers it unfreezes."),
]
Augment = Annotated[
    bool | None,
    typer.Option(
        "--augment/--no-augment",
        help="Random flips, rotations, zoom (training only).",
        show_default=False,
    ),
]
Refit = Annotated[
    bool | None,
    typer.Option(
        "--refit/--no-refit",
        help="After the validated run, train a second head on every photo (validation "
        "photos too) for the same epochs; the saved model averages the two heads.",
        show_default=str(_DEFAULTS["refit"]).lower(),
    ),
]
Prior = Annotated[
    bool | None,
    typer.Option(
        "--prior/--no-prior",
        help="Blend in the ImageNet prior: a linear classifier from MobileNet's own ImageNet "
        "top, weighted by how well it explains the validation photos (0 when it does not "
        "help; strong when the classes are ImageNet concepts).",
        show_default=str(_DEFAULTS["prior"]).lower(),
    ),
]
Views = Annotated[
    str | None,
    _opt(
        "views",
        "--views",
        help="Fixed views of each photo, trained on and averaged at prediction: "
        "image, flip, crop, crop_flip (comma-separated; default image,crop). Adding the "
        "mirrors (flip, crop_flip) measured +1.1 points on clothing photos for 1.4x the "
        "time, within noise elsewhere; never for text or digits, where a mirror changes "
        "the class.",
    ),
]
ValSplit = Annotated[
    float | None, _opt("val_split", "--val-split", help="Fraction held out (stable).")
]
Seed = Annotated[int | None, _opt("seed", "--seed", help="Seed for the split and training.")]
ClassWeight = Annotated[
    Literal["none", "auto"] | None,
    _opt("class_weight", "--class-weight", help="'auto': weight classes by inverse frequency."),
]
Patience = Annotated[
    int | None,
    _opt(
        "patience",
        "--patience",
        help="Early stopping on val loss (keeps the best epoch); 0: off.",
    ),
]
Model = Annotated[
    backbones.ModelName | None,
    _opt("model", "--model", "-m", help=f"The base: {', '.join(backbones.FAMILIES)}."),
]
Alpha = Annotated[
    float | None,
    _opt("alpha", "--alpha", "-a", help="Width multiplier (MobileNet v1: 0.25, 0.5, 0.75, 1.0)."),
]
ImageSize = Annotated[int | None, _opt("image_size", "--image-size", help="Input size in pixels.")]
Fit = Annotated[
    Literal["center", "squash"] | None,
    _opt(
        "fit",
        "--fit",
        help="How a photo becomes the square input: center (short side resized, the "
        "central square: the aspect kept) or squash (the whole photo resized). The model "
        "keeps it: predict and evaluate do the same.",
    ),
]
Precision = Annotated[
    Literal["auto", "float32", "mixed"] | None,
    _opt("precision", "--precision", help="auto (mixed on GPUs that benefit), float32 or mixed."),
]
BaseEngine = Annotated[
    Literal["auto", "litert", "keras"] | None,
    _opt(
        "base_engine",
        "--base-engine",
        help="What runs the frozen base's one pass: auto (LiteRT on a CPU, "
        "Keras on accelerators), litert or keras.",
    ),
]
BasePrecision = Annotated[
    Literal["auto", "float32", "int8"] | None,
    _opt(
        "base_precision",
        "--base-precision",
        help="The frozen base's numbers on LiteRT: int8 (2.7x float32's passes/s on CPUs "
        "with int8 kernels, same accuracy: docs/benchmarks.md; model.keras then carries "
        "the int8 network), float32, or auto (int8 where the base runs on LiteRT with "
        "--model mobilenet and the default views, else float32).",
    ),
]


def register(app: typer.Typer) -> None:
    @app.command("train", epilog=EXAMPLES)
    def train(
        data: Data = None,
        out_dir: OutDir = None,
        force: Force = False,
        resume: Resume = None,
        config_file: ConfigFile = None,
        epochs: Epochs = None,
        batch_size: BatchSize = None,
        learning_rate: LearningRate = None,
        optimizer: Optimizer = None,
        head: Head = None,
        dropout: Dropout = None,
        freeze: Freeze = None,
        fine_tune_epochs: FineTuneEpochs = None,
        fine_tune_lr: FineTuneLr = None,
        fine_tune_layers: FineTuneLayers = None,
        augment: Augment = None,
        refit: Refit = None,
        prior: Prior = None,
        views: Views = None,
        val_split: ValSplit = None,
        seed: Seed = None,
        class_weight: ClassWeight = None,
        patience: Patience = None,
        model: Model = None,
        alpha: Alpha = None,
        image_size: ImageSize = None,
        fit: Fit = None,
        precision: Precision = None,
        base_engine: BaseEngine = None,
        base_precision: BasePrecision = None,
        weights_dir: Path | None = weights_dir_option(),
        cache_dir: Path | None = cache_dir_option(),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
        quiet: bool = quiet_option(),
        verbose: bool = verbose_option(),
    ) -> None:
        """Train a classifier on a folder of class folders (transfer learning from ImageNet)."""
        params = dict(locals())
        _train(
            {k: v for k, v in params.items() if k in KEYS},
            data,
            out_dir,
            force,
            resume,
            config_file,
            weights_dir,
            cache_dir,
            as_json,
        )


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
    for message in result.warnings[len(display.warned) :]:
        warn(message)
    detail("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in result.seconds.items()))
    if as_json:
        print_json(result.to_json())
    else:
        _summary_table(result)


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

    def progress(self, stage: str, done: int, total: int) -> None:
        self.bars.update(stage, done, total)

    def start(self, s: Any) -> None:
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
