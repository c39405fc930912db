"""``mtl train``: settings, the frozen base's one pass, the Trainer, checkpoints and run folders.

Entry point: :func:`mtl.training.trainer.train`.
"""
