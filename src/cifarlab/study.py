"""From a study configuration to canonical run specs, one per distinct grid point and seed.

A *run spec* holds everything that decides a run's result: model and its full argument
set, optimiser settings, batch size, epochs, seed, precision and the data split. Its id is
a readable prefix plus a hash of the canonical JSON, so identical grid points from
different experiments are one run, and changing a default creates new runs beside the
old ones instead of overwriting them.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import inspect
import json
import re
from pathlib import Path
from typing import Any

import yaml

from .experiments import check_experiment
from .models import MODELS, model_arguments

__all__ = [
    "ConfigError", "OPTIMIZERS", "PRECISIONS", "canonical_spec", "run_id", "build_plan",
    "validate_config", "check_sizes", "data_identity", "experiment_seeds",
]

OPTIMIZERS = ("adam", "adamw", "sgd")
PRECISIONS = ("fp32", "bf16")
SPEC_KEYS = ("arch", "optimizer", "lr", "weight_decay", "momentum", "batch_size", "epochs")
# Settings only some optimizers read: elsewhere a value (or a sweep over it) would change
# nothing and collapse into the baseline, so it is an error.
OPTIMIZER_ONLY = {"momentum": ("sgd",)}
# The config's JSON schema (Snakemake validates the file with it; the grid points, which
# merge a model's settings with a point's overrides, are validated here with its
# `settings` definition).
SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key and the valid choices."""


def _model_defaults(name: str) -> dict[str, Any]:
    sig = inspect.signature(MODELS[name].cls)
    out = {}
    for arg in model_arguments(name):
        default = sig.parameters[arg].default
        out[arg] = list(default) if isinstance(default, tuple) else default
    return out


def _deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _set_path(d: dict, dotted: str, value: Any) -> dict:
    out = copy.deepcopy(d)
    node = out
    keys = dotted.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return out


def data_identity(data_cfg: dict) -> str:
    """What identifies the data a run saw, without reading it.

    The official archive: its MD5. An image folder: its name, plus the size of a tarball,
    so the same data reached by another path (relative, absolute, moved) keeps its runs.
    The prepared cache's own checksum is recorded in every run's metrics.
    """
    kind = data_cfg.get("source", "url")
    if kind in ("url", "archive"):
        md5 = data_cfg.get("md5")
        return f"official:{md5 if md5 and md5 != 'none' else 'unverified'}"
    path = Path(str(data_cfg.get("path")))
    size = f":{path.stat().st_size}" if path.is_file() else ""
    return f"folder:{path.name}{size}"


def canonical_spec(model: str, settings: dict, seed: int, split: dict, data: str,
                   precision: str = "fp32") -> dict:
    """The canonical, fully explicit spec of one run (defaults filled in, numbers typed)."""
    arch = _deep_merge(_model_defaults(model), settings.get("arch") or {})
    for key, value in arch.items():
        if isinstance(value, tuple):
            arch[key] = list(value)
    if "dropout" in arch:
        arch["dropout"] = float(arch["dropout"])
        if arch["dropout"] == 0.0 and "dropout2d" in arch:
            arch["dropout2d"] = False  # no dropout: the kind of dropout does not matter
    optimizer = settings["optimizer"]
    spec = {
        "model": model,
        "arch": arch,
        "optimizer": optimizer,
        "lr": float(settings["lr"]),
        "weight_decay": float(settings["weight_decay"]),
        "momentum": float(settings.get("momentum", 0.9)) if optimizer == "sgd" else None,
        "batch_size": int(settings["batch_size"]),
        "epochs": int(settings["epochs"]),
        "seed": int(seed),
        "precision": precision,
        "data": {"source": data, **{k: split.get(k) for k in sorted(split)}},
    }
    return spec


def run_id(spec: dict) -> str:
    """Readable prefix + 10 hex digits of the canonical spec's SHA-1."""
    digest = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
    arch = spec["arch"]
    parts = [spec["model"], "bn" if arch.get("bn", True) else "nobn"]
    if "dropout" in arch:
        kind = "d2" if arch.get("dropout2d") else "p"
        parts.append(f"{kind}{arch['dropout']:g}")
    parts += [f"bs{spec['batch_size']}", f"s{spec['seed']}"]
    return "-".join(parts) + "-" + digest


