"""``mtl train``: settings, the frozen base's one pass, the engines, checkpoints and run folders.

Entry point: :func:`mtl.training.trainer.train`.
"""
