"""Evaluation of saved maps and of models: file handling, the published maps, reports, the CLI, plots."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from typer.testing import CliRunner

import defocus
from defocus.evaluation import (
    EvaluationInputError,
    FolderDataset,
    Report,
    ReportTable,
    evaluate,
    evaluate_maps,
    evaluate_model,
    load_curves,
    read_map,
    read_mask,
    read_stem_list,
    write_curves,
)
from defocus.metrics import Scorer, get_protocol

# Independently computed numbers (MAE / F / IoU, 5 images each) for the published maps under the paper protocol.
PUBLISHED = {
    ("AENet", "CUHK"): (0.0900, 0.8918, 0.8722),
    ("AENet", "DUT"): (0.0719, 0.9272, 0.9033),
    ("EFENet", "CUHK"): (0.0478, 0.9535, 0.9400),
    ("EFENet", "DUT"): (0.0486, 0.9598, 0.9419),
}
FOLDERS = {"CUHK": ("CUHK-TE-1_btbnet320", "CUHK/TE-1_btbnet320_samples"), "DUT": ("DUT", "DUT/test_samples")}


def published(shared_dir, method, dataset):
    maps, samples = FOLDERS[dataset]
    data = shared_dir / "data"
    return data / "results" / method / maps, data / samples / "masks"


def save(path, arr):
    Image.fromarray(arr).save(path)
    return path


# ---------------------------------------------------------------- the published maps

@pytest.mark.parametrize("method,dataset", sorted(PUBLISHED))
@pytest.mark.parametrize("protocol", ["paper", "paper-external"])
def test_published_maps_reproduce_the_independent_numbers(shared_dir, method, dataset, protocol):
    pred_dir, gt_dir = published(shared_dir, method, dataset)
    report = evaluate_maps(pred_dir, gt_dir, protocol=protocol)
    assert report.n == 5 and not report.resized and not report.skipped
    got = tuple(round(v, 4) for v in (report.mae, report.fbeta, report.iou))
    assert got == PUBLISHED[method, dataset]


def test_published_maps_match_a_direct_reimplementation_of_the_reference_steps(shared_dir):
    """test.py / test_iou.py steps written out with torch (float32, as the reference runs them)."""
    pred_dir, gt_dir = published(shared_dir, "AENet", "CUHK")
    maes, fs, inter, union = [], [], 0, 0
    for gt_path in sorted(gt_dir.iterdir()):
        gt = torch.round(torch.from_numpy(np.asarray(Image.open(gt_path).convert("L"), np.float32) / 255))
        pred = torch.from_numpy(np.asarray(Image.open(pred_dir / gt_path.name).convert("L"), np.float32) / 255)
        pred = F.interpolate(pred[None, None], size=gt.shape, mode="nearest")[0, 0]
        maes.append(float(torch.abs(pred - gt).mean()))
        blur_pred, blur_gt = 1 - (pred >= 0.5).float(), 1 - gt
        f_best = 0.0
        for t in torch.linspace(0, 1, 255):
            y = (blur_pred >= t).float()
            tp = (y * blur_gt).sum()
            p, r = tp / (y.sum() + 1e-20), tp / (blur_gt.sum() + 1e-20)
            f_best = max(f_best, float(torch.nan_to_num(1.3 * p * r / (0.3 * p + r + 1e-10))))
        fs.append(f_best)
        bp, bg = pred <= 0.5, gt <= 0.5
        inter += int((bp & bg).sum())
        union += int((bp | bg).sum())
    report = evaluate_maps(pred_dir, gt_dir)
    assert report.mae == pytest.approx(np.mean(maes), abs=1e-6)
    assert report.fbeta == pytest.approx(np.mean(fs), abs=1e-6)   # the reference runs in float32
    assert report.iou == pytest.approx(inter / union, abs=1e-12)


def test_published_maps_under_the_standard_protocol_with_curves(shared_dir):
    pred_dir, gt_dir = published(shared_dir, "EFENet", "DUT")
    report = evaluate_maps(pred_dir, gt_dir, protocol="standard", curves=True)
    assert report.protocol.name == "standard" and report.n == 5
    # same size maps, no floor effect, 8-bit values: the clean protocol agrees here
    assert round(report.fbeta, 4) == 0.9598 and round(report.iou, 4) == 0.9419
    assert report.curves is not None and report.metrics["max_f"] >= report.metrics["mean_f"]
    assert 0.0 < report.metrics["iou_mean"] <= 1.0


def test_pysodmetrics_cross_check(shared_dir):
    sod = pytest.importorskip("py_sod_metrics")
    pred_dir, gt_dir = published(shared_dir, "AENet", "DUT")
    report = evaluate_maps(pred_dir, gt_dir, protocol=get_protocol("standard", n_thresholds=256), curves=True)
    fm, m = sod.Fmeasure(), sod.MAE()
    for gt_path in sorted(gt_dir.iterdir()):
        gt = np.asarray(Image.open(gt_path).convert("L"))
        pred = np.asarray(Image.open(pred_dir / gt_path.name).convert("L"))
        fm.step(pred=255 - pred, gt=255 - gt)   # blur positive
        m.step(pred=pred, gt=gt)
    assert report.mae == pytest.approx(m.get_results()["mae"], abs=1e-4)
    assert report.metrics["max_f"] == pytest.approx(fm.get_results()["fm"]["curve"].max(), abs=1e-3)


# ---------------------------------------------------------------- files: formats, pairing, errors

def test_maps_of_the_wrong_bit_depth_are_read_as_stored_with_a_warning(tmp_path, caplog):
    low16 = np.array([[0, 64, 128, 255]], np.uint16)      # 8-bit values in a 16-bit file
    with caplog.at_level("WARNING", logger="defocus.maps"):
        np.testing.assert_allclose(read_map(save(tmp_path / "low16.png", low16)), low16 / 65535.0)
    assert "low16.png: a 16-bit map whose values are all at most 255" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="defocus.maps"):
        read_map(save(tmp_path / "full16.png", low16 * 257))
        read_map(save(tmp_path / "zero16.png", low16 * 0))  # an all-black map is a map
    assert caplog.text == ""


def test_read_map_formats_and_polarity(tmp_path):
    levels = np.array([[0, 64, 128, 255]], np.uint8)
    p8 = read_map(save(tmp_path / "a.png", levels))
    np.testing.assert_allclose(p8, levels / 255.0)
    rgb = np.repeat(levels[..., None], 3, axis=2)
    np.testing.assert_allclose(read_map(save(tmp_path / "b.png", rgb)), levels / 255.0)
    np.testing.assert_allclose(read_map(save(tmp_path / "c.jpg", rgb), "in-focus").shape, (1, 4))
    l16 = np.array([[0, 1000, 40000, 65535]], np.uint16)
    np.testing.assert_allclose(read_map(save(tmp_path / "d.png", l16)), l16 / 65535.0)
    np.testing.assert_allclose(read_map(tmp_path / "d.png", "blur"), (65535 - l16.astype(int)) / 65535.0)
    f32 = np.array([[0.0, 0.25, 0.75, 1.0]], np.float32)
    np.testing.assert_allclose(read_map(save(tmp_path / "e.tif", f32)), f32)
    np.save(tmp_path / "f.npy", f32.astype(np.float64))
    np.testing.assert_allclose(read_map(tmp_path / "f.npy", "blur"), 1 - f32)
    with pytest.raises(EvaluationInputError, match="outside"):
        read_map(save(tmp_path / "g.tif", f32 * 3))


def test_decode_mask_binarises_at_half_scale_for_integer_and_float_values():
    from defocus.maps import decode_mask

    assert decode_mask(np.array([127, 128], np.uint8), 255).tolist() == [False, True]
    assert decode_mask(np.array([127.4, 127.6]), 255).tolist() == [False, True]
    assert decode_mask(np.array([32767, 32768], np.uint16), 65535).tolist() == [False, True]


def test_read_mask_binarises_at_half_and_reads_01_masks(tmp_path):
    raw = np.array([[0, 127, 128, 255]], np.uint8)
    assert read_mask(save(tmp_path / "m.png", raw)).tolist() == [[False, False, True, True]]
    assert read_mask(tmp_path / "m.png", "blur").tolist() == [[True, True, False, False]]
    assert read_mask(save(tmp_path / "z.png", np.array([[0, 1]], np.uint8))).tolist() == [[False, True]]
    l16 = np.array([[32767, 32768]], np.uint16)
    assert read_mask(save(tmp_path / "m16.png", l16)).tolist() == [[False, True]]
    eight_in_16 = np.array([[0, 255]], np.uint16)  # 0 / 255 saved in a 16-bit file
    assert read_mask(save(tmp_path / "m16b.png", eight_in_16)).tolist() == [[False, True]]


def test_integer_numpy_maps_of_any_width(tmp_path):
    levels = np.array([[0, 51, 255]])
    np.save(tmp_path / "i64.npy", levels.astype(np.int64))  # 8-bit values in a wide integer type
    np.testing.assert_allclose(read_map(tmp_path / "i64.npy"), [[0, 0.2, 1]])
    np.save(tmp_path / "u16.npy", np.array([[0, 255, 65535]], np.uint16))  # uint16: always 16-bit
    np.testing.assert_allclose(read_map(tmp_path / "u16.npy"), [[0, 255 / 65535, 1]])
    np.save(tmp_path / "i32.npy", np.array([[0, 1000, 65535]], np.int32))
    np.testing.assert_allclose(read_map(tmp_path / "i32.npy"), [[0, 1000 / 65535, 1]])
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 50, 10                   # luma 90, as Pillow reads the PNG
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.save(tmp_path / "rgb.npy", rgb)
    np.save(tmp_path / "chw.npy", np.moveaxis(rgb, -1, 0))
    for name in ("rgb.npy", "chw.npy"):
        np.testing.assert_array_equal(read_map(tmp_path / name), read_map(tmp_path / "rgb.png"))
    assert read_map(tmp_path / "rgb.png")[0, 0] == 90 / 255


def test_missing_and_unreadable_files_name_the_file(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    mask = np.zeros((4, 4), np.uint8)
    mask[:2] = 255
    for stem in ("a", "b", "c"):
        save(gt_dir / f"{stem}.png", mask)
    save(pred_dir / "a.png", mask)
    (pred_dir / "b.png").write_bytes(b"not an image")
    with pytest.raises(EvaluationInputError, match=r"b\.png: cannot read image"):
        evaluate_maps(pred_dir, gt_dir)
    (pred_dir / "b.png").unlink()
    with pytest.raises(EvaluationInputError, match=r"pred/b\.\*: prediction not found"):
        evaluate_maps(pred_dir, gt_dir)
    report = evaluate_maps(pred_dir, gt_dir, skip_missing=True)
    assert report.n == 1 and [s["stem"] for s in report.skipped] == ["b", "c"]
    assert report.skipped[0]["reason"] == "prediction not found"
    assert "Skipped: 2" in report.to_markdown()
    listed = tmp_path / "list.txt"
    listed.write_text("a.jpg\n# a comment\n\nzzz\n")
    assert read_stem_list(listed) == ["a", "zzz"]
    with pytest.raises(EvaluationInputError, match="mask not found"):
        evaluate_maps(pred_dir, gt_dir, list_file=listed)
    assert evaluate_maps(pred_dir, gt_dir, list_file=listed, skip_missing=True).n == 1


def test_pairing_by_stem_across_extensions_and_duplicate_stems(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    mask = np.zeros((6, 6), np.uint8)
    mask[:, :3] = 255
    save(gt_dir / "x.bmp", mask)
    save(pred_dir / "x.jpg", np.repeat(mask[..., None], 3, 2))
    (pred_dir / "notes.txt").write_text("ignored")
    report = evaluate_maps(pred_dir, gt_dir)
    assert report.n == 1 and report.fbeta == pytest.approx(1.0, abs=0.02)
    save(pred_dir / "x.png", mask)
    with pytest.raises(EvaluationInputError, match="two files with the stem 'x'"):
        evaluate_maps(pred_dir, gt_dir)
    inverted = tmp_path / "predict_out"
    inverted.mkdir()
    save(inverted / "x_prob.png", 255 - mask)                    # e.g. `defocus predict` output names
    save(inverted / "x_mask.png", mask)
    r = evaluate_maps(inverted, gt_dir, pred_suffix="_prob")
    assert r.n == 1 and r.mae == 1.0


def test_size_mismatch_is_resized_and_reported(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    mask = np.zeros((8, 12), np.uint8)
    mask[:4, :6] = 255
    save(gt_dir / "s.png", mask)
    small = np.zeros((4, 6), np.uint8)
    small[:2, :3] = 255
    save(pred_dir / "s.png", small)
    paper = evaluate_maps(pred_dir, gt_dir)
    assert paper.resized == ["s"] and paper.metrics["n_resized"] == 1
    assert paper.images[0].resized_from == (4, 6)
    assert (paper.mae, paper.fbeta, paper.iou) == (0.0, pytest.approx(1.0), 1.0)
    std = evaluate_maps(pred_dir, gt_dir, protocol="standard")
    assert std.resized == ["s"] and std.mae > 0.0
    assert "Resized to the mask size (nearest): 1 (s)" in paper.to_markdown()


def test_empty_blur_masks_are_reported(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    full = np.full((4, 4), 255, np.uint8)
    half = full.copy()
    half[:2] = 0
    save(gt_dir / "wide.png", full)
    save(pred_dir / "wide.png", full)
    save(gt_dir / "half.png", half)
    save(pred_dir / "half.png", half)
    paper = evaluate_maps(pred_dir, gt_dir)
    assert paper.no_positive == ["wide"] and paper.fbeta == pytest.approx(0.5)     # the wide-DOF image scores 0
    std = evaluate_maps(pred_dir, gt_dir, protocol="standard")
    assert std.no_positive == ["wide"] and std.fbeta == pytest.approx(1.0)       # excluded from the F mean
    d = json.loads(std.to_json())
    assert d["n_no_positive"] == 1 and d["images"][1]["fbeta"] is None


uint8_maps = st.integers(1, 6).flatmap(lambda h: st.integers(1, 6).flatmap(lambda w: st.tuples(
    arrays(np.uint8, (h, w)), arrays(np.uint8, (h, w)), st.sampled_from([np.uint8, np.uint16]))))


@settings(max_examples=25, deadline=None)
@given(uint8_maps, st.sampled_from(["paper", "standard"]))
def test_property_inverting_files_and_polarity_arguments_gives_the_same_result(tmp_path_factory, data, protocol):
    pred, mask, dtype = data
    scale = 255 if dtype == np.uint8 else 65535
    pred = (pred.astype(np.int64) * scale // 255).astype(dtype)
    mask = np.where(mask > 127, scale, 0).astype(dtype)
    base = tmp_path_factory.mktemp("inv")
    for sub, p, m in (("a", pred, mask), ("b", scale - pred.astype(np.int64), scale - mask.astype(np.int64))):
        (base / sub / "p").mkdir(parents=True)
        (base / sub / "g").mkdir()
        save(base / sub / "p" / "x.png", np.asarray(p, dtype))
        save(base / sub / "g" / "x.png", np.asarray(m, dtype))
    a = evaluate_maps(base / "a" / "p", base / "a" / "g", protocol=protocol)
    b = evaluate_maps(base / "b" / "p", base / "b" / "g", protocol=protocol, pred_polarity="blur", gt_polarity="blur")
    assert json.dumps(a.to_dict(images=True)["images"]) == json.dumps(b.to_dict(images=True)["images"])
    assert a.to_dict(images=False)["iou"] == b.to_dict(images=False)["iou"]


# ---------------------------------------------------------------- reports

def test_report_outputs(shared_dir):
    pred_dir, gt_dir = published(shared_dir, "AENet", "DUT")
    r = evaluate_maps(pred_dir, gt_dir, method="AENet", dataset="DUT-TE", curves=True)
    d = json.loads(r.to_json())
    assert {"n", "mae", "fbeta", "iou", "iou_mean", "max_f", "images", "curves", "protocol"} <= set(d)
    assert d["method"] == "AENet" and d["dataset"] == "DUT-TE" and len(d["images"]) == 5
    rows = r.to_csv().strip().splitlines()
    assert rows[0].startswith("stem,mae,fbeta") and len(rows) == 6
    assert np.mean([float(x.split(",")[1]) for x in rows[1:]]) == pytest.approx(r.mae)
    assert "| 5 | 0.0719 | 0.9272 | 0.9033 |" in r.to_markdown()


def test_table_layout_of_several_methods_and_datasets(shared_dir):
    reports = [evaluate_maps(*published(shared_dir, m, d), method=m, dataset=d)
               for m in ("AENet", "EFENet") for d in ("CUHK", "DUT")]
    table = ReportTable(reports)
    md = table.to_markdown()
    assert "| method | CUHK (n) | DUT (n) |" in md
    assert "| AENet | 0.0900 / 0.8918 / 0.8722 (5) | 0.0719 / 0.9272 / 0.9033 (5) |" in md
    csv_rows = table.to_csv(digits=4).strip().splitlines()
    assert csv_rows[0] == "method,CUHK n,CUHK MAE,CUHK Fbeta,CUHK IoU,DUT n,DUT MAE,DUT Fbeta,DUT IoU"
    assert csv_rows[2] == "EFENet,5,0.0478,0.9535,0.94,5,0.0486,0.9598,0.9419"
    assert table["EFENet", "DUT"].fbeta == pytest.approx(0.9598, abs=5e-5)
    assert len(json.loads(table.to_json())["results"]) == 4


def test_curves_files_and_plots(shared_dir, tmp_path):
    reports = [evaluate_maps(published(shared_dir, m, "DUT")[0], published(shared_dir, m, "DUT")[1], method=m,
                             curves=True) for m in ("AENet", "EFENet")]
    path = write_curves(reports, tmp_path / "c.json")
    curves = load_curves(path)
    assert list(curves) == ["AENet", "EFENet"]
    np.testing.assert_allclose(curves["AENet"].fbeta, reports[0].curves.fbeta)
    rows = write_curves(reports, tmp_path / "c.csv").read_text().splitlines()
    assert rows[0] == "label,threshold,precision,recall,fbeta" and len(rows) == 1 + 2 * 255
    pytest.importorskip("matplotlib")
    from defocus.plots import plot_curves

    for suffix in ("png", "svg"):
        out = tmp_path / f"pr.{suffix}"
        fig = plot_curves(curves, out, title="DUT samples")
        assert out.stat().st_size > 1000 and len(fig.axes) == 2
    assert Image.open(tmp_path / "pr.png").size[0] > 500
    with pytest.raises(ValueError, match="no curves"):
        plot_curves({}, tmp_path / "x.png")


# ---------------------------------------------------------------- running a model

class Oracle(torch.nn.Module):
    """Returns the input's (normalised) red channel as a logit: white pixels -> in focus."""

    config = {"name": "oracle", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}

    def forward(self, x):
        return (20.0 * x[:, :1], [], [])


