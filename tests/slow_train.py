"""Run by tests/test_resume.py in a subprocess: `mtl train` whose epochs end slowly.

A Keras callback sleeps after each epoch's checkpoint, leaving the test time to
kill or interrupt the process between two epochs. ``slow_train.py DATA OUT key
value ...`` trains through the API; ``slow_train.py --cli ARG ...`` runs the
real command line (``mtl ARG ...``, its epoch lines, its Ctrl-C message) with
the same callback added to its ``train`` call.
"""

from __future__ import annotations

import signal
import sys
import time
from typing import Any

import keras

from mtl.pipeline.config import resolve
from mtl.training import trainer


class SlowEpochs(keras.callbacks.Callback):
    def on_epoch_end(self, epoch: int, logs: object = None) -> None:
        time.sleep(3)


def slow_train(*args: Any, **kwargs: Any) -> Any:
    return original(*args, **kwargs, callbacks=[SlowEpochs()])


original = trainer.train


def main() -> None:
    # As in a terminal: a process started in the background of a script ignores SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if sys.argv[1] == "--cli":
        from mtl.cli import app
        from mtl.cli._common import run_app

        trainer.train = slow_train  # the CLI looks train up when it runs
        sys.argv = ["mtl", *sys.argv[2:]]
        run_app(app)
        return
    data, out, *pairs = sys.argv[1:]
    options = dict(zip(pairs[0::2], pairs[1::2], strict=True))
    original(data, resolve(None, options), out=out, callbacks=[SlowEpochs()])


if __name__ == "__main__":
    main()
