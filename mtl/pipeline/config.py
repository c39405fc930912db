"""Training settings: defaults, TOML presets and command-line overrides.

A preset is a TOML file, given by its path or, for those shipped in :mod:`mtl.configs`
(``blog``, ``default``), by its name: ``--config blog``.

Precedence: built-in defaults < ``--config FILE`` < options given on the command line.
Unknown keys are refused with a "did you mean" hint, so a typo never silently
trains with a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtl import files
from mtl.data.images import FITS
from mtl.errors import UsageError
from mtl.model import backbones
from mtl.model.modelio import MAX_PARAMS, MAX_UNITS

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
PRECISIONS = ("auto", "float32", "mixed")
CLASS_WEIGHTS = ("none", "auto")
BASE_ENGINES = ("auto", "litert", "keras")
BASE_PRECISIONS = ("auto", "float32", "int8")


@dataclass
class TrainConfig:
    """Everything that decides what ``mtl train`` does; saved as ``config.json`` in the run."""

    model: str = backbones.DEFAULT_MODEL
    alpha: float = backbones.DEFAULT_ALPHA
    image_size: int = backbones.DEFAULT_SIZE
    # How a photo becomes the square input (mtl.data.images.FITS); the model keeps it, so
    # predict and evaluate do the same. "center" keeps the aspect, as MobileNet saw
    # ImageNet (bench/accuracy.py, real CLI, 6 seeds, mean against "squash"): ants/bees
    # 0.965 vs 0.951, clothing 0.868 vs 0.859 (portrait photos), digits 0.959 vs 0.959.
    fit: str = "center"
    # One hidden layer of 512 with dropout 0.5 (bench/accuracy.py: 3 datasets x 3 seeds).
    head: list[int] = field(default_factory=lambda: [512])
    dropout: float = 0.5
    # Base layers frozen from the bottom: None freezes the whole base ("all" in files).
    freeze: int | None = None
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    epochs: int = 20
    batch_size: int = 32
    # 0: a fixed number of epochs, the last kept. Early stopping on a 20% split chose
    # worse models than fixed epochs on every dataset of bench/accuracy.py.
    patience: int = 0
    fine_tune_epochs: int = 0
    fine_tune_lr: float = 1e-5
    fine_tune_layers: int = 30
    augment: bool = False
    # Fixed views of each photo (mtl.model.classifier.VIEWS): every one is a training row,
    # and the saved model averages its probabilities over them. Used with the whole base
    # frozen, no augmentation and no fine-tuning; otherwise the image alone.
    views: list[str] = field(default_factory=lambda: ["image", "crop"])
    val_split: float = 0.2
    # After the validated run, train a fresh head the same way on every photo (validation
    # photos too) for the epochs that run kept; the saved model averages its logits with
    # the validated head's (headfit.side_by_side: an ensemble of two at no training cost,
    # which narrows clothing's seed-to-seed spread in bench/accuracy.py and
    # bench/head_ensemble.py; the means do not move). Pooled runs only.
    refit: bool = True
    # Blend in the ImageNet prior (mtl.training.prior) at the weight the validation photos
    # give it: ants/bees 0.940 -> 0.957 in bench/accuracy.py; weight ~0 where the classes
    # are not ImageNet concepts (clothing, digits: unchanged). Pooled runs with a
    # validation split only.
    prior: bool = True
    seed: int = 42
    class_weight: str = "none"
    precision: str = "auto"
    # What runs the frozen base's one pass: "auto" is LiteRT on a CPU-only TensorFlow, else Keras.
    base_engine: str = "auto"
    # The frozen base's numbers on LiteRT: "int8" is a full-integer conversion calibrated
    # on generated images (mtl.model.calibration): 2.7x float32's passes/s on CPUs with
    # int8 kernels, within a seed's spread on every dataset of bench/accuracy.py, and
    # model.keras then carries the int8 network (mtl.model.int8keras), so plain Keras
    # agrees with mtl. "auto": int8 wherever LiteRT runs a base that can be saved so
    # (int8_fits), else float32 (pipeline.basepass.BasePass.precision).
    base_precision: str = "auto"
    cache_memory_mb: int = 2048

    def to_dict(self) -> dict[str, Any]:
        """The settings as saved in ``config.json`` and checkpoints (``freeze`` None as "all")."""
        values = dataclasses.asdict(self)
        values["freeze"] = "all" if self.freeze is None else self.freeze
        return values

    @property
    def pooled_only(self) -> bool:
        """Whether the whole run trains on pooled features of the frozen base (no
        augmentation, no fine-tuning): what views and refitting need."""
        return self.freeze is None and not self.augment and not self.fine_tune_epochs

    @property
    def int8_fits(self) -> bool:
        """Whether an int8 base can run this run's frozen part and be saved in
        ``model.keras`` (:mod:`mtl.model.int8keras`): the whole base frozen, MobileNet
        v1, views it rebuilds (all four), LiteRT allowed."""
        from mtl.model.int8keras import SUPPORTED_MODELS, SUPPORTED_VIEWS

        return (
            self.pooled_only
            and self.base_engine != "keras"
            and self.model in SUPPORTED_MODELS
            and all(v in SUPPORTED_VIEWS for v in self.run_views)
        )

    @property
    def run_views(self) -> list[str]:
        """The views a run uses: several only when :attr:`pooled_only`, else the image."""
        return list(self.views) if self.pooled_only else ["image"]

    @property
    def input_size(self) -> int:
        """The saved model's input side. With fit "center" and a crop view, the side whose
        central 87.5% is the base's (256 for 224): the crop views are then the photo's own
        pixels, and the whole-square views are resized down to the base's side inside the
        model. Otherwise the base's side."""
        from mtl.model.classifier import CROP

        if self.fit == "center" and any(v.startswith("crop") for v in self.run_views):
            return round(self.image_size / CROP)
        return self.image_size

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "settings") -> TrainConfig:
        """Settings read back from a file, checked as ``--config`` values are."""
        return resolve_values([(where, values)])


KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig))


@dataclass(frozen=True)
class Setting:
    """How one :class:`TrainConfig` key is given on the command line (``mtl train``, and
    ``mtl review`` for the base's keys): its flags and help. Names, types and defaults are
    TrainConfig's fields; bounds are :data:`RULES`; choices are :data:`CHOICES`."""

    flags: tuple[str, ...]
    help: str
    metavar: str | None = None


# Every choice-valued key and its choices: the CLI shows them, RULES checks them.
CHOICES: dict[str, tuple[str, ...]] = {
    "model": tuple(backbones.FAMILIES),
    "optimizer": OPTIMIZERS,
    "class_weight": CLASS_WEIGHTS,
    "fit": FITS,
    "precision": PRECISIONS,
    "base_engine": BASE_ENGINES,
    "base_precision": BASE_PRECISIONS,
}

# The table the CLI options are made from, in the order --help lists them (keys that are
# not options, like cache_memory_mb, are settable in --config files and the API only).
SETTINGS: dict[str, Setting] = {
    "epochs": Setting(("--epochs", "-e"), "Epochs of the first phase."),
    "batch_size": Setting(("--batch-size", "-b"), "Images per step."),
    "learning_rate": Setting(("--lr", "--learning-rate"), "Learning rate."),
    "optimizer": Setting(("--optimizer",), "adam, adamw, sgd or rmsprop."),
    "head": Setting(
        ("--head",), "Hidden dense layers, e.g. 1024,1024,512; 'none' for linear.", "UNITS"
    ),
    "dropout": Setting(("--dropout",), "Dropout before the softmax."),
    "freeze": Setting(
        ("--freeze",), "'all' (whole base frozen) or N: freeze the first N base layers.", "all|N"
    ),
    "fine_tune_epochs": Setting(
        ("--fine-tune-epochs",),
        "Second phase: unfreeze the top of the base. Slow (Keras, the photo alone), "
        "and on the benchmark it did not beat the frozen defaults (docs/train.md).",
    ),
    "fine_tune_lr": Setting(("--fine-tune-lr",), "Its learning rate."),
    "fine_tune_layers": Setting(("--fine-tune-layers",), "How many top base layers it unfreezes."),
    "augment": Setting(("--augment",), "Random flips, rotations, zoom (training only)."),
    "refit": Setting(
        ("--refit",),
        "After the validated run, train a second head on every photo (validation "
        "photos too) for the same epochs; the saved model averages the two heads.",
    ),
    "prior": Setting(
        ("--prior",),
        "Blend in the ImageNet prior: a linear classifier from MobileNet's own ImageNet "
        "top, weighted by how well it explains the validation photos (0 when it does not "
        "help; strong when the classes are ImageNet concepts).",
    ),
    "views": Setting(
        ("--views",),
        "Fixed views of each photo, trained on and averaged at prediction: "
        "image, flip, crop, crop_flip (comma-separated). Adding the "
        "mirrors (flip, crop_flip) measured +1.1 points on clothing photos for 1.4x the "
        "time, within noise elsewhere; never for text or digits, where a mirror changes "
        "the class.",
        "VIEWS",
    ),
    "val_split": Setting(("--val-split",), "Fraction held out (stable)."),
    "seed": Setting(("--seed",), "Seed for the split and training."),
    "class_weight": Setting(("--class-weight",), "'auto': weight classes by inverse frequency."),
    "patience": Setting(
        ("--patience",), "Early stopping on val loss (keeps the best epoch); 0: off."
    ),
    "model": Setting(("--model", "-m"), f"The base: {', '.join(backbones.FAMILIES)}."),
    "alpha": Setting(("--alpha", "-a"), "Width multiplier (MobileNet v1: 0.25, 0.5, 0.75, 1.0)."),
    "image_size": Setting(("--image-size",), "Input size in pixels."),
    "fit": Setting(
        ("--fit",),
        "How a photo becomes the square input: center (short side resized, the "
        "central square: the aspect kept) or squash (the whole photo resized). The model "
        "keeps it: predict and evaluate do the same.",
    ),
    "precision": Setting(("--precision",), "auto (mixed on GPUs that benefit), float32 or mixed."),
    "base_engine": Setting(
        ("--base-engine",),
        "What runs the frozen base's one pass: auto (LiteRT on a CPU, "
        "Keras on accelerators), litert or keras.",
    ),
    "base_precision": Setting(
        ("--base-precision",),
        "The frozen base's numbers on LiteRT: int8 (2.7x float32's passes/s on CPUs "
        "with int8 kernels, same accuracy: docs/benchmarks.md; model.keras then carries "
        "the int8 network), float32, or auto (int8 where the base runs on LiteRT with "
        "--model mobilenet, else float32).",
    ),
}


