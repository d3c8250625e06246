"""The reproducibility check: two metrics.json trees agree within a tolerance, or every difference is named."""

import copy
import json

from pds import contrastive
from studies import compare


def _metrics():
    entry = {**dict.fromkeys(contrastive.METRICS, 30.0), "sd": 1.0, "n": 3, "epochs": 100,
             "test_selected": {**dict.fromkeys(contrastive.METRICS, 31.0), "sd": 1.0, "n": 3}}
    tree = {"dataset": "toyworld", "n_pairs": 100, "seeds": 3}
    for p in ("field", "paper"):
        tree[p] = {m: {"convnet": copy.deepcopy(entry)} for m in ("pds", "random")}
    return tree


def test_equal_and_within_tolerance_agree():
    a = _metrics()
    b = copy.deepcopy(a)
    b["field"]["pds"]["convnet"]["r_mean"] += 0.1  # rounding of a last bit on another CPU
    b["paper"]["random"]["convnet"]["test_selected"]["IR@1"] -= 0.05
    assert compare.compare_metrics(a, a) == []
    assert compare.compare_metrics(a, b, tol=0.1) == []


def test_every_difference_is_named():
    a = _metrics()
    b = copy.deepcopy(a)
    b["field"]["pds"]["convnet"]["r_mean"] += 0.5
    del b["paper"]["random"]["convnet"]["test_selected"]
    b["n_pairs"] = 200
    diffs = compare.compare_metrics(a, b, tol=0.1)
    assert any(d.startswith("n_pairs") for d in diffs)
    assert "paper.random.convnet.test_selected.r_mean: only in a" in diffs
    assert any(d.startswith("field.pds.convnet.r_mean: 30.0 vs 30.5") for d in diffs)
    assert len(diffs) == 1 + 9 + 1  # n_pairs, the 9 leaves of test_selected, one r_mean


def test_command_line_exit_code(tmp_path, capsys):
    a, b = _metrics(), _metrics()
    b["field"]["random"]["convnet"]["TR@5"] += 2
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert compare.main([str(tmp_path / "a.json"), str(tmp_path / "a.json")]) == 0
    assert compare.main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--tol", "0.1"]) == 1
    assert "DIFFER: 1 difference(s)" in capsys.readouterr().out
    assert compare.main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--tol", "3"]) == 0
