"""From files to training inputs: the one image loader, the dataset scan and split, and
the feature cache."""