def _fail(key: str, problem: str, fix: str) -> None:
    raise ConfigError(f"config key '{key}': {problem}; {fix}")


@functools.cache
def _settings_validator():
    import jsonschema

    schema = yaml.safe_load(SCHEMA.read_text())
    return jsonschema.Draft202012Validator(
        {"$ref": "#/definitions/settings", "definitions": schema["definitions"]})


def _check_types(key: str, settings: dict) -> None:
    """The schema's types and ranges for one grid point's merged settings."""
    errors = sorted(_settings_validator().iter_errors(settings), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = ".".join([key, *map(str, e.path)])
        _fail(where, e.message, "see config/README.md for the setting's type and range")


def _check_builds(key: str, model: str, arch: dict) -> None:
    """Build the model on the meta device (no memory, no compute): an argument its
    constructor refuses (a kernel list of the wrong length, 0 channels) is a config error."""
    import torch

    from .models import build_model

    try:
        with torch.device("meta"):
            build_model(model, **arch)
    except (ValueError, TypeError, RuntimeError) as exc:
        _fail(f"{key}.arch", f"model {model!r} cannot be built with {arch}: {exc}",
              "fix the architecture arguments")


def _check_model_settings(key: str, model: str, settings: dict, max_batch: int) -> None:
    for setting, optimizers in OPTIMIZER_ONLY.items():
        if settings.get(setting) is not None and settings.get("optimizer") not in optimizers:
            _fail(f"{key}.{setting}", f"optimizer {settings.get('optimizer')!r} ignores "
                  f"{setting!r}, so every value would train the same run",
                  f"use optimizer {' or '.join(optimizers)}, or drop {setting!r}")
    valid_args = model_arguments(model)
    unknown = sorted(set(settings.get("arch") or {}) - set(valid_args))
    if unknown:
        _fail(f"{key}.arch", f"unknown argument(s) {unknown} for model '{model}'",
              f"valid arguments: {', '.join(valid_args)}")
    unknown = sorted(set(settings) - set(SPEC_KEYS))
    if unknown:
        _fail(key, f"unknown setting(s) {unknown}", f"valid settings: {', '.join(SPEC_KEYS)}")
    opt = settings.get("optimizer")
    if opt not in OPTIMIZERS:
        _fail(f"{key}.optimizer", f"unknown optimizer {opt!r}",
              f"valid optimizers: {', '.join(OPTIMIZERS)}")
    p = (settings.get("arch") or {}).get("dropout")
    if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float))
                          or not 0 <= p < 1):
        _fail(f"{key}.arch.dropout", f"dropout rate {p!r} is outside [0, 1)",
              "use 0 for no dropout and a value below 1 otherwise")
    bs = settings.get("batch_size")
    if not isinstance(bs, int) or isinstance(bs, bool) or bs < 1:
        _fail(f"{key}.batch_size", f"batch size {bs!r} is not a positive integer",
              "use e.g. 100")
    if bs > max_batch:
        _fail(f"{key}.batch_size", f"batch size {bs} is larger than the training split "
              f"({max_batch} images)", f"use at most {max_batch}")
    for num in ("lr", "weight_decay", "epochs"):
        v = settings.get(num)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            _fail(f"{key}.{num}", f"{v!r} is not a non-negative number", "give a number")
    if settings["epochs"] < 1:
        _fail(f"{key}.epochs", f"{settings['epochs']} epochs", "train for at least 1 epoch")
    _check_types(key, settings)  # after the checks above, whose messages are more specific
    _check_builds(key, model, _deep_merge(_model_defaults(model), settings.get("arch") or {}))


def train_split_size(config: dict) -> int:
    split = config.get("split", {})
    return int(split.get("train_subset") or split.get("n_train", 40000))


def _experiment_points(name: str, exp: dict) -> list[tuple[str, Any, dict]]:
    """(label, value, override) for each point of an experiment."""
    if "points" in exp:
        return [(str(label), label, ov or {}) for label, ov in exp["points"].items()]
    sweep = exp["sweep"]
    return [(f"{value:g}" if isinstance(value, float) else str(value), value,
             _set_path({}, sweep["key"], value)) for value in sweep["values"]]


