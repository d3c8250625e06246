"""The benchmark harness's reporting (not its timings: speed claims are measured by `make bench`, never asserted
in tests): the cost ratio of trajectory matching against PDS and the students table read the right figures."""

import sys

from pds.paths import ROOT

sys.path.insert(0, str(ROOT))
from benchmarks import common, stages, students  # noqa: E402


def _row(stage, seconds, peak):
    return {"stage": stage, "seconds": common.stats([seconds]), "peak_rss_mib": common.stats([peak])}


def test_cost_ratio_divides_tm_by_pds_embed_to_synthesize():
    table = [_row("embed", 30, 1000), _row("cluster", 20, 400), _row("match", 5, 300), _row("synthesize", 25, 1200),
             _row("text_features", 200, 1300), _row("tm", 240, 1500)]
    line = " ".join(stages.cost_ratio(table))
    assert "240 s" in line and "80 s" in line and "**3.0x**" in line and "1,200 MiB" in line
    assert stages.cost_ratio([r for r in table if r["stage"] != "tm"]) == []  # nothing to compare: no line


def test_students_table_reports_each_configuration_and_the_speedup():
    field = {name: common.stats([t, t]) for name, t in zip(students.CONFIGS, (30.0, 24.0, 15.0), strict=True)}
    section = {"repeats": 2, "students_per_encoder": 18, "pin": {"ATEN_CPU_CAPABILITY": "avx2"},
               "rows": [{"encoder": "convnet", "field_s": field, "speedup": common.stats([2.0, 2.0]),
                         "r_mean": {name: 40.0 for name in students.CONFIGS}, "paper_s": common.stats([5.0, 5.0]),
                         "paper_vs_field": common.stats([3.0, 3.0]), "unpinned_s": common.stats([12.0, 12.0]),
                         "unpinned_r_mean": 40.01}],
               "vmap": {"convnet": {"one_by_one_s": common.stats([0.2]), "vmap_s": common.stats([0.5]),
                                    "speedup": common.stats([0.4])}},
               "captions": {"n_distinct": 90, "n_captions": 100, "sample": 10, "seconds": [1.0, 1.0]}}
    text = students.markdown(section)
    assert "| convnet | 30 (30–30) [n=2] | 24 (24–24) [n=2] | 15 (15–15) [n=2] | 2 (2–2) [n=2] | 40.00 / 40.00 |" in text
    assert "ATEN_CPU_CAPABILITY=avx2" in text and "12 (12–12) [n=2] unpinned" in text and "vmap" in text
