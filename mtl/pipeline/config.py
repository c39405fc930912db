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
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtl import files
from mtl.data.images import FITS
from mtl.errors import UsageError
from mtl.model import backbones

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
    epochs: int = 30
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


def _one_of(key: str, option: str, choices: Sequence[str]) -> Rule:
    return Rule(key, lambda v: v in choices, f"{option} must be one of {', '.join(choices)}")


# Checked in this order; the first that fails is the error. The model, alpha and size
# are checked together first (backbones.check), as they are valid only in combination.
RULES: tuple[Rule, ...] = (
    Rule("epochs", lambda v: v >= 1, "--epochs must be at least 1"),
    Rule("batch_size", lambda v: v >= 1, "--batch-size must be at least 1"),
    Rule("learning_rate", lambda v: v > 0, "--lr must be positive"),
    Rule("fine_tune_lr", lambda v: v > 0, "--fine-tune-lr must be positive"),
    Rule("fine_tune_epochs", lambda v: v >= 0, "--fine-tune-epochs must be >= 0"),
    Rule("fine_tune_layers", lambda v: v >= 1, "--fine-tune-layers must be >= 1"),
    Rule("patience", lambda v: v >= 0, "--patience must be >= 0 (0 turns early stopping off)"),
    Rule("seed", lambda v: 0 <= v < 2**32, "--seed must be between 0 and 2**32 - 1"),
    Rule("dropout", lambda v: 0.0 <= v < 1.0, "--dropout must be in [0, 1)"),
    Rule(
        "val_split",
        lambda v: 0.0 <= v < 1.0,
        "--val-split must be in [0, 1) (0: train on every photo, no early stopping)",
    ),
    _one_of("optimizer", "--optimizer", OPTIMIZERS),
    _one_of("precision", "--precision", PRECISIONS),
    Rule("class_weight", lambda v: v in CLASS_WEIGHTS, "--class-weight must be 'none' or 'auto'"),
    _one_of("fit", "--fit", FITS),
    _one_of("base_engine", "--base-engine", BASE_ENGINES),
    _one_of("base_precision", "--base-precision", BASE_PRECISIONS),
    Rule("cache_memory_mb", lambda v: v >= 0, "cache_memory_mb must be >= 0"),
)


def validate(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` if every setting is usable, else a :class:`UsageError` naming the option."""
    backbones.check(cfg.model, cfg.alpha, cfg.image_size)
    for rule in RULES:
        value = getattr(cfg, rule.key)
        if not rule.ok(value):
            raise UsageError(f"{rule.message}. Received {rule.key}={value!r}")
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


def resolve_values(sources: Sequence[tuple[str, Mapping[str, Any]]]) -> TrainConfig:
    """Defaults, then each source in turn; keys are checked and values coerced."""
    values: dict[str, Any] = {}
    for where, data in sources:
        for key, value in data.items():
            if key not in KEYS:
                raise UsageError(f"unknown key {key!r} in {where}{_did_you_mean(key)}")
            values[key] = _coerce(key, value)
    return validate(TrainConfig(**values))
