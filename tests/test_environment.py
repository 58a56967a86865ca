"""environment.yml, pyproject.toml and the rules' conda env pin the same versions."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins(reqs):
    out = {}
    for r in reqs:
        m = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)$", r.strip())
        if m:
            out[m.group(1).lower()] = m.group(2)
    return out


def _conda_pins(path):
    env = yaml.safe_load(path.read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    return _pins(pip), python


def test_pins_agree():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = _pins(project["dependencies"])
    dev = _pins(project["optional-dependencies"]["dev"])
    env, python = _conda_pins(ROOT / "environment.yml")
    rule_env, rule_python = _conda_pins(ROOT / "workflow/envs/cifarlab.yaml")
    assert env == {**runtime, **dev}
    # The rules need the runtime packages except the workflow engine itself.
    assert rule_env == {k: v for k, v in runtime.items()
                        if k not in ("snakemake", "snakemake-executor-plugin-slurm")}
    assert python == rule_python == "python=3.11"
    assert project["requires-python"].startswith(">=3.11")
    assert runtime["torch"] == "2.14.1" and runtime["torchvision"] == "0.29.1"
    for name in ("snakemake", "torch", "torchvision", "pandas", "matplotlib", "papermill"):
        assert name in runtime