def _did_you_mean(key: str) -> str:
    close = difflib.get_close_matches(key, KEYS, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(KEYS)}"


def parse_head(value: Any) -> list[int]:
    """``"1024,1024,512"``, ``[1024, 512]``, ``""`` / ``"none"`` / ``[]`` (no hidden layer)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "none", "linear", "0"):
            return []
        parts = [p.strip() for p in text.split(",")]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise UsageError(
            f"head must be a list of layer sizes like 1024,512. Received head={value!r}"
        )
    units: list[int] = []
    for p in parts:
        try:
            n = int(p)
        except (TypeError, ValueError):
            raise UsageError(
                f"head must be comma-separated positive integers like 1024,512. "
                f"Received head={value!r}"
            ) from None
        if n < 1:
            raise UsageError(f"head layer sizes must be positive. Received head={value!r}")
        units.append(n)
    return units


def parse_freeze(value: Any) -> int | None:
    """``"all"`` (or None) freezes the whole base: None; else a number of base layers."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise UsageError(f"freeze must be 'all' or a layer count. Received freeze={value!r}")
    if isinstance(value, int):
        n = value
    else:
        text = str(value).strip().lower()
        if text == "all":
            return None
        try:
            n = int(text)
        except ValueError:
            raise UsageError(
                f"freeze must be 'all' or a number of base layers. Received freeze={value!r}"
            ) from None
    if n < 0:
        raise UsageError(f"freeze must be 'all' or a number >= 0. Received freeze={value!r}")
    return n


