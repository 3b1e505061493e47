"""scripts/check7_map.py: every build's check-7 changes and readiness in one table, JSON and plot."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"


def test_map_of_committed_builds(tmp_path, load_script):
    r4 = RESULTS / "2026-12-05-tiny-base-recipe-levers" / "pretrain_r4_uninformative0.4.json"
    control = RESULTS / "2026-12-05-tiny-base-uninformative-lever-continuation" / "pretrain_control.json"
    assert load_script("check7_map").main([f"r4={r4}", f"control={control}", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "check7_map.json").read_text())
    for row, path in zip(rows, (r4, control)):
        readiness = json.loads(path.read_text())["readiness"]
        assert row["partner_change"] == readiness["prior_under_noise"]["partner_change"]
        assert row["checks_passed"] == sum(c["passed"] for c in readiness["checks"].values())
    table = (tmp_path / "check7_map.md").read_text()
    assert f"| r4 | {rows[0]['partner_change']:+.3f} |" in table and "of 7 |" in table
    assert (tmp_path / "check7_map.png").read_bytes()[:4] == b"\x89PNG"


def test_a_file_without_check_7_is_one_line(tmp_path, capsys, load_script):
    bad = tmp_path / "old.json"
    bad.write_text(json.dumps({"readiness": {"present_named": 0.7}}))
    assert load_script("check7_map").main([f"old={bad}", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(bad) in err and "check 7" in err
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"readiness": {"prior_under_noise": {}, "checks": {}}}))
    assert load_script("check7_map").main([f"partial={partial}", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(partial) in err and "partner_change" in err
    assert load_script("check7_map").main(["no-equals-sign", "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()
