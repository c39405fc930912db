"""`mtl train` data handling that needs no model: scan, stable split, errors, config presets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtl.cli import app
from mtl.data import dataset
from mtl.errors import DataError, UsageError
from mtl.pipeline import config

ROOT = Path(__file__).resolve().parents[2]


def make_tree(root: Path, counts: dict[str, int], start: int = 0) -> None:
    """Files named like photos (the scan never decodes them)."""
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(start, start + n):
            (root / cls / f"img_{i:04d}.jpg").write_bytes(b"x")


def sides(ds: dataset.Dataset) -> dict[str, str]:
    return {it.path.name + "@" + ds.classes[it.label]: it.subset for it in ds.items}


def test_classes_sorted_images_recursive(tmp_path):
    make_tree(tmp_path, {"zebra": 3, "ant": 3})
    (tmp_path / "ant" / "deeper").mkdir()
    (tmp_path / "ant" / "deeper" / "more.png").write_bytes(b"x")
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    ds = dataset.scan(tmp_path)
    assert ds.classes == ["ant", "zebra"]
    assert sum(1 for it in ds.items if it.label == 0) == 4
    assert any(it.path.name == "more.png" for it in ds.items)


def test_split_is_deterministic_and_seeded(tmp_path):
    make_tree(tmp_path, {"a": 60, "b": 60})
    first = sides(dataset.scan(tmp_path, seed=1))
    assert sides(dataset.scan(tmp_path, seed=1)) == first
    assert sides(dataset.scan(tmp_path, seed=2)) != first


def test_adding_a_photo_moves_at_most_one_per_class(tmp_path):
    make_tree(tmp_path, {"a": 50, "b": 30})
    for added in range(1000, 1012):  # one photo at a time, to both classes
        before = sides(dataset.scan(tmp_path, val_split=0.2, seed=7))
        make_tree(tmp_path, {"a": 1, "b": 1}, start=added)
        after = sides(dataset.scan(tmp_path, val_split=0.2, seed=7))
        for cls in ("a", "b"):
            moved = [k for k in before if k.endswith("@" + cls) and after[k] != before[k]]
            assert len(moved) <= 1, (added, moved)


def test_adding_many_photos_moves_few(tmp_path):
    make_tree(tmp_path, {"a": 200, "b": 200})
    before = sides(dataset.scan(tmp_path, val_split=0.2, seed=7))
    make_tree(tmp_path, {"a": 20, "b": 20}, start=1000)
    after = sides(dataset.scan(tmp_path, val_split=0.2, seed=7))
    moved = [k for k in before if after[k] != before[k]]
    assert len(moved) <= 8  # expected 0 per class; the ranking only shifts at its boundary


@pytest.mark.parametrize(
    ("n", "fraction", "held_out"),
    [(124, 0.2, 25), (121, 0.2, 24), (60, 0.2, 12), (2, 0.2, 1), (1, 0.2, 0), (5, 0.9, 4),
     (10, 0.25, 3), (10, 0.0, 0)],
)  # fmt: skip
def test_each_class_holds_out_exactly_its_share(tmp_path, n, fraction, held_out):
    make_tree(tmp_path, {"a": n, "b": 7})
    ds = dataset.scan(tmp_path, val_split=fraction, seed=3)
    assert ds.counts("val")[0] == held_out == dataset.held_out_count(n, fraction)
    assert ds.counts("train")[0] == n - held_out


def test_split_is_stratified(tmp_path):
    make_tree(tmp_path, {f"c{i:02d}": 60 for i in range(13)})
    ds = dataset.scan(tmp_path, val_split=0.2, seed=42)
    assert ds.counts("val") == [12] * 13  # the old hash threshold gave 6 to 16 per class


def test_train_val_layout_used_as_given(tmp_path):
    make_tree(tmp_path / "train", {"a": 5, "b": 5})
    make_tree(tmp_path / "val", {"a": 2, "b": 3})
    ds = dataset.scan(tmp_path)
    assert ds.layout == "train/val"
    assert ds.counts("train") == [5, 5] and ds.counts("val") == [2, 3]
    assert all(("/val/" in str(it.path)) == (it.subset == "val") for it in ds.items)


def test_manifest_is_honoured(tmp_path):
    make_tree(tmp_path, {"a": 4, "b": 4})
    lines = [{"path": f"a/img_{i:04d}.jpg", "label": "a"} for i in range(3)]
    lines += [{"path": "b/img_0000.jpg"}, {"path": "b/img_0001.jpg", "status": "duplicate"}]
    (tmp_path / "manifest.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    ds = dataset.scan(tmp_path)
    assert sorted(it.path.name for it in ds.items if it.label == 0) == [
        "img_0000.jpg",
        "img_0001.jpg",
        "img_0002.jpg",
    ]
    assert [it.path.name for it in ds.items if it.label == 1] == ["img_0000.jpg"]


@pytest.mark.parametrize(
    ("counts", "needle"),
    [
        ({"only": 5}, "only one class"),
        ({"a": 5, "empty": 0}, "holds no images"),
        ({"a": 0, "b": 0}, "no images"),
        ({}, "no class folders"),
    ],
)
def test_bad_datasets_exit_2_with_one_line(cli, tmp_path, counts, needle):
    make_tree(tmp_path, counts)
    with pytest.raises(DataError, match=needle):
        dataset.scan(tmp_path)
    result = cli.invoke(app, ["train", str(tmp_path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "run").exists()


def test_missing_folder_exit_2(cli, tmp_path):
    result = cli.invoke(app, ["train", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no such folder" in result.stderr


def test_warnings_for_small_or_imbalanced_classes():
    msgs = dataset.quality_warnings(["a", "b"], [50, 9])
    assert any("'b' has only 9 images" in m for m in msgs)
    assert any("imbalanced 5.6:1" in m for m in msgs)
    assert dataset.quality_warnings(["a", "b"], [40, 10]) == []


def test_class_weights_inverse_frequency():
    assert dataset.class_weights([30, 10]) == pytest.approx([40 / 60, 40 / 20])
    assert dataset.class_weights([10, 10]) == [1.0, 1.0]


def test_existing_model_refused_unless_force(cli, tmp_path):
    make_tree(tmp_path / "data", {"a": 3, "b": 3})
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.keras").write_bytes(b"old")
    result = cli.invoke(app, ["train", str(tmp_path / "data"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "--force" in result.stderr
    assert (tmp_path / "run" / "model.keras").read_bytes() == b"old"


def test_next_run_dir_numbering(tmp_path):
    from mtl.training.rundir import next_run_dir

    assert next_run_dir(tmp_path) == tmp_path / "train"
    (tmp_path / "train").mkdir()
    assert next_run_dir(tmp_path) == tmp_path / "train2"
    (tmp_path / "train2").mkdir()
    (tmp_path / "train7").mkdir()
    assert next_run_dir(tmp_path) == tmp_path / "train3"


def test_presets_and_overrides():
    blog = config.resolve("blog")
    assert blog.head == [1024, 1024, 512] and blog.freeze == 20 and blog.optimizer == "adam"
    assert blog.epochs == 10 and blog.dropout == 0.0
    default = config.resolve(ROOT / "mtl" / "configs" / "default.toml")
    assert default == config.TrainConfig()
    mixed = config.resolve("blog", {"epochs": 3, "head": "none"})
    assert mixed.epochs == 3 and mixed.head == [] and mixed.freeze == 20
    assert default.fit == "center" and blog.fit == "squash"  # the blog's load_img squashed


def test_a_run_made_before_fit_existed_repeats_with_squash(tmp_path):
    """``--config RUN/config.json`` of an older run (no "fit"): it squashed, so it still does."""
    import json

    old = {k: v for k, v in config.TrainConfig().to_dict().items() if k != "fit"}
    run_json = tmp_path / "config.json"
    run_json.write_text(json.dumps({"config": old}))
    assert config.resolve(run_json).fit == "squash"
    run_json.write_text(json.dumps({"config": {**old, "fit": "center"}}))
    assert config.resolve(run_json).fit == "center"


def test_unknown_key_did_you_mean(cli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("epochz = 3\n")
    with pytest.raises(UsageError, match="did you mean 'epochs'"):
        config.resolve(bad)
    make_tree(tmp_path / "data", {"a": 3, "b": 3})
    result = cli.invoke(app, ["train", str(tmp_path / "data"), "--config", str(bad)])
    assert result.exit_code == 2 and "did you mean 'epochs'" in result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--freeze", "some"], "freeze must be"),
        (["--head", "10,x"], "head must be"),
        (["--val-split", "1.5"], "--val-split"),
        (["--alpha", "0.3"], "alpha"),
        (["--fit", "crop"], "--fit"),
    ],
)
def test_bad_options_exit_2(cli, tmp_path, args, needle):
    make_tree(tmp_path, {"a": 3, "b": 3})
    result = cli.invoke(app, ["train", str(tmp_path), *args])
    assert result.exit_code == 2 and needle in result.stderr, result.stderr


def test_help_has_examples(cli):
    result = cli.invoke(app, ["train", "--help"])
    assert (
        result.exit_code == 0
        and "Examples" in result.stdout
        and "--fine-tune-epochs" in result.stdout
    )


def test_int8_is_the_cpu_default_only_where_model_keras_can_carry_it():
    """`auto` may pick int8 only for the layouts mtl.model.int8keras rebuilds; asking for
    int8 elsewhere is refused before anything runs, naming what to change."""
    from mtl.pipeline.basepass import BasePass

    default = config.TrainConfig()
    assert default.base_precision == "auto" and default.int8_fits
    assert config.TrainConfig(views=["image", "flip", "crop", "crop_flip"]).int8_fits
    for other in (
        {"model": "mobilenet_v2"},
        {"augment": True},
        {"freeze": 20},
        {"base_engine": "keras"},
    ):
        cfg = config.TrainConfig(**other)
        assert not cfg.int8_fits, other
        base = BasePass(config.validate(cfg), Path("unused.h5"), auto_int8=True)
        assert base.precision(None) == "float32", other
        with pytest.raises(UsageError, match="--base-precision int8"):
            config.validate(config.TrainConfig(**other, base_precision="int8"))
    base = BasePass(config.validate(default), Path("unused.h5"), auto_int8=True)
    assert base.precision(None) == "int8" and base.precision(20) == "float32"
    base.engine = "keras"  # a GPU, another backend: no LiteRT, no int8
    assert base.precision(None) == "float32"
    review = BasePass(default, Path("unused.h5"))  # auto_int8 not given: float32
    assert review.precision(None) == "float32"
    assert (
        BasePass(config.TrainConfig(base_precision="float32"), Path("x"), auto_int8=True).precision(
            None
        )
        == "float32"
    )
