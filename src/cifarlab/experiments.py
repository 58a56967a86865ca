"""Experiment kinds: what an experiment of the config compares, draws and reports.

Two kinds, chosen by the config's shape (config/README.md, "Experiments"):

* ``points``: named points (e.g. the ablation's ``full``, ``no_bn``). Its effects are the
  pairs the config lists under ``effects`` (``[a, b]`` means a - b), by default every point
  against the first; ``model_contrast: {a: cnn, b: mlp, point: full}`` adds a - b between
  two models at one point.
* ``sweep``: one setting over values. Its effects are every value against ``reference``:
  a value of the sweep, or ``best`` (the value with the best mean validation accuracy).
  ``scale: log`` draws the summary on a log axis; ``axis`` names the swept setting.

Effects are keyed by the structured id (experiment, model, a, b); their display labels are
derived from the id (``effect_label``) and never joined on. Every module that needs to know
what an experiment is asks this one, never the experiment's name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Experiment", "EffectDef", "KINDS", "experiments_from_config", "effect_label"]

KINDS = ("points", "sweep")
SCALES = ("linear", "log")


@dataclass(frozen=True)
class EffectDef:
    """One paired effect, a - b, on test accuracy: points ``a`` and ``b`` of models
    ``a_model`` and ``b_model`` (the same model for a within-model effect)."""

    a: str
    b: str
    a_model: str | None = None  # None: the effect is computed for every model
    b_model: str | None = None
    chosen_on_val: bool = False  # b is the sweep's best value on validation

    @property
    def contrast(self) -> bool:
        """True for a between-model effect."""
        return self.a_model is not None and self.a_model != self.b_model


@dataclass(frozen=True)
class Experiment:
    """An experiment of the config, with what its kind owns: effects, figures, section."""

    name: str
    kind: str
    models: tuple[str, ...]
    labels: tuple[str, ...]
    effects: tuple[EffectDef, ...] = ()
    reference: str | None = None  # sweeps: a value's label, or "best"
    scale: str = "linear"
    axis: str = ""
    section: str | None = None  # a report section by name; None: the kind's generic one
    extra: dict[str, Any] = field(default_factory=dict)

    def figure_names(self) -> list[str]:
        """The figures this experiment draws (file names without extension)."""
        names = [f"{self.name}_{m}" for m in self.models]
        if self.kind == "sweep":
            names.append(f"{self.name}_summary")
        return names

    def effect_defs(self, val_means: dict[str, dict[str, float]]) -> list[tuple[str, EffectDef]]:
        """(model, effect) pairs to compute; ``val_means[model][label]`` picks ``best``."""
        out: list[tuple[str, EffectDef]] = []
        if self.kind == "sweep":
            for m in self.models:
                # Points without a validation accuracy (runs that diverged at once) can be
                # neither the best nor compared.
                means = {k: v for k, v in val_means.get(m, {}).items() if math.isfinite(v)}
                if not means:
                    continue
                if self.reference == "best":
                    ref, chosen = max(means, key=means.get), True
                else:
                    ref = self.reference if self.reference in means else next(iter(means))
                    chosen = False
                out += [(m, EffectDef(lab, ref, chosen_on_val=chosen))
                        for lab in self.labels if lab != ref and lab in means]
            return out
        for e in self.effects:
            if e.contrast:
                out.append((f"{e.a_model}-{e.b_model}", e))
            else:
                out += [(m, e) for m in self.models]
        return out


def effect_label(experiment: str, model: str, effect: EffectDef, chosen_on_val: bool = False
                 ) -> str:
    """Display text of an effect, e.g. ``ablation: full - no_bn`` or
    ``ablation: cnn - mlp at full`` for a between-model effect."""
    what = f"{effect.a} - {effect.b}"
    if effect.contrast:
        what = f"{effect.a_model} - {effect.b_model} at {effect.a}"
    return f"{experiment}: {what}" + (" (b chosen on val)" if chosen_on_val else "")


def _label(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def experiments_from_config(experiments: dict) -> dict[str, Experiment]:
    """The config's ``experiments`` section as Experiment objects (already schema-checked)."""
    out = {}
    for name, exp in experiments.items():
        models = tuple(exp["models"])
        if "sweep" in exp:
            sweep = exp["sweep"]
            labels = tuple(_label(v) for v in sweep["values"])
            ref = sweep.get("reference", "best")
            ref = "best" if ref == "best" else _label(ref)
            out[name] = Experiment(
                name, "sweep", models, labels, reference=ref,
                scale=sweep.get("scale", "linear"), axis=sweep.get("axis") or sweep["key"],
                section=exp.get("section"))
            continue
        labels = tuple(str(k) for k in exp["points"])
        pairs = exp.get("effects")
        if pairs is None:
            pairs = [[lab, labels[0]] for lab in labels[1:]]
        effects = [EffectDef(str(a), str(b)) for a, b in pairs]
        if exp.get("model_contrast"):
            c = exp["model_contrast"]
            point = str(c.get("point", labels[0]))
            effects.append(EffectDef(point, point, c["a"], c["b"]))
        out[name] = Experiment(name, "points", models, labels, tuple(effects),
                               section=exp.get("section"))
    return out


def check_experiment(name: str, exp: dict, fail) -> None:
    """Semantic checks of one experiment's kind options; ``fail(key, problem, fix)`` raises."""
    if "sweep" in exp:
        sweep = exp["sweep"]
        labels = [_label(v) for v in sweep.get("values", [])]
        ref = sweep.get("reference", "best")
        if ref != "best" and _label(ref) not in labels:
            fail(f"experiments.{name}.sweep.reference", f"{ref!r} is not one of the values "
                 f"{labels}", "use one of the values, or 'best' (chosen on validation)")
        if sweep.get("scale", "linear") not in SCALES:
            fail(f"experiments.{name}.sweep.scale", f"unknown scale {sweep.get('scale')!r}",
                 f"valid: {', '.join(SCALES)}")
        return
    labels = [str(k) for k in exp.get("points", {})]
    for pair in exp.get("effects") or []:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            fail(f"experiments.{name}.effects", f"{pair!r} is not a pair [a, b]",
                 "list effects as [a, b] pairs of point names (a - b)")
        for p in pair:
            if str(p) not in labels:
                fail(f"experiments.{name}.effects", f"{p!r} is not a point of the experiment",
                     f"points: {', '.join(labels)}")
    c = exp.get("model_contrast")
    if c:
        for side in ("a", "b"):
            if c.get(side) not in exp.get("models", []):
                fail(f"experiments.{name}.model_contrast.{side}", f"{c.get(side)!r} is not a "
                     "model of the experiment", f"models: {', '.join(exp.get('models', []))}")
        if str(c.get("point", labels[0] if labels else "")) not in labels:
            fail(f"experiments.{name}.model_contrast.point", f"{c.get('point')!r} is not a "
                 "point of the experiment", f"points: {', '.join(labels)}")
