"""What mtl needs from outside: pretrained weights (a folder, the Keras cache, or a
verified download)."""
