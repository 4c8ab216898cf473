"""Bootstrap intervals of dataset scores: observed values, pairing, coverage, determinism, the CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from defocus.bootstrap import bootstrap_difference, bootstrap_markdown, bootstrap_report, bootstrap_table
from defocus.evaluation import Report, evaluate, evaluate_maps
from defocus.metrics import ImageScore, Protocol, Scorer

DUT = ("DUT", "DUT/test_samples")


def published(shared_dir, method):
    data = shared_dir / "data"
    return data / "results" / method / DUT[0], data / DUT[1] / "masks"


def scored(maps: dict, masks: dict, method: str) -> Report:
    """A report of in-focus maps against masks (both ``stem -> array``) under the standard protocol."""
    scorer = Scorer(Protocol(name="t", resize="bilinear", fbeta_floor=False), dataset="toy")
    for stem, gt in masks.items():
        scorer.add(stem, maps[stem], gt)
    return Report(protocol=scorer.protocol, metrics=scorer.summary(), images=list(scorer.images), dataset="toy",
                  method=method)


def toy_set(n: int = 12, seed: int = 0):
    """Masks with a sharp disc, a near-perfect method and a method that blurs its maps' edges and adds noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    masks, good, poor = {}, {}, {}
    for i in range(n):
        cy, cx, r = rng.integers(10, 22), rng.integers(10, 22), rng.integers(5, 10)
        gt = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        masks[f"im{i}"] = gt
        good[f"im{i}"] = np.clip(gt + rng.normal(0, 0.05, gt.shape), 0, 1)
        poor[f"im{i}"] = np.clip(gt * 0.6 + 0.2 + rng.normal(0, 0.3, gt.shape), 0, 1)
    return masks, good, poor


def test_observed_values_are_the_reports_numbers_on_real_maps(shared_dir):
    pred, gt = published(shared_dir, "AENet")
    report = evaluate_maps(pred, gt, protocol="paper", method="AENet")
    res = bootstrap_report(report, n_resamples=500)
    assert res.n == 5 and not res.is_difference
    for m in ("mae", "fbeta", "iou"):
        iv = res.intervals[m]
        assert iv.value == pytest.approx(report.metrics[m], abs=1e-12)
        assert iv.low <= iv.value <= iv.high
        assert iv.high - iv.low > 0


def test_pooled_iou_of_the_images_is_the_scorers(shared_dir):
    pred, gt = published(shared_dir, "EFENet")
    report = evaluate_maps(pred, gt, protocol="standard")
    inter = sum(s.inter for s in report.images)
    union = sum(s.union for s in report.images)
    assert 0 < inter < union
    assert report.iou == pytest.approx(inter / union)
    assert [s.iou for s in report.images] == pytest.approx([s.inter / s.union for s in report.images])


def test_a_method_against_itself_differs_by_exactly_zero(shared_dir):
    pred, gt = published(shared_dir, "AENet")
    report = evaluate_maps(pred, gt, protocol="paper", method="AENet")
    res = bootstrap_difference(report, report, n_resamples=300)
    for iv in res.intervals.values():
        assert (iv.value, iv.low, iv.high) == (0.0, 0.0, 0.0)
        assert not iv.excludes_zero


def test_a_clearly_better_method_is_resolved_and_marked():
    masks, good, poor = toy_set()
    table = [scored(poor, masks, "poor"), scored(good, masks, "good")]
    results = bootstrap_table(table, n_resamples=1000)
    assert [(r.method, r.reference) for r in results] == [("poor", None), ("good", None), ("good", "poor")]
    diff = results[-1].intervals
    assert diff["mae"].high < 0 and diff["iou"].low > 0 and diff["fbeta"].low > 0
    text = bootstrap_markdown(results)
    row = next(line for line in text.splitlines() if line.startswith("| good - poor"))
    assert row.count(" better") == 3 and "worse" not in row
    assert "Fewer than" not in text
    reverse = bootstrap_table(table, reference="good", n_resamples=1000)[-1]
    assert reverse.method == "poor" and reverse.intervals["mae"].low > 0
    assert bootstrap_markdown([reverse]).count(" worse") == 3


def test_pairing_uses_the_shared_images_only():
    masks, good, poor = toy_set(n=6)
    a = scored(good, masks, "a")
    b = scored(poor, {k: v for k, v in masks.items() if k != "im0"}, "b")
    res = bootstrap_difference(a, b, n_resamples=200)
    assert res.n == 5 and res.missing == ["im0"]
    shared = scored(good, {k: v for k, v in masks.items() if k != "im0"}, "a")
    assert res.intervals["mae"].value == pytest.approx(shared.mae - b.mae)
    c = scored({"other": good["im0"]}, {"other": masks["im0"]}, "c")
    with pytest.raises(ValueError, match="share no scored image"):
        bootstrap_difference(c, b)
    with pytest.raises(ValueError, match="no method 'zzz'"):
        bootstrap_table([a, b], reference="zzz")


