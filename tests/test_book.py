"""The chapters' shared formatters: the prose reads the numbers the cells measured."""

import pytest

from lowrank import book


@pytest.mark.parametrize(
    ("value", "digits", "text"),
    [
        (6.4e-11, 0, "6 × 10⁻¹¹"),
        (1e-10, 0, "10⁻¹⁰"),
        (1.04e-3, 1, "1.0 × 10⁻³"),
        (2.5e4, 1, "2.5 × 10⁴"),
        (0.0, 0, "0"),
        (-3e-5, 0, "−3 × 10⁻⁵"),
        (-1e-5, 0, "−10⁻⁵"),
    ],
)
def test_sci(value, digits, text):
    assert book.sci(value, digits) == text


def test_sci_refuses_negative_digits():
    with pytest.raises(ValueError, match="digits"):
        book.sci(1.0, -1)


def test_span_collapses_equal_ends():
    assert book.span(0.101, 0.104, "{:.2f}") == "0.10"
    assert book.span(0.1, 0.3, "{:.1f}") == "0.1–0.3"


def test_by_lambda():
    assert book.by_lambda({0.0: 0.5, 1e-3: 0.25}) == "0.5 at λ = 0 and 0.25 at λ = 10⁻³"
    assert book.by_lambda({1e-2: 1.0}) == "1 at λ = 10⁻²"
    with pytest.raises(ValueError, match="values"):
        book.by_lambda({})


def test_listing():
    assert book.listing([0.5, 0.25], "{:.2f}") == "0.50, 0.25"


def test_no_chapter_defines_its_own_formatter():
    from pathlib import Path

    for page in (Path(__file__).resolve().parents[1] / "book").glob("[0-9][0-9]_*.md"):
        text = page.read_text(encoding="utf-8")
        for name in ("tens", "sci", "span", "lam_text", "list_by_lam", "listing"):
            assert f"\ndef {name}(" not in text, f"{page.name} defines {name}; use lowrank.book"


def test_table_formats_floats_and_float_index_labels():
    import pandas as pd

    from lowrank.book import table

    frame = pd.DataFrame(
        {"gap": [0.123456, 1.5e-7], "steps": [3000, 6000], "name": ["a", "b"]},
        index=pd.Index([0.01, 0.1], name="lam"),
    )
    out = table(frame)
    assert list(out["gap"]) == ["0.123", "1.5e-07"]
    assert list(out["steps"]) == [3000, 6000] and list(out["name"]) == ["a", "b"]
    assert list(out.index) == ["0.01", "0.1"] and out.index.name == "lam"
    multi = frame.set_index("name", append=True)
    assert list(table(multi).index.get_level_values("lam")) == ["0.01", "0.1"]
    assert frame["gap"].dtype == float  # the input is left as it was


def test_notices_print_one_line_without_a_path():
    import warnings

    from lowrank.config import CHECKOUT
    from lowrank.runner.cache import Notice, shown

    book.notices_as_one_line()
    book.notices_as_one_line()  # twice: still one wrapper
    text = warnings.formatwarning("ignoring results/x.csv: stale", Notice, "/abs/registry.py", 9)
    assert text == "note: ignoring results/x.csv: stale\n"
    other = warnings.formatwarning("careful", UserWarning, "/abs/x.py", 3)
    assert "/abs/x.py:3" in other  # other warnings keep their usual form
    assert shown(CHECKOUT / "results" / "fig3-quick.csv") == "results/fig3-quick.csv"
    assert shown(CHECKOUT.parent / "elsewhere" / "t.csv") == "t.csv"


def test_provenance_table_names_each_tables_source(tmp_path, monkeypatch):
    from lowrank.runner import registry

    monkeypatch.setenv("LOWRANK_RESULTS", str(tmp_path))
    registry.run_and_save("lemma3-grid", "quick", "cpu", show_progress=False, precision="fp32")
    t = book.provenance_table("lemma3-grid", "fig3")
    assert t.loc["lemma3-grid", "precision"] == "fp32" and t.loc["lemma3-grid", "scale"] == "quick"
    assert t.loc["fig3", "precision"] == ""  # nothing stored: blank, not invented
    with pytest.raises(ValueError, match="unknown experiments"):
        book.provenance_table("nope")


def test_provenance_table_of_every_experiment_names_its_chapter():
    t = book.provenance_table()
    assert t.loc["fig3", "chapter"] == "ch10" and "stored" in t.columns and len(t) >= 17
