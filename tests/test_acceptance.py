"""Acceptance checks (`--require`): parsing, verdicts on real evaluation reports, the CLI's exit status."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import defocus
from defocus.acceptance import Requirement, check_requirements, needs_curves, parse_requirement


def run_cli(*args):
    from defocus.cli import app

    return CliRunner().invoke(app, ["evaluate", *map(str, args)])


@pytest.fixture
def maps_and_masks(tmp_path):
    """Two 8x8 images: one map exactly right, one wrong on a quarter of its pixels (MAE 0 and 0.25)."""
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir(), gt.mkdir()
    mask = np.zeros((8, 8), np.uint8)
    mask[:, :4] = 255
    Image.fromarray(mask).save(gt / "a.png")
    Image.fromarray(mask).save(gt / "b.png")
    Image.fromarray(mask).save(pred / "a.png")
    wrong = mask.copy()
    wrong[:4, 4:] = 255  # 16 of 64 blurred pixels called in focus
    Image.fromarray(wrong).save(pred / "b.png")
    return pred, gt


@pytest.mark.parametrize("text,expected", [
    ("mae<=0.08", Requirement("mae", "<=", 0.08)),
    (" IoU >= .92 ", Requirement("iou", ">=", 0.92)),
    ("DUT-TE:fbeta>0.9", Requirement("fbeta", ">", 0.9, "DUT-TE")),
    ("mfifb-test:mae<2e-1", Requirement("mae", "<", 0.2, "mfifb-test")),
])
def test_parse_requirement(text, expected):
    assert parse_requirement(text) == expected


@pytest.mark.parametrize("text", ["mae=0.1", "mae<=", "<=0.1", "mse<=0.1", "mae<=abc", "mae =< 0.1"])
def test_parse_requirement_rejects_what_it_cannot_read(text):
    with pytest.raises(ValueError, match="requirement"):
        parse_requirement(text)


def test_bounds_and_undefined_numbers():
    r = parse_requirement("iou>=0.9")
    assert r.holds(0.9) and r.holds(0.95) and not r.holds(0.8999)
    assert not parse_requirement("iou>0.9").holds(0.9)
    assert not r.holds(float("nan")) and not r.holds(None)
    assert needs_curves([parse_requirement("max_f>=0.9")]) and not needs_curves([r])


def test_verdicts_follow_the_reports_numbers(maps_and_masks):
    pred, gt = maps_and_masks
    report = defocus.evaluate(pred=pred, gt=gt, protocol="standard", dataset="toy")
    assert report.mae == pytest.approx(0.125)  # (0 + 0.25) / 2
    met, missed = check_requirements(report, ["mae<=0.125", "toy:mae<0.125"])
    assert met.met and met.actual == pytest.approx(0.125) and met.dataset == "toy"
    assert not missed.met
    assert "NOT met" in missed.to_line() and "0.1250" in missed.to_line()
    assert missed.to_dict()["met"] is False and missed.to_dict()["requirement"] == "toy:mae<0.125"
    with pytest.raises(ValueError, match="no result on dataset 'other'"):
        check_requirements(report, ["other:mae<=1"])
    with pytest.raises(ValueError, match="needs curves"):
        check_requirements(report, ["max_f>=0.5"])


def test_each_method_and_dataset_is_checked(shared_dir):
    data = shared_dir / "data"
    table = defocus.evaluate(pred=[data / "results" / m / "DUT" for m in ("AENet", "EFENet")],
                             gt=data / "DUT" / "test_samples" / "masks", method=["AENet", "EFENet"], dataset="DUT")
    verdicts = check_requirements(table, ["DUT:mae<=0.06"])
    assert [(v.method, v.met) for v in verdicts] == [("AENet", False), ("EFENet", True)]  # 0.0719, 0.0486
    assert [v.actual for v in verdicts] == [table["AENet", "DUT"].mae, table["EFENet", "DUT"].mae]


def test_cli_exit_status_and_json(maps_and_masks):
    pred, gt = maps_and_masks
    res = run_cli("--pred", pred, "--gt", gt, "--protocol", "standard", "--require", "mae<=0.2",
                  "--require", "iou>=0.5")
    assert res.exit_code == 0, res.output
    assert "requirements: 2 of 2 met" in res.output
    res = run_cli("--pred", pred, "--gt", gt, "--protocol", "standard", "--require", "mae<=0.1", "--json")
    assert res.exit_code == 3, res.output
    d = json.loads(res.stdout)
    assert d["requirements"][0]["met"] is False and d["requirements"][0]["actual"] == pytest.approx(0.125)
    res = run_cli("--pred", pred, "--gt", gt, "--require", "max_f>=0.5")  # curves computed when needed
    assert res.exit_code == 0, res.output
    res = run_cli("--pred", pred, "--gt", gt, "--require", "mse<=0.1")
    assert res.exit_code == 2 and "unknown metric" in res.output


def test_release_check_script_on_the_cuhk_samples(shared_dir, tmp_path):
    data = shared_dir / "data" / "CUHK" / "TE-1_btbnet320_samples"
    blurred = tmp_path / "blurred"
    blurred.mkdir()
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(blurred / "flat.png")  # nothing sharp in it
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "release_check.py"
    run = subprocess.run([sys.executable, str(script), "--images", str(data / "images"), "--gt", str(data / "masks"),
                          "--out", str(tmp_path / "out"), "--baselines", "--bootstrap", "0", "--blurred",
                          str(blurred), "--require", "mae<=0.5", "fbeta>=0.999"], capture_output=True, text=True)
    assert run.returncode == 3, run.stderr                # Fβ 0.93 misses the second bound
    report = (tmp_path / "out" / "report.md").read_text()
    assert "mae <= 0.5 on model / kept-aside" in report and "(met)" in report and "(NOT met)" in report
    assert "1 photos blurred everywhere" in report
    assert len((tmp_path / "out" / "per_image.csv").read_text().strip().splitlines()) == 6
    assert Image.open(tmp_path / "out" / "worst.png").height == 5 * 160 + 4 * 4   # five rows, four gaps


def test_release_check_script_checks_the_refined_maps_with_refine(shared_dir, tmp_path):
    data = shared_dir / "data" / "CUHK" / "TE-1_btbnet320_samples"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "release_check.py"
    mae = {}
    for name, extra in (("plain", []), ("refined", ["--refine"])):
        run = subprocess.run([sys.executable, str(script), "--images", str(data / "images"), "--gt",
                              str(data / "masks"), "--out", str(tmp_path / name), "--baselines", "--bootstrap", "0",
                              "--require", "mae<=0.5", *extra], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        report = (tmp_path / name / "report.md").read_text()
        assert ("maps refined" in report) is bool(extra)
        rows = list(csv.DictReader((tmp_path / name / "per_image.csv").open()))
        assert len(rows) == 5
        mae[name] = np.mean([float(r["mae"]) for r in rows])
    assert mae["refined"] != mae["plain"]
    for plain in sorted((tmp_path / "plain" / "maps" / "model").glob("*_prob.png")):  # the maps scored are refined
        refined = tmp_path / "refined" / "maps" / "model" / plain.name
        diff = np.abs(np.asarray(Image.open(plain), float) - np.asarray(Image.open(refined), float)) / 255
        assert diff.mean() > 0.005  # measured 0.013-0.025 a photo with the seventh bundled model
