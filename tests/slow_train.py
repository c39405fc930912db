"""Run by tests/test_resume.py in a subprocess: `mtl train` whose epochs end slowly.

A Keras callback passed through the API sleeps after each epoch's checkpoint,
leaving the test time to kill the process between two epochs.
"""

from __future__ import annotations

import sys
import time

import keras

from mtl.pipeline.config import resolve
from mtl.training.trainer import train


class SlowEpochs(keras.callbacks.Callback):
    def on_epoch_end(self, epoch: int, logs: object = None) -> None:
        time.sleep(3)


def main() -> None:
    data, out, *pairs = sys.argv[1:]
    options = dict(zip(pairs[0::2], pairs[1::2], strict=True))
    train(data, resolve(None, options), out=out, callbacks=[SlowEpochs()])


if __name__ == "__main__":
    main()
