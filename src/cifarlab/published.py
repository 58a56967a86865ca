"""The published study's findings, keyed by the structured effect ids of cifarlab's tables.

An effect id is (experiment, model, a, b): test accuracy of point ``a`` minus point ``b``.
The baselines' published accuracies live with the models (``models.MODELS[...].published``).
"""

SOURCE = "the published study (100 epochs, batch 100, GPU)"

# Effects on test accuracy in percentage points.
EFFECTS = {
    ("ablation", "mlp", "full", "no_bn"): 2.08,
    ("ablation", "cnn", "full", "no_bn"): 3.27,
    ("ablation", "mlp", "full", "no_dropout"): 2.21,
    ("ablation", "cnn", "full", "no_dropout"): -1.48,
}

# Findings the study states, as (finding, effect id, expected verdict). A finding counts as
# reproduced when the effect's verdict is the expected one.
FINDINGS = [
    ("CNN beats MLP on test accuracy", ("ablation", "cnn-mlp", "full", "full"), "better"),
    ("BatchNorm raises MLP test accuracy", ("ablation", "mlp", "full", "no_bn"), "better"),
    ("BatchNorm raises CNN test accuracy", ("ablation", "cnn", "full", "no_bn"), "better"),
    ("Dropout raises MLP test accuracy", ("ablation", "mlp", "full", "no_dropout"), "better"),
    ("Dropout lowers CNN test accuracy", ("ablation", "cnn", "full", "no_dropout"), "worse"),
    ("Dropout2d beats Dropout in the CNN", ("dropout2d", "cnn", "dropout2d", "dropout"),
     "better"),
]

# Sweeps whose smallest value the study found worst on test accuracy (each model).
SMALLEST_IS_WORST = ("batch_size",)


def finding_experiments() -> set[str]:
    """The experiments (by config name) that measure at least one of the study's findings."""
    return {key[0] for _, key, _ in FINDINGS} | set(SMALLEST_IS_WORST)
