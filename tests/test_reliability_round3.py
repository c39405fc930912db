"""Reliability round 3 (issue 24): bounded downloads, bounded model files, and inputs
that used to end in an "unexpected" exit 1.

Mirrors are loopback servers (tests/fakes/file_server.py) that trickle, never end or
serve the wrong HDF5; hostile model files are built here, each a few kilobytes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mtl.assets import checksums, datasets, weights
from mtl.cli import app
from mtl.errors import DatasetUnavailable, ModelFileError, UsageError, WeightsUnavailable
from mtl.model import backbones
from tests.conftest import HYMENOPTERA, ROOT, WEIGHTS
from tests.fakes.file_server import FileServer, wrong_hdf5

ZIP = "/datasets/hymenoptera_data.zip"
NO_TOP = backbones.weights_file("mobilenet", 0.75, include_top=False)


@pytest.fixture
def mirror(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FileServer]:
    """A loopback mirror for datasets and weights, empty caches, quick download bounds."""
    monkeypatch.setenv("MTL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    monkeypatch.delenv("MTL_DATA_DIR", raising=False)
    monkeypatch.delenv("MTL_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("MTL_DOWNLOAD_DEADLINE_S", "1.5")
    with FileServer() as s:
        monkeypatch.setenv("MTL_DATASETS_URL", s.url("/datasets/"))
        monkeypatch.setenv("MTL_WEIGHTS_URL", s.url("/w/"))
        yield s


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- H2, M10, L7: every download ends, within its size, and leaves nothing -----------


def test_a_trickling_dataset_mirror_hits_the_deadline(mirror, tmp_path):
    mirror.add(ZIP, b"PK" * 1000, trickle=0.2)
    with pytest.raises(DatasetUnavailable, match=r"took longer than 2 s"):
        datasets.resolve("hymenoptera")
    assert entries(tmp_path / "cache" / "datasets") == []


def test_a_trickling_weights_mirror_is_cut_off_by_the_minimum_rate(mirror, monkeypatch, tmp_path):
    monkeypatch.setenv("MTL_DOWNLOAD_DEADLINE_S", "600")
    monkeypatch.setenv("MTL_DOWNLOAD_WINDOW_S", "0.5")
    mirror.add("/w/" + NO_TOP.name, b"\x89HDF" * 100, trickle=0.05)
    with pytest.raises(WeightsUnavailable, match=r"slower than 20 kB/s"):
        weights.resolve(NO_TOP)
    assert entries(tmp_path / "kh" / "models") == []


def test_an_endless_class_index_stops_at_its_cap(mirror, tmp_path):
    mirror.add("/w/imagenet_class_index.json", endless=True)
    with pytest.raises(WeightsUnavailable, match=r"passed \d+ bytes, more than imagenet_class"):
        weights.resolve(weights.class_index_file())
    assert entries(tmp_path / "kh" / "models") == []


def test_an_announced_oversize_download_is_refused_before_reading(mirror, tmp_path):
    mirror.add("/w/imagenet_class_index.json", bytes(3 << 20))
    with pytest.raises(WeightsUnavailable, match=r"announces 3145728 bytes"):
        weights.resolve(weights.class_index_file())
    assert entries(tmp_path / "kh" / "models") == []


def test_sigterm_during_a_dataset_download_leaves_no_temp_folder(mirror, tmp_path):
    mirror.add(ZIP, b"PK" * 1000, trickle=0.05)
    code = "from mtl.assets import datasets\ndatasets.resolve('hymenoptera')\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MTL_DOWNLOAD_DEADLINE_S": "600"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    cache = tmp_path / "cache" / "datasets"
    while not any(n.startswith(".hymenoptera.") for n in entries(cache)):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    time.sleep(0.3)  # inside the download
    proc.send_signal(signal.SIGTERM)
    assert proc.wait() == 128 + signal.SIGTERM
    assert entries(cache) == []


def test_a_killed_runs_temp_folders_are_cleared_by_the_next_run(mirror, tmp_path):
    cache = tmp_path / "cache" / "datasets"
    stale = cache / ".hymenoptera.k1ll3d"
    (stale / "hymenoptera" / "train").mkdir(parents=True)
    (stale / "hymenoptera_data.zip").write_bytes(b"PK half")
    with pytest.raises(DatasetUnavailable, match="HTTP 404"):  # nothing served
        datasets.resolve("hymenoptera")
    assert entries(cache) == []


# --- M11: a folder mtl did not write is never deleted ---------------------------------


def test_a_hand_made_cache_folder_is_refused_not_replaced(mirror, tmp_path):
    mine = tmp_path / "cache" / "datasets" / "hymenoptera"
    (mine / "train" / "ants").mkdir(parents=True)
    (mine / "notes.txt").write_text("my notes")
    with pytest.raises(DatasetUnavailable) as exc:
        datasets.resolve("hymenoptera")
    assert str(mine) in exc.value.message and "not written by mtl" in exc.value.message
    assert "\n" not in exc.value.message
    assert (mine / "notes.txt").read_text() == "my notes"
    assert mirror.asked == []


# --- M13: a wrong HDF5 is never kept, and a cached one names itself ---------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (wrong_hdf5, "it lacks layer conv1 and 53 more"),
        (
            lambda: (WEIGHTS / "mobilenet_7_5_224_tf.h5").read_bytes(),
            "it has unexpected layer conv_preds",
        ),
    ],
)
def test_a_wrong_hdf5_weights_download_is_not_kept(mirror, tmp_path, body, reason):
    mirror.add("/w/" + NO_TOP.name, body())
    with pytest.raises(WeightsUnavailable, match=reason):
        weights.resolve(NO_TOP)
    assert entries(tmp_path / "kh" / "models") == []


def test_a_poisoned_cached_weights_file_names_itself_and_the_fix(mirror, tmp_path):
    cached = tmp_path / "kh" / "models" / NO_TOP.name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(wrong_hdf5())
    with pytest.raises(WeightsUnavailable) as exc:
        weights.resolve(NO_TOP)
    assert exc.value.message.startswith(f"{cached} is not usable weights (not the MobileNet")
    assert "delete it and mtl downloads it again" in exc.value.message
    assert mirror.asked == []


def test_weights_that_do_not_load_name_the_file(tmp_path):
    bad = tmp_path / "mobilenet_2_5_128_tf_no_top.h5"
    bad.write_bytes(wrong_hdf5())
    with pytest.raises(WeightsUnavailable) as exc:
        backbones.build("mobilenet", 0.25, weights=bad, size=128)
    assert exc.value.message.startswith(f"{bad} does not load into mobilenet alpha 0.25 (")
    assert "\n" not in exc.value.message


def test_the_expected_sizes_cover_the_real_files():
    for name in ("mobilenet_7_5_224_tf.h5", "mobilenet_7_5_224_tf_no_top.h5"):
        size = (WEIGHTS / name).stat().st_size
        assert size <= checksums.expected_size(name) < 1.1 * size
    assert checksums.expected_size("imagenet_class_index.json") == 35363


# --- M8, M9, L10, L12: every model file is bounded before anything is allocated -------


def tiny_keras(side: int) -> object:
    from mtl.runtime import keras

    k = keras()
    inputs = k.Input((side, side, 3))
    x = k.layers.GlobalAveragePooling2D()(inputs)
    return k.Model(inputs, k.layers.Dense(2, activation="softmax")(x))


def photo() -> str:
    return str(sorted((HYMENOPTERA / "ants").iterdir())[0])


def rewrite_entry(path: Path, entry: str, edit: object) -> None:
    """``path`` (a zip) with ``entry``'s JSON replaced by ``edit(json)``."""
    with zipfile.ZipFile(path) as z:
        items = {i.filename: z.read(i) for i in z.infolist()}
    items[entry] = json.dumps(edit(json.loads(items[entry]))).encode()  # type: ignore[operator]
    with zipfile.ZipFile(path, "w") as z:
        for name, data in items.items():
            z.writestr(name, data)