_STRING_KEYS = {"data", "profile", "report_dir"}


_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _yaml_scalar(value: Any) -> Any:
    if isinstance(value, str):
        if _FLOAT.match(value.strip()) and not value.strip().lstrip("+-").isdigit():
            return float(value)  # YAML 1.1 reads "1e-3" as a string; a config means 0.001
        parsed = yaml.safe_load(value) if value.strip() else value
        if isinstance(parsed, (int, float, bool)) or parsed is None:
            return parsed
    return value


def coerce_scalars(node: Any) -> Any:
    """Numbers and booleans written as strings ("1e-5", "0", "true") become typed values."""
    if isinstance(node, dict):
        return {k: coerce_scalars(v) for k, v in node.items()}
    if isinstance(node, list):
        return [coerce_scalars(v) for v in node]
    return _yaml_scalar(node)


def coerce_mapping(mapping: dict) -> dict:
    """`coerce_scalars` on every top-level entry but the free-text ones (data, profile,
    report_dir: paths, URLs and checksums stay strings). Changes ``mapping`` in place."""
    for key in list(mapping):
        if key not in _STRING_KEYS:
            mapping[key] = coerce_scalars(mapping[key])
    return mapping


def normalize_config(config: dict) -> dict:
    """Type the scalars that `snakemake --config key={...}` delivers as strings.

    Snakemake reads nested command-line values without YAML typing (`seeds=[0,1]` gives
    ['0', '1']); here they get the types a YAML file would give them. Data paths, URLs
    and checksums stay strings.
    """
    coerce_mapping(config)
    if isinstance(config.get("seeds"), int):
        config["seeds"] = [config["seeds"]]
    for exp in (config.get("experiments") or {}).values():
        if isinstance(exp, dict) and isinstance(exp.get("seeds"), int):
            exp["seeds"] = [exp["seeds"]]
    return config


BASE_CONFIG = SCHEMA.parents[2] / "config" / "config.yaml"


def load_config(configfiles: list[str] | tuple[str, ...] = (),
                overrides: list[str] | tuple[str, ...] = (),
                base: str | Path | None = BASE_CONFIG) -> dict:
    """The config a `snakemake` invocation with the same arguments sees.

    ``base`` (config/config.yaml, the Snakefile's ``configfile:``), then each of
    ``configfiles`` (``--configfile``), then ``overrides`` (``--config key=value``, parsed
    and merged by Snakemake's own functions), normalized and filled with the schema's
    defaults as the Snakefile does. So `cifarlab plan` and `cifarlab status` print the ids
    of the runs that `snakemake` with the same arguments trains.
    """
    from snakemake.cli import parse_config
    from snakemake.utils import update_config, validate

    config: dict = {}
    for path in ([base] if base else []) + list(configfiles):
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {str(path)!r} does not exist; give a YAML file "
                              "such as config/quick.yaml")
        update_config(config, yaml.safe_load(path.read_text()) or {})
    try:
        update_config(config, parse_config(list(overrides)))
    except ValueError as exc:
        raise ConfigError(f"--config {' '.join(overrides)!r}: {exc}; write key=value, e.g. "
                          "--config seeds=[0,1]") from None
    normalize_config(config)
    try:
        validate(config, schema=str(SCHEMA))
    except Exception as exc:  # snakemake's WorkflowError, with jsonschema's message
        raise ConfigError(f"the config does not match {SCHEMA.name}: {exc}") from None
    return config


