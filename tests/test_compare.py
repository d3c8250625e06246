"""The reproducibility check: two metrics.json files agree within a tolerance, or every difference is named."""

import copy
import json

import pytest

from pds import compare


def _metrics():
    row = {"IR@1": 10.0, "IR@5": 30.0, "IR@10": 40.0, "TR@1": 15.0, "TR@5": 35.0, "TR@10": 50.0, "r_mean": 30.0,
           "r_mean_std": 1.0, "epochs": 100}
    results = [{"method": m, "image_encoder": "convnet", "protocol": p, "selected_on": s, **row}
               for p in ("field", "paper") for m in ("pds", "random") for s in ("val", "test")]
    return {"dataset": "toyworld", "n_pairs": 100, "seeds": 3, "results": results}


def test_equal_and_within_tolerance_agree():
    a = _metrics()
    b = copy.deepcopy(a)
    b["results"][0]["r_mean"] += 0.1  # rounding of a last bit on another CPU
    b["results"][3]["IR@1"] -= 0.05
    assert compare.compare_metrics(a, a) == []
    assert compare.compare_metrics(a, b, tol=0.1) == []


def test_every_difference_is_named():
    a = _metrics()
    b = copy.deepcopy(a)
    b["results"][0]["r_mean"] += 0.5
    b["results"].pop()  # paper/random/test missing
    b["n_pairs"] = 200
    diffs = compare.compare_metrics(a, b, tol=0.1)
    assert any(d.startswith("n_pairs") for d in diffs)
    assert any("paper/random/convnet/test: only in a" == d for d in diffs)
    assert any("field/pds/convnet/val r_mean: 30.0 vs 30.5" in d for d in diffs)
    assert len(diffs) == 3


def test_rows_without_protocol_are_the_field_protocol_and_duplicates_are_refused():
    a = _metrics()
    old = copy.deepcopy(a)
    old["results"] = [{k: v for k, v in r.items() if k != "protocol"} for r in old["results"] if r["protocol"] == "field"]
    diffs = compare.compare_metrics(a, old)
    assert diffs and all("paper/" in d and "only in a" in d for d in diffs)
    dup = copy.deepcopy(a)
    dup["results"].append(dup["results"][0])
    with pytest.raises(ValueError, match="twice"):
        compare.compare_metrics(a, dup)


def test_command_line_exit_code(tmp_path, capsys):
    a, b = _metrics(), _metrics()
    b["results"][1]["TR@5"] += 2
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert compare.main([str(tmp_path / "a.json"), str(tmp_path / "a.json")]) == 0
    assert compare.main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--tol", "0.1"]) == 1
    assert "DIFFER: 1 difference(s)" in capsys.readouterr().out
    assert compare.main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--tol", "3"]) == 0
