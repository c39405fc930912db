"""mtl: image transfer learning with MobileNet.

Importing this package is cheap: TensorFlow/Keras load only when a command
needs a model (see :mod:`mtl.runtime`).
"""

__version__ = "0.1.0"
