"""Keras layers of mtl's own; importing this module imports Keras."""

from __future__ import annotations

from typing import Any

from mtl._version import __version__
from mtl.runtime import keras as _load_keras

_load_keras()  # quiet, configured import first
import keras  # noqa: E402

# The model format of files whose class names live in this layer (mtl before format 2,
# which keeps them in mtl.json inside the file); kept so those files still load.
MODEL_FORMAT = 1


@keras.saving.register_keras_serializable(package="mtl", name="ClassNames")
class ClassNames(keras.layers.Layer):
    """Identity on the class probabilities that carries the class names in the model file.

    Keeping the names inside ``model.keras`` (not in a side file) means a model
    can never be used with the wrong labels.
    """

    def __init__(
        self,
        class_names: list[str],
        model_format: int = MODEL_FORMAT,
        mtl_version: str = __version__,
        info: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("name", "class_names")
        super().__init__(**kwargs)
        self.class_names = [str(c) for c in class_names]
        self.model_format = int(model_format)
        self.mtl_version = str(mtl_version)
        self.info = dict(info or {})

    def call(self, inputs: Any) -> Any:
        return inputs

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            class_names=self.class_names,
            model_format=self.model_format,
            mtl_version=self.mtl_version,
            info=self.info,
        )
        return config
