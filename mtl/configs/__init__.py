"""Training presets shipped with mtl, addressable by name: ``mtl train DATA --config blog``.

Each ``NAME.toml`` here is a preset (:func:`mtl.pipeline.config.preset_path`).
"""
