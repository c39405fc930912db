"""What `mtl train` and `mtl review` share, below both: the settings
(:mod:`mtl.pipeline.config`) and the frozen base's one pass over a dataset
(:mod:`mtl.pipeline.basepass`), so review's features are train's, cache keys included."""
