"""The report: section functions over one read-only view of the tables, and its rendering.

The report notebook (workflow/notebooks/report.ipynb) builds a ``ReportView`` and calls
the sections of ``REPORT`` in order; ``render_report`` executes it with papermill and
converts it to HTML and Markdown. An experiment's section is looked up by name in
``SECTIONS`` (its ``section:`` in the config, else its kind's generic one).
"""

from . import study_sections  # noqa: F401  (registers the study's experiment sections)
from .format import md_table
from .render import render_report
from .sections import (
    accuracy,
    curves,
    data_section,
    effects_section,
    experiment_sections,
    failures,
    figures_of_features,
    findings,
    findings_over_training,
    header,
    hyperparameters,
    loss_gap,
    model_contrast,
    reproduction,
    runs_section,
    training_flag,
)
from .view import EXPERIMENT_SECTIONS, ReportView, experiment_section

SECTIONS = EXPERIMENT_SECTIONS

# The report's sections in order; the notebook renders each in its own cell.
REPORT = (header, findings, findings_over_training, failures, data_section, hyperparameters,
          curves, accuracy, model_contrast, experiment_sections, loss_gap, training_flag,
          figures_of_features, reproduction, effects_section, runs_section)

__all__ = ["ReportView", "REPORT", "SECTIONS", "EXPERIMENT_SECTIONS", "experiment_section",
           "render_report", "md_table", *(f.__name__ for f in REPORT)]
