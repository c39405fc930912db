"""The network: MobileNet backbones, the saved classifier (preprocessing, base, head, class
names), mtl's own Keras layer, and saving/loading ``model.keras``."""