def validate_config(config: dict) -> None:
    """Semantic checks the JSON schema cannot express; raises ConfigError."""
    if not config.get("experiments"):
        _fail("experiments", "no experiment is defined, so there is nothing to train",
              "define at least one (config/config.yaml lists the study's)")
    data = config.get("data", {})
    if data.get("source", "url") in ("archive", "folder"):
        path = data.get("path")
        if not path or not Path(str(path)).expanduser().exists():
            _fail("data.path", f"{path!r} does not exist" if path else "no path is given",
                  f"give the {'archive' if data['source'] == 'archive' else 'image folder'} "
                  "(a directory or .tar.gz) that exists on this machine")
    models = config.get("models", {})
    for name in models:
        if name not in MODELS:
            _fail(f"models.{name}", f"unknown model {name!r}",
                  f"valid models: {', '.join(sorted(MODELS))}")
    max_batch = train_split_size(config)
    for name, settings in models.items():
        _check_model_settings(f"models.{name}", name, settings, max_batch)
    if config.get("precision", "fp32") not in PRECISIONS:
        _fail("precision", f"unknown precision {config.get('precision')!r}",
              f"valid: {', '.join(PRECISIONS)}")
    for ename, exp in config.get("experiments", {}).items():
        if ("points" in exp) == ("sweep" in exp):
            _fail(f"experiments.{ename}", "needs exactly one of 'points' or 'sweep'",
                  "see config/README.md")
        for model in exp.get("models", []):
            if model not in models:
                _fail(f"experiments.{ename}.models", f"model {model!r} has no settings "
                      "under 'models'", f"defined models: {', '.join(models)}")
            for label, _value, override in _experiment_points(ename, exp):
                merged = _deep_merge(models[model], override)
                _check_model_settings(f"experiments.{ename}[{label}] ({model})", model,
                                      merged, max_batch)
        check_experiment(ename, exp, _fail)
        section = exp.get("section")
        if section is not None:
            from .reporting import SECTIONS

            if section not in SECTIONS:
                _fail(f"experiments.{ename}.section", f"unknown report section {section!r}",
                      f"valid: {', '.join(SECTIONS)}, or leave it out for the generic one")
    split = config.get("split", {})
    for key in ("train_subset", "val_subset"):
        limit = split.get("n_train" if key == "train_subset" else "n_val")
        if split.get(key) and limit and split[key] > limit:
            _fail(f"split.{key}", f"{split[key]} is larger than the split it is drawn from "
                  f"({limit})", f"use at most {limit}")


def check_sizes(split: dict, n_pool: int, n_test: int) -> None:
    """The split's sizes against the prepared data's counts; raises ConfigError."""
    n_train, n_val = split.get("n_train", 40000), split.get("n_val", 10000)
    if n_train + n_val > n_pool:
        _fail("split.n_train + split.n_val", f"{n_train} + {n_val} = {n_train + n_val} "
              f"images, but the data's training pool has {n_pool}",
              f"choose sizes that sum to at most {n_pool}")
    if split.get("test_subset") and split["test_subset"] > n_test:
        _fail("split.test_subset", f"{split['test_subset']} is larger than the {n_test} test "
              "images", f"use at most {n_test}, or null for all of them")


def experiment_seeds(config: dict, name: str) -> list[int]:
    """The seeds experiment ``name`` runs: its own ``seeds``, else the top-level ones."""
    own = config.get("experiments", {}).get(name, {}).get("seeds")
    return list(own if own is not None else config.get("seeds", [0]))


def build_plan(config: dict) -> dict[str, dict]:
    """run_id -> {"spec": spec, "members": [{experiment, model, label, value}, ...]}.

    Identical specs from different experiments collapse into one entry whose
    ``members`` lists every grid point it stands for.
    """
    validate_config(config)
    split = dict(config.get("split", {}))
    data = data_identity(config.get("data", {}))
    precision = config.get("precision", "fp32")
    plan: dict[str, dict] = {}
    all_seeds: set[int] = set()
    for ename, exp in config.get("experiments", {}).items():
        seeds = experiment_seeds(config, ename)
        all_seeds.update(seeds)
        for model in exp["models"]:
            for index, (label, value, override) in enumerate(_experiment_points(ename, exp)):
                settings = _deep_merge(config["models"][model], override)
                for seed in seeds:
                    spec = canonical_spec(model, settings, seed, split, data, precision)
                    rid = run_id(spec)
                    entry = plan.setdefault(rid, {"spec": spec, "members": []})
                    entry["members"].append({"experiment": ename, "model": model,
                                             "label": label, "value": value, "seed": seed,
                                             "index": index})
    # The baseline of each model (its settings without overrides) is what the study's
    # headline numbers and curves describe.
    for model, settings in config.get("models", {}).items():
        for seed in sorted(all_seeds):
            rid = run_id(canonical_spec(model, settings, seed, split, data, precision))
            if rid in plan:
                plan[rid]["baseline"] = True
    return plan
