"""How much each benchmark section runs: the settings and their quick/full/test presets."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["BenchSettings", "settings_for"]


@dataclass(frozen=True)
class BenchSettings:
    """How much of each section to run; ``settings_for`` gives the presets."""

    label: str
    batch: int = 100
    mlp: dict = field(default_factory=dict)  # build_model("mlp", **mlp): {} is the study's
    cnn: dict = field(default_factory=dict)  # build_model("cnn", **cnn): {} is the study's
    data_n: int = 2000  # synthetic training images for the loops
    loops_repeats: dict = field(default_factory=lambda: {"mlp": 5, "cnn": 2})
    loops_steps: dict = field(default_factory=lambda: {"mlp": 10, "cnn": 1})
    layers_repeats: dict = field(default_factory=lambda: {"mlp": 15, "cnn": 3})
    peak_repeats: int = 3
    peak_steps: dict = field(default_factory=lambda: {"mlp": 10, "cnn": 1})
    gemm_size: int = 2048
    jobs_repeats: int = 2
    jobs_seconds: float = 2.0
    jobs_mlp: dict = field(default_factory=dict)
    precision_repeats: int = 2
    precision_steps: dict = field(default_factory=lambda: {"mlp": 10, "cnn": 1})
    accuracy_hidden: int = 256
    accuracy_epochs: int = 4
    accuracy_train: int = 3000
    accuracy_test: int = 2000
    accuracy_seeds: int = 1
    accuracy_signal: float = 0.1  # class signal strength: ~70% test accuracy, not 100%
    # engines: batch size -> timed steps per repeat, per network (batch 5: the grid's
    # slowest runs, launch-bound); each engine compiles/captures once per batch size.
    engines_steps: dict = field(default_factory=lambda: {"mlp": {100: 20, 5: 100},
                                                         "cnn": {100: 2, 5: 10}})
    engines_repeats: int = 3
    engines_eval_images: int = 2000  # images per timed evaluation (at most the data's)

    @property
    def models(self) -> dict[str, dict]:
        """Registry name -> ``build_model`` keyword arguments of the networks measured, in
        the order the sections run them (a property, so bench.json's settings keep their
        ``mlp``/``cnn`` keys)."""
        return {"mlp": self.mlp, "cnn": self.cnn}


def settings_for(mode: str) -> BenchSettings:
    """'quick' (< 2 minutes on 2 cores), 'full' (more repeats) or 'test' (tiny, seconds)."""
    if mode == "quick":
        return BenchSettings(label="quick")
    if mode == "full":
        return BenchSettings(
            label="full", data_n=5000, loops_repeats={"mlp": 9, "cnn": 5},
            loops_steps={"mlp": 20, "cnn": 2}, layers_repeats={"mlp": 50, "cnn": 7},
            peak_repeats=5, peak_steps={"mlp": 20, "cnn": 2},
            jobs_repeats=5, jobs_seconds=5.0, precision_repeats=5,
            precision_steps={"mlp": 20, "cnn": 2}, accuracy_epochs=8, accuracy_train=10000,
            accuracy_test=5000, accuracy_seeds=3,
            engines_steps={"mlp": {100: 100, 5: 1000}, "cnn": {100: 10, 5: 100}},
            engines_repeats=5, engines_eval_images=5000)
    if mode == "test":
        return BenchSettings(
            label="test (tiny models: not the study's networks)", batch=20,
            mlp={"hidden": 32}, cnn={"channels": (4, 8)}, data_n=200,
            loops_repeats={"mlp": 2, "cnn": 1},
            loops_steps={"mlp": 2, "cnn": 1}, layers_repeats={"mlp": 2, "cnn": 2},
            peak_repeats=2, peak_steps={"mlp": 2, "cnn": 1}, gemm_size=128, jobs_repeats=1,
            jobs_seconds=0.2, jobs_mlp={"hidden": 16}, precision_repeats=1,
            precision_steps={"mlp": 2, "cnn": 1}, accuracy_hidden=16, accuracy_epochs=1,
            accuracy_train=200, accuracy_test=100,
            engines_steps={"mlp": {20: 2}, "cnn": {20: 1}}, engines_repeats=1,
            engines_eval_images=40)
    raise ValueError(f"unknown bench mode {mode!r}; valid: quick, full, test")