def parse_views(value: Any) -> list[str]:
    """``"image,crop"`` or ``["image", "crop"]``."""
    from mtl.model.classifier import check_views

    if isinstance(value, str):
        value = [v.strip().lower() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"views must be a list of view names. Received views={value!r}")
    return check_views(value)


def _coerce(key: str, value: Any) -> Any:
    if key == "head":
        return parse_head(value)
    if key == "views":
        return parse_views(value)
    if key == "freeze":
        return parse_freeze(value)
    default = getattr(TrainConfig(), key)
    try:
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            raise TypeError
        if isinstance(default, int):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if isinstance(default, str):
            if not isinstance(value, str):
                raise TypeError
            return value.strip().lower() if key != "model" else value.strip()
    except (TypeError, ValueError):
        pass
    else:
        return value
    kind = type(default).__name__
    raise UsageError(f"config key {key!r} must be a {kind}. Received {key}={value!r}")


@dataclass(frozen=True)
class Rule:
    """One check of a resolved setting. ``message`` names the option that sets it (the
    config key where there is none); the error adds ``Received key=value``."""

    key: str  # the TrainConfig field
    ok: Callable[[Any], bool]
    message: str


def _one_of(key: str) -> Rule:
    choices = CHOICES[key]
    option = SETTINGS[key].flags[0] if key in SETTINGS else key
    return Rule(key, lambda v: v in choices, f"{option} must be one of {', '.join(choices)}")


def _hint(key: str, value: Any) -> str:
    """ "; did you mean 'adam'?" for a near miss of a choice-valued key."""
    if key not in CHOICES or not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, CHOICES[key], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


# Checked in this order; the first that fails is the error. The model, alpha and size
# are checked together first (backbones.check), as they are valid only in combination.
# Upper bounds come from what later stages accept (mtl.model.modelio's loader) or from
# what a machine can hold, so a run never trains for hours and then fails to save or load.
MAX_EPOCHS = 100_000
MAX_BATCH = 1 << 20  # the base runs 256 at most, the head at most every photo
# The refit's ensemble puts two heads side by side: every hidden width doubles in the
# saved model, and the loader refuses a layer of more than modelio.MAX_UNITS units.
MAX_HEAD_UNITS = MAX_UNITS // 2
MAX_HEAD_LAYERS = 16
# Pooled features are at most 1,792 wide (MobileNetV2 at alpha 1.4); the saved head,
# doubled by the refit, must stay under the loader's parameter limit.
MAX_FEATURES = 1792


def head_params(units: Sequence[int], classes: int = 1000) -> int:
    """An upper bound of the saved head's weights (refit doubled) for any base."""
    widths = [MAX_FEATURES, *units, classes]
    return 2 * sum(a * b + b for a, b in itertools.pairwise(widths))


