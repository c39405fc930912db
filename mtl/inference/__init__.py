"""Using models: ImageNet classification, prediction with a trained model, evaluation on a
test folder, and export (TFLite, SavedModel)."""