def test_same_seed_same_interval_other_seed_other_interval():
    masks, good, _ = toy_set()
    report = scored(good, masks, "good")
    one, two = bootstrap_report(report, 400, seed=1), bootstrap_report(report, 400, seed=1)
    other = bootstrap_report(report, 400, seed=2)
    assert one.intervals == two.intervals
    assert one.intervals["mae"] != other.intervals["mae"]
    narrow = bootstrap_report(report, 400, level=0.5, seed=1).intervals["mae"]
    assert one.intervals["mae"].low < narrow.low < narrow.high < one.intervals["mae"].high
    with pytest.raises(ValueError):
        bootstrap_report(report, 400, level=1.5)
    with pytest.raises(ValueError):
        bootstrap_report(report, 0)


def _fake_images(maes: np.ndarray) -> list[ImageScore]:
    return [ImageScore(stem=str(i), mae=float(v), fbeta=math.nan, precision=0, recall=0, iou=math.nan, height=1,
                       width=1, positive_fraction=0, inter=1, union=2) for i, v in enumerate(maes)]


def test_intervals_cover_the_population_mean_at_about_their_level():
    rng = np.random.default_rng(7)
    trials, hits = 300, 0
    for t in range(trials):
        maes = rng.beta(2, 8, size=40)  # population mean 0.2
        report = Report(protocol=Protocol(), metrics={}, images=_fake_images(maes))
        iv = bootstrap_report(report, n_resamples=400, seed=t).intervals["mae"]
        hits += iv.low <= 0.2 <= iv.high
    assert 0.88 <= hits / trials <= 0.99


def test_images_without_f_are_left_out_of_the_f_interval():
    images = _fake_images(np.linspace(0.1, 0.3, 10))
    for s, f in zip(images[:4], (0.5, 0.6, 0.7, 0.8)):
        s.fbeta = f
    res = bootstrap_report(Report(protocol=Protocol(), metrics={}, images=images), n_resamples=500)
    f = res.intervals["fbeta"]
    assert f.value == pytest.approx(0.65)
    assert 0.5 <= f.low < f.high <= 0.8
    assert res.intervals["iou"].value == pytest.approx(0.5) == res.intervals["iou"].low


def run_cli(*args):
    from defocus.cli import app

    return CliRunner().invoke(app, ["evaluate", *map(str, args)])


def test_cli_prints_and_writes_the_intervals(shared_dir, tmp_path):
    a, gt = published(shared_dir, "AENet")
    e, _ = published(shared_dir, "EFENet")
    res = run_cli("--pred", a, "--pred", e, "--label", "AENet", "--label", "EFENet", "--gt", gt, "--bootstrap", 300,
                  "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert [(b["method"], b["reference"]) for b in out["bootstrap"]] == [("AENet", None), ("EFENet", None),
                                                                         ("EFENet", "AENet")]
    table = evaluate(pred=[a, e], gt=gt, method=["AENet", "EFENet"])
    assert out["bootstrap"][2]["intervals"]["mae"]["value"] == pytest.approx(table[1].mae - table[0].mae)
    assert out["bootstrap"][0]["n_resamples"] == 300
    res = run_cli("--pred", a, "--pred", e, "--label", "AENet", "--label", "EFENet", "--gt", gt, "--bootstrap", 300,
                  "--reference", "EFENet", "--confidence", 0.9, "--markdown", tmp_path / "t.md")
    assert res.exit_code == 0, res.output
    assert "90% percentile bootstrap" in res.stdout and "| AENet - EFENet | 5 |" in res.stdout
    assert "Fewer than 10 images" in res.stdout
    assert (tmp_path / "t.md").read_text() == res.stdout.strip() + "\n"
    res = run_cli("--pred", a, "--gt", gt, "--bootstrap", 100, "--confidence", 0.975)
    assert "97.5% percentile bootstrap" in res.stdout
    res = run_cli("--pred", a, "--gt", gt, "--bootstrap", 100, "--reference", "nobody")
    assert res.exit_code == 1 and "no method 'nobody'" in res.output
    res = run_cli("--pred", a, "--gt", gt)
    assert res.exit_code == 0 and "bootstrap" not in res.stdout
