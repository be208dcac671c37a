"""The command line: demo report, zoo listing/info (batch explain: test_batch.py)."""

from __future__ import annotations

import json

from cfwidgets.cli import main


def test_demo_writes_a_self_contained_report(tmp_path, capsys):
    out = tmp_path / "report"
    rc = main(["demo", "--out", str(out), "--n", "3", "--methods", "wachter", "--device", "cpu"])
    assert rc == 0
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 9  # before / after / difference x 3
    # the report's table is for people: worded headings, shares as % (issue 12)
    assert "Wachter" in page and "<th>valid</th>" in page and "<th>IM1</th>" in page
    assert "<th>oracle agrees</th>" in page and " %</td>" in page
    rows = json.loads((out / "metrics.json").read_text())
    assert rows[0]["n"] == 3 and rows[0]["validity"] >= 2 / 3
    assert (out / "wachter.png").stat().st_size > 500
    per_row = json.loads((out / "wachter.json").read_text())
    assert len(per_row["success"]) == 3
    printed = capsys.readouterr().out
    assert "report:" in printed and "validity" in printed
    assert "at a time" not in printed and "at a time" not in page  # one method: nothing beside it


def test_demo_explains_review_sentences(tmp_path, capsys):
    """The text section: each sentence asked for its other label, explained, scored."""
    import pytest

    pytest.importorskip("transformers")
    out = tmp_path / "report"
    rc = main(["demo", "--out", str(out), "--n", "3", "--methods", "hotflip", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "not run" not in err
    per_row = json.loads((out / "hotflip.json").read_text())
    assert len(per_row["x_cf"]) == 3 and sum(per_row["success"]) >= 2
    assert all(t != p for t, p in zip(per_row["target"], per_row["pred"], strict=True))
    assert per_row["x_cf"] != per_row["x"]
    page = (out / "report.html").read_text()
    assert "HotFlip" in page and "<th>flipped</th>" in page and "not run" not in page
    assert "<th>flip_rate</th>" not in page


def test_demo_rejects_unknown_method(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--methods", "nope"]) == 2
    assert "unknown method" in capsys.readouterr().err


def test_zoo_list_and_info(capsys):
    assert main(["zoo", "list"]) == 0
    listing = capsys.readouterr().out
    assert "mnist/cnn" in listing and "shapes/cnn" in listing
    assert main(["zoo", "info", "mnist/cnn"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["name"] == "mnist/cnn" and info["status"] in ("cached", "shipped")
    assert info["metrics"]["test_accuracy"] >= 0.95


# `cfwidgets explain` (chunks, resume, refusals): tests/test_batch.py


def test_demo_runs_image_and_text_methods_side_by_side(tmp_path, capsys):
    """--workers 2: the text methods on a thread beside the image ones; both sections in
    the report, and torch's thread count is given back afterwards."""
    import pytest
    import torch

    pytest.importorskip("transformers")
    threads = torch.get_num_threads()
    out = tmp_path / "report"
    rc = main(["demo", "--out", str(out), "--n", "2", "--methods", "wachter,hotflip", "--device", "cpu",
               "--workers", "2"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "2 at a time" in captured.out and "not run" not in captured.err
    page = (out / "report.html").read_text()
    assert "Wachter" in page and "HotFlip" in page and "2 at a time" in page
    assert sum(json.loads((out / "wachter.json").read_text())["success"]) >= 1
    assert sum(json.loads((out / "hotflip.json").read_text())["success"]) >= 1
    assert torch.get_num_threads() == threads
    assert main(["demo", "--out", str(out), "--workers", "-1"]) == 2