RULES: tuple[Rule, ...] = (
    Rule("epochs", lambda v: 1 <= v <= MAX_EPOCHS, f"--epochs must be 1 to {MAX_EPOCHS}"),
    Rule("batch_size", lambda v: 1 <= v <= MAX_BATCH, f"--batch-size must be 1 to {MAX_BATCH}"),
    Rule(
        "head",
        lambda v: (
            len(v) <= MAX_HEAD_LAYERS
            and all(n <= MAX_HEAD_UNITS for n in v)
            and head_params(v) <= MAX_PARAMS
        ),
        f"--head must be at most {MAX_HEAD_LAYERS} layers of at most {MAX_HEAD_UNITS} units, "
        f"{MAX_PARAMS:,} parameters in all once the refit doubles it (the limits of a "
        "model file mtl can open)",
    ),
    Rule("learning_rate", lambda v: v > 0, "--lr must be positive"),
    Rule("fine_tune_lr", lambda v: v > 0, "--fine-tune-lr must be positive"),
    Rule(
        "fine_tune_epochs",
        lambda v: 0 <= v <= MAX_EPOCHS,
        f"--fine-tune-epochs must be 0 to {MAX_EPOCHS}",
    ),
    Rule("fine_tune_layers", lambda v: 1 <= v <= 10_000, "--fine-tune-layers must be 1 to 10000"),
    Rule(
        "patience",
        lambda v: 0 <= v <= MAX_EPOCHS,
        "--patience must be 0 to 100000 (0 turns early stopping off)",
    ),
    Rule("seed", lambda v: 0 <= v < 2**32, "--seed must be between 0 and 2**32 - 1"),
    Rule("dropout", lambda v: 0.0 <= v < 1.0, "--dropout must be in [0, 1)"),
    Rule(
        "val_split",
        lambda v: 0.0 <= v < 1.0,
        "--val-split must be in [0, 1) (0: train on every photo, no early stopping)",
    ),
    *(_one_of(key) for key in CHOICES if key != "model"),  # the model: backbones.check
    Rule("cache_memory_mb", lambda v: 0 <= v <= 1 << 24, "cache_memory_mb must be 0 to 16777216"),
)


