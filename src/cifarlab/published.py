"""The published study's numbers (accuracy in %), the reference a reproduction is compared with."""

# Best-validation checkpoint, 100 epochs on a GPU: train / val / test accuracy in %.
ACCURACY = {
    "mlp": {"train_acc": 80.33, "val_acc": 57.23, "test_acc": 56.09},
    "cnn": {"train_acc": 96.10, "val_acc": 81.49, "test_acc": 80.66},
}

# Effects on test accuracy in percentage points, (experiment, effect, model) -> value.
EFFECTS = {
    ("ablation", "BatchNorm (full - no_bn)", "mlp"): 2.08,
    ("ablation", "BatchNorm (full - no_bn)", "cnn"): 3.27,
    ("ablation", "Dropout (full - no_dropout)", "mlp"): 2.21,
    ("ablation", "Dropout (full - no_dropout)", "cnn"): -1.48,
}

# Findings the study states without a number.
QUALITATIVE = {
    ("dropout2d", "Dropout2d - Dropout", "cnn"): "better",
}

SOURCE = "the published study (100 epochs, batch 100, GPU)"
