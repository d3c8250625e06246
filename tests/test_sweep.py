"""Budget sweep collection and plot, on fabricated metrics files."""

import pytest
from fakes import metrics_tree

from pds import data
from studies import sweep


def fake_metrics(folder, m, value):
    rows = [{"method": meth, "image_encoder": enc, "r_mean": value + i}
            for i, meth in enumerate(["pds", "random", "full"]) for enc in ["convnet", "vit"]]
    data.save_json(folder / f"metrics_{m}.json", metrics_tree(rows, "toyworld", m))


def test_collect_and_plot(tmp_path):
    for m, v in [(100, 10.0), (200, 20.0), (500, 30.0)]:
        fake_metrics(tmp_path, m, v)
    df = sweep.collect(tmp_path)
    assert len(df) == 3 * 3 * 2  # budgets x methods x encoders, val-selected rows only
    pds_convnet = df[(df.method == "pds") & (df.image_encoder == "convnet")]
    assert pds_convnet.n_pairs.tolist() == [100, 200, 500] and pds_convnet.r_mean.tolist() == [10.0, 20.0, 30.0]
    sweep.main(["summary", str(tmp_path)])
    assert (tmp_path / "r_mean_vs_budget.png").stat().st_size > 0


def test_protocols_are_kept_apart(tmp_path):
    for m in (100, 200):
        rows = [{"method": "pds", "image_encoder": "convnet", "protocol": p, "r_mean": v + m}
                for p, v in (("field", 1.0), ("paper", 2.0))]
        data.save_json(tmp_path / f"metrics_{m}.json", metrics_tree(rows, "t", m, 1))
    df = sweep.collect(tmp_path)
    assert df[df.protocol == "paper"].r_mean.tolist() == [102.0, 202.0]
    fig = sweep.plot_budget(df)
    assert len(fig.axes) == 2 and "paper" in fig.axes[1].get_title()


def test_missing_folder_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="make sweep"):
        sweep.collect(tmp_path)


def test_summary_tables_put_methods_in_palette_order_and_budgets_in_columns(tmp_path):
    for m, v in [(500, 30.0), (100, 10.0)]:
        fake_metrics(tmp_path, m, v)
    text = sweep.markdown(sweep.collect(tmp_path))
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert [c.strip() for c in lines[0].split("|")[2:-1]] == ["convnet M=100", "convnet M=500", "vit M=100", "vit M=500"]
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["pds", "random", "full"]
    assert "10.0 ± 0.5" in lines[2] and "31.0 ± 0.5" in lines[3]
    sweep.main(["summary", str(tmp_path)])
    assert (tmp_path / "summary.md").read_text() == text


def test_summary_marks_a_single_seed_instead_of_a_zero_spread(tmp_path):
    rows = [{"method": "pds", "image_encoder": "convnet", "r_mean": 7.0, "sd": 0.4},
            {"method": "full", "image_encoder": "convnet", "r_mean": 50.0, "sd": 0.0, "n": 1}]
    data.save_json(tmp_path / "metrics_100.json", metrics_tree(rows, "t", 100, 3))
    text = sweep.markdown(sweep.collect(tmp_path))
    assert "7.0 ± 0.4" in text and "50.0 (1 seed)" in text and "50.0 ±" not in text
