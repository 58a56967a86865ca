"""The report's formatting helpers and the interval margin, on hand-picked numbers."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from cifarlab.reporting import format as fmt
from cifarlab.reporting.render import standalone_html
from cifarlab.stats import effect_se, margin_in_se


def test_md_table_is_written_by_pandas(monkeypatch):
    df = pd.DataFrame({"model": ["MLP", "CNN"], "test %": [40.0, 32.654],
                       "seeds": [3, 3], "note": ["a|b", None]})
    table = fmt.md_table(df)
    lines = table.splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == list(df.columns)
    # text left, numbers right-aligned (GitHub renders the colons)
    cells = lines[1].strip("|").split("|")
    assert cells[0].startswith(":") and cells[1].endswith(":") and cells[2].endswith(":")
    assert cells[3].startswith(":")
    assert "32.65" in lines[3] and "a\\|b" in lines[2]  # "|" would end the cell
    # The table writing is pandas' own: md_table only formats the cells before it.
    calls = []
    monkeypatch.setattr(pd.DataFrame, "to_markdown",
                        lambda self, *a, **k: calls.append(self.shape) or "from pandas")
    assert fmt.md_table(df) == "from pandas" and calls == [df.shape]


@pytest.mark.parametrize(("value", "kwargs", "text"), [
    (-0.001, {}, "0.00"), (-0.004999, {}, "0.00"), (0.004, {"sign": True}, "0.00"),
    (-0.0, {"sign": True}, "0.00"), (-0.0004, {"digits": 3, "sign": True}, "0.000"),
    (-0.01, {}, "-0.01"), (0.3, {"sign": True}, "+0.30"), (-7.339, {}, "-7.34"),
    (math.nan, {}, ""), (None, {}, ""),
])
def test_numbers_that_round_to_zero_print_as_zero(value, kwargs, text):
    assert fmt.num(value, **kwargs) == text


def test_tables_and_intervals_use_the_one_number_format():
    table = fmt.md_table(pd.DataFrame({"difference": [-0.001, 1.234], "low": [-0.002, 1.0]}))
    assert "-0.00" not in table and "0.00" in table
    assert fmt.ci(-0.001, 0.5) == "95% CI [0.00, 0.50]"
    assert fmt.ci(math.nan, math.nan) == "no interval (one seed)"


@pytest.mark.parametrize(("value", "text"), [
    (1e-3, "1e-3"), (1e-5, "1e-5"), (2.5e-4, "2.5e-4"), (0.6, "0.6"), (100, "100"),
    (5.0, "5"), (0, "0"), (1e6 + 0.5, "1e6"), ("adamw", "adamw"), (True, "True"),
])
def test_settings_print_as_people_write_them(value, text):
    # "1e-03" is longer than needed and its hyphen is a line-break opportunity in HTML.
    assert fmt.compact(value) == text


def test_html_table_cells_do_not_wrap(tmp_path):
    page = standalone_html("<table><tr><td>1e-3</td></tr></table>", "t", tmp_path)
    css = page[page.index("<style>"):page.index("</style>")]
    rule = next(line for line in css.splitlines() if line.startswith("th, td"))
    assert "white-space: nowrap" in rule


def test_config_keys_become_readable_titles():
    assert fmt.readable_title("dropout_rate") == "Dropout rate"
    assert fmt.readable_title("batch_size") == "Batch size"
    assert fmt.readable_title("dropout2d") == "Dropout2d"


def test_first_layer_figures_show_and_name_at_most_the_layer_size():
    assert fmt.shown_units(16, 5, 5) == 16  # the quick CNN: 16 filters, not 64
    assert fmt.shown_units(128, 5, 5) == 64
    assert fmt.shown_units(1024, 32, 32) == 32
    assert "(all 16 filters," in fmt.first_layer_caption("CNN", 16, 5, 5)
    assert "(the first 32 of 1024 units," in fmt.first_layer_caption("MLP", 1024, 32, 32)


def test_curve_titles_have_one_parenthetical_remark():
    from cifarlab.plots import with_notes

    assert with_notes("CNN baseline", "best val at epoch 4", "mean over 3 seeds") == \
        "CNN baseline (best val at epoch 4; mean over 3 seeds)"
    assert with_notes("run x", "") == "run x"


def test_margin_is_the_near_end_distance_from_zero_in_standard_errors():
    # effect 2 +/- 1.5 with SE 0.5: the lower end (0.5) is 1 SE above zero
    assert margin_in_se(2.0, 0.5, 3.5, 0.5) == pytest.approx(1.0)
    # a negative effect whose interval reaches 0.5 above zero: -1 SE
    assert margin_in_se(-1.0, -2.5, 0.5, 0.5) == pytest.approx(-1.0)
    # equals |t| minus the critical t of the interval
    sd, n = 0.2, 3
    se = effect_se(sd, n, "t over seeds")
    from scipy import stats

    half = stats.t.ppf(0.975, n - 1) * se
    assert margin_in_se(4.8, 4.8 - half, 4.8 + half, se) == pytest.approx(
        4.8 / se - stats.t.ppf(0.975, n - 1))
    assert effect_se(0.4, 1, "binomial (one seed)") == 0.4  # stored as the SE itself
    assert math.isnan(effect_se(0.4, 1, "none"))
    assert math.isnan(margin_in_se(math.nan, 0, 1, 1))


def test_data_section_states_each_runs_training_against_the_study():
    from cifarlab.reporting.sections import _training_budget

    same = pd.DataFrame({"n_train": [3000, 3000], "epochs": [10, 10]})
    text = _training_budget(same)
    assert "Every run trains 10 epochs on 3,000 images: 30,000 training images seen, " \
           "0.75% of the study's 40,000 x 100" in text
    mixed = pd.DataFrame({"n_train": [3000, 40000], "epochs": [4, 100]})
    assert _training_budget(mixed).startswith("Runs train 4-100 epochs: 12,000-4,000,000 "
                                              "training images seen, 0.3-100% of")


def test_the_header_names_cuda_and_the_execution_paths_only_where_they_were_used():
    from cifarlab.reporting.sections import _cuda, _execution

    cpu = pd.DataFrame({"cuda": [None, None], "compile": [False, False],
                        "cuda_graphs": [False, False]})
    assert _cuda(cpu) == "" and _execution(cpu) == ""
    assert _cuda(pd.DataFrame({"device": ["cpu"]})) == ""  # runs from before the columns
    gpu = pd.DataFrame({"cuda": ["13.0", "13.0"], "compile": [True, True],
                        "cuda_graphs": [True, False]})
    assert _cuda(gpu) == "; CUDA `13.0`"
    assert _execution(gpu) == "; compile `True`; cuda graphs `False` (1 runs), `True` (1 runs)"