def oracle_dataset(tmp_path, sizes=((40, 60), (33, 20))):
    img_dir, mask_dir = tmp_path / "images", tmp_path / "masks"
    img_dir.mkdir()
    mask_dir.mkdir()
    for i, (h, w) in enumerate(sizes):
        m = np.zeros((h, w), np.uint8)
        m[: h // 2, : w // 3] = 255
        save(mask_dir / f"{i}.png", 255 - m)                          # stored as white = blur
        save(img_dir / f"{i}.jpg", np.repeat(m[..., None], 3, 2))
    return FolderDataset("toy", img_dir, mask_dir, "blur")


def reference_inference(model, image_path, mask, size=320):
    """The reference steps written with torch/torchvision-like calls: PIL bilinear 320, normalise, sigmoid,
    nearest upsampling to the mask."""
    im = Image.open(image_path).convert("RGB").resize((size, size), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(im, np.float32) / 255).permute(2, 0, 1)[None]
    x = (x - 0.5) / 0.5
    prob = torch.sigmoid(model(x)[0])
    return F.interpolate(prob, size=mask.shape, mode="nearest")[0, 0].numpy()


def test_evaluate_model_follows_the_paper_inference(tmp_path):
    ds = oracle_dataset(tmp_path)
    table = evaluate_model(Oracle(), [ds], device="cpu")
    report = table["toy"]
    assert report.n == 2 and report.method == "oracle" and report.resized == ["0", "1"]
    scorer = Scorer(get_protocol("paper"))
    for i in range(2):
        gt = read_mask(ds.masks / f"{i}.png", "blur")
        scorer.add(str(i), reference_inference(Oracle(), ds.images / f"{i}.jpg", gt), gt)
    expected = scorer.summary()
    for key in ("mae", "fbeta", "iou"):
        assert report.metrics[key] == pytest.approx(expected[key], abs=1e-6)
    assert report.fbeta > 0.95 and report.iou > 0.9


def test_evaluate_model_size_mismatch_and_missing_images(tmp_path):
    ds = oracle_dataset(tmp_path)
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(ds.images / "0.jpg")   # image no longer matches its mask
    save(ds.masks / "orphan.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(EvaluationInputError, match=r"orphan\.png: no image"):
        evaluate_model(Oracle(), [ds], device="cpu")
    r = evaluate_model(Oracle(), [ds], device="cpu", skip_missing=True)["toy"]
    assert r.n == 2 and [s["stem"] for s in r.skipped] == ["orphan"]
    assert [n["stem"] for n in r.notes] == ["0"] and "differs from mask size" in r.notes[0]["reason"]
    dropped = evaluate_model(Oracle(), [ds], device="cpu", skip_missing=True, drop_mismatched=True)["toy"]
    assert dropped.n == 1 and {s["stem"] for s in dropped.skipped} == {"orphan", "0"}


def test_evaluate_entry_point_dispatch(shared_dir, tmp_path):
    assert defocus.evaluate is evaluate
    pred_dir, gt_dir = published(shared_dir, "EFENet", "CUHK")
    r = defocus.evaluate(pred=pred_dir, gt=gt_dir)
    assert isinstance(r, Report) and round(r.mae, 4) == 0.0478
    t = defocus.evaluate(pred=[pred_dir, published(shared_dir, "AENet", "CUHK")[0]], gt=gt_dir)
    assert isinstance(t, ReportTable) and len(t) == 2
    t = defocus.evaluate(model=Oracle(), datasets=[oracle_dataset(tmp_path)], device="cpu")
    assert isinstance(t, ReportTable) and t[0].n == 2
    with pytest.raises(ValueError, match="exactly one"):
        defocus.evaluate(gt=gt_dir)
    with pytest.raises(ValueError, match="needs gt"):
        defocus.evaluate(pred=pred_dir)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from conftest import TINY_BACKBONE

    model = defocus.create_model("dffnet", backbone=TINY_BACKBONE)
    return defocus.save_model(model, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def test_evaluate_checkpoint_on_real_samples(shared_dir, tiny_checkpoint):
    data = shared_dir / "data" / "DUT" / "test_samples"
    ds = FolderDataset("DUT-samples", data / "images", data / "masks")
    r = evaluate_model(tiny_checkpoint, [ds], device="cpu", size=64, curves=True)["DUT-samples"]
    assert r.method == "tiny" and r.n == 5 and r.resized == [str(i) for i in range(1, 6)]
    assert 0.0 <= r.mae <= 1.0 and 0.0 <= r.fbeta <= 1.0 and r.curves.n == 5


class OwnInputOracle(Oracle):
    """The oracle with an input of its own recorded in its config: 32 px, small sides not enlarged."""

    config = {**Oracle.config, "name": "own", "input_size": 32, "upscale": False}


def test_evaluate_model_with_the_models_own_input_runs_it_as_the_predictor_does(tmp_path, caplog):
    from defocus.inference import Predictor

    ds = oracle_dataset(tmp_path, sizes=((40, 60), (20, 33)))
    report = evaluate_model(OwnInputOracle(), [ds], device="cpu", inference="model", protocol="standard")["toy"]
    predictor = Predictor(OwnInputOracle(), device="cpu")
    assert (predictor.options.size, predictor.options.upscale) == (32, False)
    scorer = Scorer(get_protocol("standard"))
    for i in range(2):
        gt = read_mask(ds.masks / f"{i}.png", "blur")
        prob = predictor.predict(ds.images / f"{i}.jpg").prob
        assert prob.shape == gt.shape
        scorer.add(str(i), prob, gt)
    expected = scorer.summary()
    assert report.method == "own" and report.n == 2 and report.resized == []   # maps come at the image's size
    for key in ("mae", "fbeta", "iou"):
        assert report.metrics[key] == pytest.approx(expected[key], abs=1e-6)
    with caplog.at_level("WARNING", logger="defocus.evaluation"):
        paper = evaluate_model(OwnInputOracle(), [ds], device="cpu", protocol="standard")["toy"]
    assert "records its own input (input_size: 32, upscale: False)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="defocus.evaluation"):    # recorded, but the paper's own input
        evaluate_model(OwnInputOracle(), [ds], device="cpu", size=32, protocol="standard")
        assert "records its own input" in caplog.text                 # ... except that it is not enlarged
        caplog.clear()
        paper_like = OwnInputOracle()
        paper_like.config = {**Oracle.config, "input_size": 320, "upscale": True}
        evaluate_model(paper_like, [ds], device="cpu", protocol="standard")
    assert "records its own input" not in caplog.text
    assert paper.resized == ["0", "1"]                     # 320x320 maps, brought to the masks' sizes
    sized = evaluate_model(OwnInputOracle(), [ds], device="cpu", inference="model", size=16,
                           protocol="standard")["toy"]
    assert sized.mae > 2 * report.mae                         # 16 px softens the edges more than 32 px
    with pytest.raises(ValueError, match="inference must be one of"):
        evaluate_model(OwnInputOracle(), [ds], device="cpu", inference="native")


def test_registry_datasets_go_through_the_data_module(tmp_path):
    data = pytest.importorskip("defocus.data")
    if not hasattr(data, "load_pairs"):
        pytest.skip("defocus.data does not export load_pairs yet")
    ds = oracle_dataset(tmp_path)
    root = tmp_path / "root"
    (root / "masks").mkdir(parents=True)
    (root / "images").symlink_to(ds.images)
    for m in ds.masks.iterdir():                                   # the registry's "folder": white = in focus
        save(root / "masks" / m.name, 255 - np.asarray(Image.open(m)))
    via_registry = evaluate_model(Oracle(), ["folder"], root=root, device="cpu")["folder"]
    via_folders = evaluate_model(Oracle(), [ds], device="cpu")["toy"]
    assert via_registry.n == 2
    assert via_registry.to_dict(images=True)["images"] == via_folders.to_dict(images=True)["images"]
    with pytest.raises(EvaluationInputError, match="dataset 'dut-te'"):
        evaluate_model(Oracle(), ["dut-te"], root=tmp_path / "nowhere", device="cpu")


# ---------------------------------------------------------------- CLI

def run_cli(*args):
    from defocus.cli import app

    return CliRunner().invoke(app, ["evaluate", *map(str, args)])


def test_cli_json_on_the_published_maps(shared_dir):
    for method, dataset in sorted(PUBLISHED):
        pred_dir, gt_dir = published(shared_dir, method, dataset)
        res = run_cli("--pred", pred_dir, "--gt", gt_dir, "--json")
        assert res.exit_code == 0, res.output
        d = json.loads(res.stdout)
        assert d["n"] == 5
        assert (round(d["mae"], 4), round(d["fbeta"], 4), round(d["iou"], 4)) == PUBLISHED[method, dataset]


def test_cli_options_tables_and_errors(shared_dir, tmp_path):
    a, gt = published(shared_dir, "AENet", "DUT")
    e, _ = published(shared_dir, "EFENet", "DUT")
    stems = tmp_path / "stems.txt"
    stems.write_text("1\n2\n")
    res = run_cli("--pred", a, "--gt", gt, "--list", stems, "--protocol", "standard", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["n"] == 2 and json.loads(res.stdout)["protocol"] == "standard"
    res = run_cli("--pred", a, "--pred", e, "--label", "AENet", "--label", "EFENet", "--gt", gt, "--dataset", "DUT",
                  "--markdown", tmp_path / "t.md", "--csv", tmp_path / "t.csv", "--curves", tmp_path / "c.json",
                  "--plot", tmp_path / "pr.svg", "--per-image", tmp_path / "images.csv")
    assert res.exit_code == 0, res.output
    assert "| EFENet | 0.0486 / 0.9598 / 0.9419 (5) |" in res.stdout
    rows = list(csv.DictReader((tmp_path / "images.csv").open()))
    assert [(r["method"], r["dataset"]) for r in rows] == [("AENet", "DUT")] * 5 + [("EFENet", "DUT")] * 5
    assert np.mean([float(r["mae"]) for r in rows[5:]]) == pytest.approx(0.0486, abs=5e-5)
    assert (tmp_path / "t.md").read_text() == res.stdout.strip() + "\n"
    assert (tmp_path / "t.csv").read_text().startswith("method,DUT n,DUT MAE")
    assert set(json.loads((tmp_path / "c.json").read_text())) == {"AENet / DUT", "EFENet / DUT"}
    assert (tmp_path / "pr.svg").stat().st_size > 1000
    res = run_cli("--pred", a, "--gt", tmp_path / "missing")
    assert res.exit_code == 1 and "missing: folder not found" in res.output
    res = run_cli("--pred", a, "--gt", gt, "--list", tmp_path / "stems.txt", "--pred-polarity", "sideways")
    assert res.exit_code != 0
    stems.write_text("1\n9\n")
    res = run_cli("--pred", a, "--gt", gt, "--list", stems, "--skip-missing", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["skipped"][0]["stem"] == "9"
    stems.write_text("9\n")                       # nothing left to score: an error, not a table of n/a
    res = run_cli("--pred", a, "--gt", gt, "--list", stems, "--skip-missing", "--dataset", "DUT")
    assert res.exit_code == 1 and "no image was scored for DUT" in res.stderr


def test_cli_ebd_rule_follows_the_name_and_is_reported(shared_dir):
    a, gt = published(shared_dir, "AENet", "DUT")
    for name, size in (("EBD(1305)", 320), ("webdata", None), ("DUT", None)):
        res = run_cli("--pred", a, "--gt", gt, "--dataset", name, "--json")
        assert json.loads(res.stdout)["iou_size"] == size, name
    assert "IoU at 320x320 (the EBD rule)" in run_cli("--pred", a, "--gt", gt, "--dataset", "ebd").stdout
    res = run_cli("--pred", a, "--pred", a, "--label", "x", "--label", "y", "--gt", gt, "--dataset", "ebd300")
    assert "IoU on nearest-resized map and mask: ebd300 at 320x320." in res.stdout


def test_cli_results_survive_a_wrong_requirement_and_new_output_folders(shared_dir, tmp_path):
    a, gt = published(shared_dir, "AENet", "DUT")
    res = run_cli("--pred", a, "--gt", gt, "--dataset", "DUT-5", "--require", "dut_5:mae<=0.08",
                  "--markdown", tmp_path / "new" / "deep" / "t.md")  # the label as the registry reads names
    assert res.exit_code == 0, res.output
    assert "requirements: 1 of 1 met" in res.output and (tmp_path / "new" / "deep" / "t.md").is_file()
    res = run_cli("--pred", a, "--gt", gt, "--dataset", "DUT-5", "--require", "CUHK-5:mae<=0.08")
    assert res.exit_code == 1 and "0.0719 | 0.9272" in res.stdout  # the results, then what was wrong
    assert "no result on dataset 'CUHK-5'" in res.stderr


def test_cli_refuses_options_of_the_other_mode(shared_dir, tmp_path):
    a, gt = published(shared_dir, "AENet", "DUT")
    e, _ = published(shared_dir, "EFENet", "DUT")
    stems = tmp_path / "stems.txt"
    stems.write_text("1\n")
    for args in (("--model", "default", "--images", gt.parent / "images", "--gt", gt, "--pred-suffix", "_prob"),
                 ("--model", "default", "--dataset", "dut-te", "--gt", gt),
                 ("--model", "default", "--dataset", "dut-te", "--ignore", gt),
                 ("--model", "default", "--dataset", "folder", "--root", gt.parent, "--gt-polarity", "blur"),
                 ("--pred", a, "--gt", gt, "--drop-mismatched"),
                 ("--pred", a, "--pred", e, "--label", "X", "--label", "X", "--gt", gt),
                 ("--pred", a, "--gt", gt, "--reference", "AENet"),
                 ("--pred", a, "--gt", gt, "--plot", tmp_path / "pr.xyz")):
        res = run_cli(*args)
        assert res.exit_code == 2, (args, res.output)


def test_model_mode_refuses_what_only_saved_maps_take(tmp_path):
    from defocus.metrics import Scorer

    with pytest.raises(ValueError, match="gt_polarity apply to saved maps"):
        defocus.evaluate(model="default", datasets=["cuhk-te1"], gt_polarity="blur")
    assert Scorer("standard").protocol.name == "standard"  # a protocol's name, as evaluate() takes it
    from defocus.metrics import pr_curve

    with pytest.raises(ValueError, match="shape mismatch"):
        pr_curve(np.zeros((2, 3)), np.zeros((3, 2), bool))


def test_folder_labels_and_a_plot_without_matplotlib(shared_dir, tmp_path, monkeypatch):
    import importlib.util

    from defocus.cli.evaluate import folder_label

    assert folder_label(tmp_path / "CUHK" / "masks") == "CUHK" and folder_label(tmp_path / "gt_v2") == "gt_v2"
    a, gt = published(shared_dir, "AENet", "DUT")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *r: None if name == "matplotlib" else real(name, *r))
    res = run_cli("--pred", a, "--gt", gt, "--plot", tmp_path / "pr.png")
    assert res.exit_code == 2 and "pip install 'defocus[viz]'" in res.stderr  # before scoring, as a set-up error


def test_hidden_files_and_repeated_list_entries(shared_dir, tmp_path):
    a, gt = published(shared_dir, "AENet", "DUT")
    masks = tmp_path / "masks"
    masks.mkdir()
    for m in gt.iterdir():
        (masks / m.name).write_bytes(m.read_bytes())
    (masks / "._1.png").write_bytes(b"\0\5\x16\7")  # a macOS resource-fork companion
    stems = tmp_path / "stems.txt"
    stems.write_text("1\n1.png\n1.jpg\n2\n")
    assert evaluate_maps(a, masks, list_file=stems).n == 2
    assert evaluate_maps(a, masks).n == 5
    with pytest.raises(EvaluationInputError, match="not a folder"):
        evaluate_maps(next(a.iterdir()), masks)


def test_cli_model_mode(tiny_checkpoint, tmp_path, shared_dir):
    data = shared_dir / "data" / "CUHK" / "TE-1_btbnet320_samples"
    res = run_cli("--model", tiny_checkpoint, "--images", data / "images", "--gt", data / "masks",
                  "--dataset", "CUHK-samples", "--device", "cpu", "--csv", tmp_path / "m.csv", "--json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["dataset"] == "CUHK-samples" and d["n"] == 5 and d["method"] == "tiny"
    assert (tmp_path / "m.csv").read_text().startswith("method,CUHK-samples n")
    res = run_cli("--model", tiny_checkpoint)
    assert res.exit_code != 0 and "--dataset" in res.output
    assert not math.isnan(d["mae"])
    for inference, resized in (("paper", 5), ("model", 0)):      # the model's maps come at the image's size
        res = run_cli("--model", tiny_checkpoint, "--images", data / "images", "--gt", data / "masks",
                      "--device", "cpu", "--inference", inference, "--size", "64", "--json")
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["n"] == 5 and json.loads(res.stdout)["n_resized"] == resized
    res = run_cli("--pred", data / "masks", "--gt", data / "masks", "--inference", "model")
    assert res.exit_code != 0 and "model mode" in res.output


def test_model_mode_scores_the_listed_stems_and_cuhk_te2_takes_its_list(tiny_checkpoint, tmp_path, shared_dir):
    import shutil

    data = shared_dir / "data" / "CUHK" / "TE-1_btbnet320_samples"
    root = tmp_path / "root"
    for sub in ("images", "masks"):
        shutil.copytree(data / sub, root / "CUHK" / sub)
    stems = sorted(p.stem for p in (data / "masks").iterdir())[:2]
    listed = tmp_path / "te2.txt"
    listed.write_text("\n".join(stems) + "\n")
    for where in (("--dataset", "cuhk2-te", "--root", root), ("--images", data / "images", "--gt", data / "masks")):
        res = run_cli("--model", tiny_checkpoint, *where, "--list", listed, "--device", "cpu", "--json")
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["n"] == 2 and [r["stem"] for r in json.loads(res.stdout)["images"]] == stems
    # a registry name after --images is a dataset to score, not the folder's label
    res = run_cli("--model", tiny_checkpoint, "--images", data / "images", "--gt", data / "masks",
                  "--dataset", "cuhk2-te", "--root", root, "--list", listed, "--device", "cpu", "--json")
    assert res.exit_code == 0, res.output
    assert [r["dataset"] for r in json.loads(res.stdout)["results"]] == ["TE-1_btbnet320_samples", "cuhk2-te"]
    listed.write_text("\n".join(stems + ["not_there"]) + "\n")
    res = run_cli("--model", tiny_checkpoint, "--images", data / "images", "--gt", data / "masks", "--list", listed,
                  "--device", "cpu")
    assert res.exit_code != 0 and "not_there" in res.output


def test_cli_model_mode_refine_scores_the_maps_predict_refine_writes(tmp_path, shared_dir):
    """--inference model --refine scores the maps that 'defocus predict --refine' writes (8-bit there, so to
    within their rounding), and they differ from the unrefined maps' score; --refine needs --inference model."""
    from defocus.cli import app

    data = shared_dir / "data" / "CUHK" / "TE-1_btbnet320_samples"
    common = ["--model", "default", "--images", data / "images", "--gt", data / "masks", "--device", "cpu",
              "--inference", "model", "--size", "96", "--json"]
    plain, refined = (json.loads(run_cli(*common, *extra).stdout)["mae"] for extra in ([], ["--refine"]))
    assert abs(plain - refined) > 3e-4  # measured 8.8e-4 (the seventh bundled model); the same maps would give 0
    r = CliRunner().invoke(app, ["predict", str(data / "images"), "-o", str(tmp_path / "maps"), "--save", "prob",
                                 "--size", "96", "--refine", "--no-progress", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    written = json.loads(run_cli("--pred", tmp_path / "maps", "--pred-suffix", "_prob", "--gt", data / "masks",
                                 "--json").stdout)["mae"]
    assert written == pytest.approx(refined, abs=2e-4)  # measured 7e-5 (8-bit rounding), closer than the plain maps
    res = run_cli("--model", "default", "--images", data / "images", "--gt", data / "masks", "--refine")
    assert res.exit_code == 2 and "--inference model" in res.output


def test_cli_model_mode_default_and_missing_checkpoint(tmp_path, shared_dir):
    data = shared_dir / "data" / "CUHK" / "TE-1_btbnet320_samples"
    res = run_cli("--model", "default", "--images", data / "images", "--gt", data / "masks", "--device", "cpu",
                  "--json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["n"] == 5 and d["mae"] < 0.1  # the bundled model: 0.055 (the seventh); an untrained network is near 0.5
    res = run_cli("--model", tmp_path / "missing.safetensors", "--images", data / "images", "--gt", data / "masks")
    assert res.exit_code == 1 and "missing.safetensors: no such checkpoint file" in res.output
    assert "Traceback" not in res.output