def test_a_tflite_declaring_a_huge_input_is_refused_before_allocating(cli, tmp_path):
    from mtl.runtime import tflite_flatbuffer

    path = tmp_path / "huge.tflite"
    path.write_bytes(tflite_flatbuffer(tiny_keras(30000), (30000, 30000, 3)))
    (tmp_path / "huge.labels.txt").write_text("ants\nbees\n")
    assert path.stat().st_size < 10_000
    result = cli.invoke(app, ["predict", str(path), photo()])
    assert result.exit_code == 2, result.output
    assert f"{path} is not a usable mtl model: it declares an input of 30000x30000" in " ".join(
        result.output.split()
    )


def onnx_model(path: Path, side: int, *, reshape_to: int | None = None) -> Path:
    """A tiny classifier (mean colour -> 2 classes) in ONNX; ``reshape_to`` adds a Reshape
    to ``[-1, reshape_to]`` that fails at run time unless it divides the pixel count."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", side, side, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])
    width = reshape_to or 3
    nodes, inits = [], [numpy_helper.from_array(np.ones((width, 2), np.float32), "w")]
    if reshape_to:
        inits.append(numpy_helper.from_array(np.array([-1, reshape_to], np.int64), "shape"))
        nodes.append(helper.make_node("Reshape", ["x", "shape"], ["flat"]))
    else:
        nodes.append(helper.make_node("ReduceMean", ["x"], ["flat"], axes=[1, 2], keepdims=0))
    nodes += [
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["y"], axis=1),
    ]
    graph = helper.make_graph(nodes, "tiny", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    meta = model.metadata_props.add()
    meta.key, meta.value = "mtl.class_names", json.dumps(["ants", "bees"])
    onnx.save(model, str(path))
    return path


def test_an_onnx_declaring_a_huge_input_is_refused_before_allocating(cli, tmp_path):
    path = onnx_model(tmp_path / "huge.onnx", 30000)
    assert path.stat().st_size < 1000
    result = cli.invoke(app, ["predict", str(path), photo()])
    assert result.exit_code == 2, result.output
    assert f"{path} is not a usable mtl model: it declares an input of 30000x30000" in " ".join(
        result.output.split()
    )


def test_an_onnx_failing_at_run_time_exits_2_naming_the_file(cli, tmp_path):
    path = onnx_model(tmp_path / "fails.onnx", 8, reshape_to=7)  # 8*8*3 = 192 values
    result = cli.invoke(app, ["predict", str(path), photo()])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) <= 2, result.output  # one message, perhaps wrapped
    assert f"{path} failed to run:" in " ".join(result.output.split())


def test_a_keras_config_declaring_a_huge_layer_is_refused_before_building(tmp_path):
    from mtl.model import modelio

    path = modelio.save_model(
        tiny_keras(8), tmp_path / "wide.keras", modelio.model_meta(["a", "b"])
    )
    assert modelio.load_model(path).class_names == ["a", "b"]

    def widen(config: dict) -> dict:
        for layer in config["config"]["layers"]:
            if layer["class_name"] == "Dense":
                layer["config"]["units"] = 1_500_000
        return config

    rewrite_entry(path, "config.json", widen)
    with pytest.raises(ModelFileError, match=r"its layer dense\w* declares 1500000 units"):
        modelio.load_model(path)


def test_a_keras_config_adding_up_to_too_many_parameters_is_refused(tmp_path):
    from mtl.model import modelio

    path = modelio.save_model(
        tiny_keras(8), tmp_path / "deep.keras", modelio.model_meta(["a", "b"])
    )

    def feed_wide(config: dict) -> dict:
        for layer in config["config"]["layers"]:
            if layer["class_name"] == "Dense":
                layer["config"]["units"] = 60_000
                layer["build_config"]["input_shape"][-1] = 60_000
        return config

    rewrite_entry(path, "config.json", feed_wide)
    with pytest.raises(ModelFileError, match=r"about 3600060000 parameters"):
        modelio.load_model(path)


def test_duplicate_class_names_are_refused_in_every_model_format(cli, tmp_path):
    from mtl.inference.onnx import class_names_from_metadata
    from mtl.inference.tflite import read_labels
    from mtl.model import modelio

    path = modelio.save_model(tiny_keras(8), tmp_path / "dup.keras", modelio.model_meta(["a", "b"]))
    rewrite_entry(path, "mtl.json", lambda meta: {**meta, "class_names": ["ants", "ants"]})
    result = cli.invoke(app, ["predict", str(path), photo()])
    assert result.exit_code == 2, result.output
    assert f"{path} is damaged: the class name 'ants' appears twice" in " ".join(
        result.output.split()
    )
    labels = tmp_path / "m.labels.txt"
    labels.write_text("ants\nbees\nants\n")
    with pytest.raises(ModelFileError, match="the class name 'ants' appears twice"):
        read_labels(labels)
    with pytest.raises(ModelFileError, match="the class name 'b' appears twice"):
        class_names_from_metadata({"mtl.class_names": '["b", "b"]'}, tmp_path / "m.onnx")


# --- M12, L11: a checkpoint is checked like any file read back ------------------------


def saved_checkpoint(run: Path, variables: list) -> Path:
    import numpy as np

    from mtl.training import checkpoint

    checkpoint.save(
        run,
        checkpoint.Checkpoint(
            epochs_done=1,
            phase="train",
            history=[{"epoch": 1}],
            early={"best_loss": 0.5, "best_epoch": 1, "wait": 0, "stopped_early": False},
            variables=[np.asarray(v, np.float32) for v in variables],
            optimizer={"iterations": np.array(3)},
            best_weights=None,
        ),
    )
    return checkpoint.folder(run) / checkpoint.STATE_FILE


def test_a_nan_checkpoint_is_refused_naming_it(tmp_path):
    from mtl.training import checkpoint

    state = saved_checkpoint(tmp_path, [[1.0, float("nan")], [0.0]])
    with pytest.raises(UsageError) as exc:
        checkpoint.load(tmp_path)
    assert str(state) in exc.value.message and "var/0 holds NaN" in exc.value.message


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        ({"arrays": "../../../outside.npz"}, "names '../../../outside.npz', not one of mtl's"),
        ({"arrays": "/etc/passwd"}, "not one of mtl's checkpoint files"),
        ({"epochs_done": 1000}, "epochs_done 1000 does not match its 1 epochs"),
        ({"epochs_done": "1"}, "epochs_done '1' does not match"),
        ({"history": "x"}, "history is not a list of epochs"),
        ({"phase": 3}, "phase or early-stopping state is damaged"),
    ],
)
def test_a_tampered_checkpoint_state_is_refused_naming_it(tmp_path, edit, reason):
    from mtl.training import checkpoint

    state = saved_checkpoint(tmp_path / "run", [[1.0, 2.0]])
    outside = tmp_path / "outside.npz"
    outside.write_bytes((checkpoint.folder(tmp_path / "run") / "epoch-0001.npz").read_bytes())
    state.write_text(json.dumps({**json.loads(state.read_text()), **edit}))
    with pytest.raises(UsageError) as exc:
        checkpoint.load(tmp_path / "run")
    assert exc.value.message.startswith(f"cannot read the checkpoint {state}: ")
    assert reason in exc.value.message


def test_planted_oversized_run_records_are_refused_before_they_are_read(tmp_path, monkeypatch):
    """A checkpoint's state, a run's settings or a labels file can be any size when planted:
    past files.RECORD_LIMIT each is refused naming it, not read into memory."""
    from mtl import files
    from mtl.errors import MtlError
    from mtl.inference.tflite import read_labels
    from mtl.pipeline.config import resolve
    from mtl.training import checkpoint

    monkeypatch.setattr(files, "RECORD_LIMIT", 1024)
    state = saved_checkpoint(tmp_path / "run", [[1.0, 2.0]])
    state.write_text(json.dumps({**json.loads(state.read_text()), "pad": "x" * 2048}))
    settings = tmp_path / "config.json"
    settings.write_text(json.dumps({"config": {"epochs": 3}, "pad": "x" * 2048}))
    labels = tmp_path / "labels.txt"
    labels.write_text("ants\n" * 1024)
    for read, path in (
        (lambda: checkpoint.load(tmp_path / "run"), state),
        (lambda: resolve(settings), settings),
        (lambda: read_labels(labels), labels),
    ):
        with pytest.raises(MtlError, match="too large") as caught:
            read()
        assert str(path) in str(caught.value)


def test_an_array_file_linked_outside_the_run_is_refused(tmp_path):
    from mtl.training import checkpoint

    saved_checkpoint(tmp_path / "run", [[1.0, 2.0]])
    npz = checkpoint.folder(tmp_path / "run") / "epoch-0001.npz"
    npz.rename(tmp_path / "elsewhere.npz")
    npz.symlink_to(tmp_path / "elsewhere.npz")
    with pytest.raises(UsageError, match="epoch-0001.npz is missing or not a plain file"):
        checkpoint.load(tmp_path / "run")


# --- L9, L8, L6: inputs that ended in an "unexpected" exit 1 --------------------------


def assert_refused(args: list[str], env: dict[str, str], message: str) -> None:
    """``mtl ARGS`` in a process with ``env`` exits 2 with ``message``, never "unexpected"."""
    done = subprocess.run(
        [sys.executable, "-m", "mtl", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in " ".join(done.stderr.split())
    assert "unexpected" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MTL_CPU_DEVICES": "abc"}, "MTL_CPU_DEVICES must be a whole number from 1 to"),
        ({"MTL_CPU_DEVICES": "100000"}, "Received '100000'"),
        ({"TF_CONFIG": "{not json"}, "TF_CONFIG is not valid JSON"),
        ({"TF_CONFIG": '{"cluster": {"worker": 3}}'}, 'TF_CONFIG must be {"cluster"'),
        ({"KERAS_BACKEND": "evil"}, "KERAS_BACKEND must be one of tensorflow, jax, torch"),
        ({"KERAS_BACKEND": "torch"}, "KERAS_BACKEND=torch needs torch, which this install"),
    ],
)
def test_bad_environment_variables_exit_2_naming_them(tmp_path, env, message):
    pytest.importorskip("tensorflow")
    if env.get("KERAS_BACKEND") == "torch":
        try:
            import torch  # noqa: F401

            pytest.skip("torch is installed here")
        except ImportError:
            pass
    assert_refused(["classify", "--alpha", "0.75", photo()], env, message)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MTL_CPU_DEVICES": "1.5"}, "MTL_CPU_DEVICES must be a whole number from 1 to"),
        ({"MTL_CPU_DEVICES": "0"}, "Received '0'"),
        ({"KERAS_BACKEND": "evil"}, "KERAS_BACKEND must be one of tensorflow, jax, torch"),
        ({"TF_CONFIG": "[]"}, 'TF_CONFIG must be {"cluster"'),
    ],
)
def test_bad_environment_variables_stop_a_run_that_never_imports_keras(tmp_path, env, message):
    """The default CPU run (LiteRT base, NumPy head) checks them as Keras' import would,
    before its run folder exists."""
    data = tmp_path / "data"
    for label in ("ants", "bees"):
        (data / label).mkdir(parents=True)
        for src in sorted((HYMENOPTERA / label).iterdir())[:3]:
            (data / label / src.name).write_bytes(src.read_bytes())
    out = tmp_path / "run"
    assert_refused(["train", str(data), "--alpha", "0.75", "--out", str(out)], env, message)
    assert not out.exists()


def test_an_empty_keras_backend_is_unset_as_keras_reads_it(monkeypatch):
    from mtl import runtime

    monkeypatch.setenv("KERAS_BACKEND", "")
    runtime.check_environment()
    assert runtime.backend_name() == "tensorflow"


def test_train_api_arguments_are_checked_before_anything_is_written(tmp_path):
    import mtl

    with pytest.raises(UsageError, match=r"data must be a path .* Received 123 \(int\)"):
        mtl.train(123)  # type: ignore[arg-type]
    out = tmp_path / "run"
    with pytest.raises(UsageError, match=r"callbacks\[0\] is not a keras.callbacks.Callback"):
        mtl.train(HYMENOPTERA, out=out, callbacks=[42])
    assert not out.exists()


def test_two_threads_training_into_one_folder_get_a_clear_lock_message(tmp_path):
    import threading

    from mtl.locks import FolderBusy, folder_lock

    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with folder_lock(tmp_path, "train"):
            held.set()
            release.wait()

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait()
    try:
        with pytest.raises(FolderBusy) as exc, folder_lock(tmp_path, "train"):
            pass
    finally:
        release.set()
        thread.join()
    assert "in use by another train in this process (another thread" in exc.value.message
    assert f"pid {os.getpid()}" not in exc.value.message


def test_a_full_disk_names_the_file_being_written(tmp_path):
    code = (
        "import resource, signal\n"
        "from mtl import files\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        f"files.write_bytes({str(tmp_path / 'big.npz')!r}, bytes(1 << 20))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert f"File too large: '{tmp_path / 'big.npz'}'" in done.stderr, done.stderr
    assert [p.name for p in tmp_path.iterdir()] == []