def validate(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` if every setting is usable, else a :class:`UsageError` naming the option."""
    backbones.check(cfg.model, cfg.alpha, cfg.image_size)
    for rule in RULES:
        value = getattr(cfg, rule.key)
        if not rule.ok(value):
            raise UsageError(
                f"{rule.message}. Received {rule.key}={value!r}{_hint(rule.key, value)}"
            )
    # Settings that only fail together (RULES checks one value each).
    if cfg.base_precision == "int8" and not cfg.int8_fits:
        raise UsageError(
            "--base-precision int8 runs the whole frozen base on LiteRT and saves it in "
            "model.keras: it needs --freeze all, no --augment, no fine-tuning, --base-engine "
            "auto or litert and --model mobilenet. Received "
            f"base_precision={cfg.base_precision!r}, model={cfg.model!r}, views={cfg.run_views}, "
            f"freeze={cfg.freeze!r}, augment={cfg.augment!r}, base_engine={cfg.base_engine!r}"
        )
    return cfg


def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Settings from a TOML preset, or from a run folder's ``config.json`` (so a run
    repeats from its own folder: ``--config runs/train/config.json``)."""
    path = Path(path)
    if path.suffix == ".json":
        return _load_run_json(path)
    try:
        data = files.loads_toml(files.read_text_limited(path, files.RECORD_LIMIT, "settings"))
    except FileNotFoundError:
        raise UsageError(f"no config file at {path}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not valid TOML: not UTF-8 text (byte {exc.start})") from None
    except ValueError as exc:  # tomllib.TOMLDecodeError, files.TooDeep
        raise UsageError(f"{path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    # A [train] table is accepted as well as top-level keys.
    if set(data) == {"train"} and isinstance(data["train"], dict):
        data = data["train"]
    return data


def _load_run_json(path: Path) -> dict[str, Any]:
    try:
        data = files.read_json(path, "settings")
    except FileNotFoundError:
        raise UsageError(f"no config file at {path}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]  # a run folder's config.json: its "config" object
    if not isinstance(data, dict):
        raise UsageError(f"{path} does not hold settings (a JSON object of config keys)")
    if "model" in data and "fit" not in data:
        data = {**data, "fit": "squash"}  # a run made before the choice: it squashed
    # Older runs recorded the pooled-only settings as on even where they never ran.
    pooled = data.get("freeze", "all") in ("all", None) and not data.get("augment")
    if not (pooled and not data.get("fine_tune_epochs")):
        data = {k: v for k, v in data.items() if k not in POOLED_ONLY}
    return data


PRESETS_PACKAGE = "mtl.configs"


def presets() -> dict[str, Path]:
    """The presets shipped with mtl: name -> its TOML file."""
    import importlib.resources

    folder = Path(str(importlib.resources.files(PRESETS_PACKAGE)))
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


def preset_path(config_file: str | os.PathLike[str]) -> Path:
    """``config_file`` as a file: a path that exists, else a shipped preset's name
    (``blog``); a missing file is refused naming the presets."""
    path = Path(config_file)
    if path.exists():
        return path
    shipped = presets()
    name = str(config_file)
    if name in shipped:
        return shipped[name]
    hint = difflib.get_close_matches(name, list(shipped), n=1)
    did_you_mean = f"; did you mean {hint[0]!r}?" if hint else ""
    raise UsageError(
        f"no config file at {path} and no preset named {name!r} "
        f"(presets: {', '.join(shipped)}){did_you_mean}"
    )


def resolve(
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Defaults, then the TOML file, then ``overrides`` (None values mean "not given")."""
    sources: list[tuple[str, Mapping[str, Any]]] = []
    if config_file is not None:
        sources.append((str(config_file), load_toml(preset_path(config_file))))
    sources.append(("options", {k: v for k, v in (overrides or {}).items() if v is not None}))
    return resolve_values(sources)


# Settings that only a pooled run (the whole base frozen, no augmentation, no fine-tuning)
# can honour, and what a run that is not pooled does instead.
POOLED_ONLY: dict[str, tuple[str, Any]] = {
    "views": ("--views", ["image"]),
    "refit": ("--refit", False),
    "prior": ("--prior", False),
}


def _not_pooled_because(cfg: TrainConfig) -> str:
    why = []
    if cfg.freeze is not None:
        why.append(f"--freeze {cfg.freeze}")
    if cfg.augment:
        why.append("--augment")
    if cfg.fine_tune_epochs:
        why.append(f"--fine-tune-epochs {cfg.fine_tune_epochs}")
    return ", ".join(why)


def reconcile(cfg: TrainConfig, given: Mapping[str, str]) -> TrainConfig:
    """Make ``cfg`` say what will run. A run that is not pooled cannot use views, the refit
    or the prior: a setting of those that was asked for (on the command line or the API,
    or a non-default value in a file) is refused, naming both sides; one left at its
    default is turned off, so ``config.json`` records what ran. ``given`` maps each key
    set by a source to that source's name."""
    if cfg.pooled_only:
        return cfg
    default = TrainConfig()
    for key, (option, instead) in POOLED_ONLY.items():
        value = getattr(cfg, key)
        if value == instead:
            continue
        where = given.get(key)
        asked = where == "options" or (where is not None and value != getattr(default, key))
        if asked:
            shown = ",".join(value) if isinstance(value, list) else str(value).lower()
            raise UsageError(
                f"{option} {shown} needs the whole base frozen, no --augment and no "
                f"fine-tuning, but this run has {_not_pooled_because(cfg)}: drop one of them"
            )
        setattr(cfg, key, instead)
    return cfg


def resolve_values(sources: Sequence[tuple[str, Mapping[str, Any]]]) -> TrainConfig:
    """Defaults, then each source in turn; keys are checked and values coerced."""
    values: dict[str, Any] = {}
    given: dict[str, str] = {}
    for where, data in sources:
        for key, value in data.items():
            if key not in KEYS:
                raise UsageError(f"unknown key {key!r} in {where}{_did_you_mean(key)}")
            values[key] = _coerce(key, value)
            given[key] = where
    return validate(reconcile(TrainConfig(**values), given))
