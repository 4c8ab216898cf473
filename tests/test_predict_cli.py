"""`defocus predict` end to end: bad inputs, odd formats, same stems, unwritable / shared output folders."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from defocus.cli import app
from test_inference import BAD, make_bad_and_odd_files


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from defocus.models import create_model, save_model

    from conftest import TINY_BACKBONE

    return str(save_model(create_model("dffnet", backbone=TINY_BACKBONE).eval(),
                          tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"))


def run(*args):
    result = CliRunner().invoke(app, ["predict", *map(str, args), "--size", "64", "--device", "cpu"])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def photo(path: Path, seed=0, size=(48, 32)):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error:")]


def test_bad_inputs_one_line_each_batch_goes_on(tmp_path, tiny_ckpt):
    files = make_bad_and_odd_files(tmp_path / "in")
    before = digest(tmp_path / "in")
    out = tmp_path / "out"
    r = run(tmp_path / "in", "-o", out, "--model", tiny_ckpt)
    assert r.exit_code == 1
    errors = error_lines(r.stderr)
    assert len(errors) == len(BAD)
    for key, reason in BAD.items():
        assert sum(str(files[key]) in e and reason in e for e in errors) == 1, (key, errors)
    good = [k for k in files if k not in BAD]
    for key in good:
        for suffix in ("_prob.png", "_mask.png", "_overlay.jpg"):
            assert (out / (files[key].stem + suffix)).is_file(), (key, suffix)
    assert Image.open(out / (files["one"].stem + "_prob.png")).size == (1, 1)
    assert Image.open(out / "grey16_mask.png").size == (30, 20)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no temporary files
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["n_images"] == len(files) and summary["failed"] == len(BAD)
    assert summary["model"]["source"] == tiny_ckpt and summary["model"]["backbone"] == "resnet18"
    by_path = {Path(e["path"]).name: e for e in summary["images"]}
    assert "max-pixels" in by_path["bomb.png"]["error"] and by_path["one.png"]["error"] is None
    assert by_path["фото с пробелом ü.png"]["width"] == 32 and 0 <= by_path["one.png"]["in_focus_fraction"] <= 1
    assert all(e["seconds"] >= 0 for e in summary["images"])
    assert digest(tmp_path / "in") == before  # inputs never modified


def test_same_stem_json_and_save_selection(tmp_path, tiny_ckpt):
    a, b = photo(tmp_path / "a" / "x.jpg", 1), photo(tmp_path / "b" / "x.png", 2)
    out = tmp_path / "out"
    r = run(a, b, "-o", out, "--model", tiny_ckpt, "--save", "prob,mask", "--json", "--batch-size", "2")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert [e["output"] for e in summary["images"]] == ["x", "x-2"]
    assert sorted(p.name for p in out.iterdir()) == ["summary.json", "x-2_mask.png", "x-2_prob.png",
                                                     "x_mask.png", "x_prob.png"]
    assert summary["images"][0]["outputs"] == {"prob": "x_prob.png", "mask": "x_mask.png"}
    assert "2/2" in r.stderr  # a progress bar for more than one image
    r = run(a, "-o", tmp_path / "one", "--model", tiny_ckpt)
    assert r.exit_code == 0 and "1/1" not in r.stderr


def test_unwritable_output_folder(tmp_path, tiny_ckpt):
    blocker = tmp_path / "file"
    blocker.write_text("I am a file")
    r = run(photo(tmp_path / "p.png"), "-o", blocker / "out", "--model", tiny_ckpt)
    assert r.exit_code == 2
    assert len(error_lines(r.stderr)) == 1 and str(blocker / "out") in r.stderr and "cannot be written" in r.stderr


def test_input_folder_equal_to_output_folder(tmp_path, tiny_ckpt):
    d = tmp_path / "photos"
    photo(d / "p.png", 1)
    photo(d / "q.jpg", 2)
    photo(d / "p_prob.png", 3)  # a user's own image that looks like an output name
    originals = digest(d)
    for _ in range(2):  # the second run must not pick up the first run's outputs
        r = run(d, "-o", d, "--model", tiny_ckpt)
        assert r.exit_code == 0, r.stderr
        summary = json.loads((d / "summary.json").read_text())
        assert summary["n_images"] == 3
    after = digest(d)
    assert {k: after[k] for k in originals} == originals  # inputs untouched
    outputs = sorted(set(after) - set(originals))
    assert len(outputs) == 3 * 3 + 1  # one set per input, overwritten by the second run
    assert {"p-2_prob.png", "p_prob_prob.png", "q_prob.png"} <= set(outputs)  # p_prob.png is an input: kept


def test_list_file_globs_missing_and_pixel_limit(tmp_path, tiny_ckpt):
    photo(tmp_path / "imgs" / "a.png", 1)
    photo(tmp_path / "imgs" / "b.png", 2, size=(50, 40))
    (tmp_path / "list.txt").write_text("imgs/a.png\nimgs/missing.png\n")
    r = run(tmp_path / "list.txt", tmp_path / "imgs" / "b*.png", tmp_path / "nope.jpg", "-o", tmp_path / "o",
            "--model", tiny_ckpt, "--max-pixels", "1600", "--keep-aspect")
    assert r.exit_code == 1
    errs = error_lines(r.stderr)
    assert len(errs) == 3
    assert any("missing.png" in e and "no such file" in e for e in errs)
    assert any("nope.jpg" in e for e in errs) and any("b.png" in e and "--max-pixels" in e for e in errs)
    assert (tmp_path / "o" / "a_prob.png").is_file() and not (tmp_path / "o" / "b_prob.png").exists()
    r = run(tmp_path / "imgs" / "b.png", "-o", tmp_path / "o", "--model", tiny_ckpt, "--max-pixels", "0")
    assert r.exit_code == 0 and Image.open(tmp_path / "o" / "b_prob.png").size == (50, 40)


def test_bad_model_is_a_clear_error(tmp_path):
    r = run(photo(tmp_path / "p.png"), "-o", tmp_path / "o", "--model", tmp_path / "missing.safetensors")
    assert r.exit_code == 2 and "unknown model" in r.stderr
