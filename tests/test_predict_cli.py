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
    assert "defocus-source" not in Image.open(out / "grey16_mask.png").info     # maps name no input path
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no temporary files
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["n_images"] == len(files) and summary["failed"] == len(BAD)
    assert summary["model"]["source"] == tiny_ckpt and summary["model"]["backbone"] == "resnet18"
    by_path = {Path(e["path"]).name: e for e in summary["images"]}
    assert "max-pixels" in by_path["bomb.png"]["error"] and by_path["one.png"]["error"] is None
    assert by_path["bomb.png"]["output"] == "bomb" and by_path["bomb.png"]["outputs"] == {}
    assert all(set(e) >= set(by_path["one.png"]) - {"skipped"} for e in summary["images"])  # one shape of entry
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
    r = run(a, "-o", tmp_path / "twice", "--model", tiny_ckpt, "--save", "prob", "--save", "mask")  # repeated
    assert r.exit_code == 0 and sorted(p.name for p in (tmp_path / "twice").iterdir()) == \
        ["summary.json", "x_mask.png", "x_prob.png"]


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


# ------------------------------------------------------------------------ large folders: plan, resume, layout


@pytest.fixture
def no_model(monkeypatch):
    """Makes building a model fail the test: what must be checked before loading one never gets there."""
    import defocus.inference

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(defocus.inference, "Predictor", refuse)


def test_set_up_errors_come_before_any_model(tmp_path, no_model):
    p = photo(tmp_path / "p.png")
    blocker = tmp_path / "file"
    blocker.write_text("I am a file")
    r = run(p, "-o", blocker / "out")
    assert r.exit_code == 2 and len(error_lines(r.stderr)) == 1 and "cannot be written" in r.stderr
    r = run(p, "-o", tmp_path / "o", "--save", "prob,depth")
    assert r.exit_code == 2 and error_lines(r.stderr) == [ln for ln in r.stderr.splitlines() if "depth" in ln]
    r = run(p, "-o", tmp_path / "o", "--model", tmp_path / "missing.safetensors")
    assert r.exit_code == 2 and "unknown model" in r.stderr and "no such file" in r.stderr
    r = run(tmp_path / "nope.jpg", tmp_path / "nothing*.png", "-o", tmp_path / "o")  # no image at all
    assert r.exit_code == 1 and len(error_lines(r.stderr)) == 2
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["model"] is None and summary["failed"] == 2 and summary["interrupted"] is False


def test_a_wrong_path_never_imports_torch(tmp_path):
    """The checks that need no model run in a process that has not imported torch (nor built a model)."""
    import subprocess
    import sys

    script = ("import sys\nfrom defocus.cli import app\n"
              "try:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
              "print('torch' in sys.modules, code)\n")
    for args in ([str(tmp_path / "nope.jpg"), "-o", str(tmp_path / "o")],
                 [str(photo(tmp_path / "p.png")), "-o", str(tmp_path / "p.png" / "o")]):
        out = subprocess.run([sys.executable, "-c", script, "predict", *args], capture_output=True, text=True,
                             timeout=120)
        assert out.stdout.split()[-2:] in (["False", "1"], ["False", "2"]), (out.stdout, out.stderr)
        assert "Traceback" not in out.stderr


def test_recursive_keeps_the_folder_layout(tmp_path, tiny_ckpt):
    d = tmp_path / "shoot"
    for rel, seed in (("img.png", 1), ("a/img.png", 2), ("b/img.png", 3), ("b/deep/img.jpg", 4)):
        photo(d / rel, seed)
    out = tmp_path / "out"
    r = run(d, "-r", "-o", out, "--model", tiny_ckpt, "--save", "prob,mask")
    assert r.exit_code == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [e["output"] for e in summary["images"]] == ["a/img", "b/deep/img", "b/img", "img"]
    assert summary["images"][1]["outputs"] == {"prob": "b/deep/img_prob.png", "mask": "b/deep/img_mask.png"}
    for e in summary["images"]:
        for rel in e["outputs"].values():
            assert Image.open(out / rel).size == (48, 32)
    # writing into the input folder: outputs sit beside their inputs and are not taken as inputs next time
    for _ in range(2):
        r = run(d, "-r", "-o", d, "--model", tiny_ckpt, "--save", "mask")
        assert r.exit_code == 0 and json.loads((d / "summary.json").read_text())["n_images"] == 4
    assert (d / "b" / "deep" / "img_mask.png").is_file() and (d / "a" / "img_mask.png").is_file()


def test_skip_existing_resumes(tmp_path, tiny_ckpt, monkeypatch):
    d = tmp_path / "in"
    for i in range(3):
        photo(d / f"p{i}.png", i)
    out = tmp_path / "out"
    assert run(d, "-o", out, "--model", tiny_ckpt).exit_code == 0
    first = json.loads((out / "summary.json").read_text())
    (out / "p1_mask.png").unlink()  # p1 was not finished
    kept = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name.startswith(("p0", "p2"))}
    r = run(d, "-o", out, "--model", tiny_ckpt, "--skip-existing")
    assert r.exit_code == 0, r.stderr
    assert "1 image(s) done" in r.stderr and "2 skipped" in r.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name.startswith(("p0", "p2"))} == kept
    assert (out / "p1_mask.png").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_images"] == 3 and summary["skipped"] == 2 and summary["failed"] == 0
    by_stem = {e["output"]: e for e in summary["images"]}
    assert by_stem["p0"]["skipped"] and not by_stem["p1"].get("skipped")
    assert by_stem["p2"]["in_focus_fraction"] == first["images"][2]["in_focus_fraction"]  # carried over
    # everything done: nothing to predict, so no model is built at all
    import defocus.inference

    monkeypatch.setattr(defocus.inference, "Predictor", None)
    r = run(d, "-o", out, "--skip-existing")
    assert r.exit_code == 0 and "3 skipped" in r.stderr
    # without an earlier summary, a skipped entry still has every key of a done one
    (out / "summary.json").unlink()
    r = run(d, "-o", out, "--skip-existing")
    entries = json.loads((out / "summary.json").read_text())["images"]
    assert all(set(e) == set(by_stem["p1"]) | {"skipped"} for e in entries)


def test_a_summary_json_no_batch_wrote_is_never_replaced(tmp_path, tiny_ckpt):
    d = tmp_path / "photos"
    photo(d / "p.png", 0)
    (d / "summary.json").write_text('{"my": "own notes"}')
    r = run(d, "-o", d, "--model", tiny_ckpt)
    assert r.exit_code == 2 and "summary.json exists and was not written by defocus predict" in r.stderr
    assert (d / "summary.json").read_text() == '{"my": "own notes"}' and not (d / "p_prob.png").exists()
    (d / "summary.json").unlink()
    assert run(d, "-o", d, "--model", tiny_ckpt).exit_code == 0
    assert run(d, "-o", d, "--model", tiny_ckpt).exit_code == 0     # its own summary is replaced
    r = run(*sorted(d.iterdir()), "-o", d, "--model", tiny_ckpt)      # as a shell expands photos/*
    assert r.exit_code == 0 and "not taken: outputs of defocus predict" in r.stderr
    assert [Path(e["path"]).name for e in json.loads((d / "summary.json").read_text())["images"]] == ["p.png"]


def test_skip_existing_redoes_outputs_recorded_for_another_file(tmp_path, tiny_ckpt, monkeypatch):
    photo(tmp_path / "a" / "x.png", 0, size=(48, 32))
    photo(tmp_path / "b" / "x.png", 1, size=(20, 30))
    out = tmp_path / "out"
    assert run(tmp_path / "a" / "x.png", "-o", out, "--model", tiny_ckpt).exit_code == 0
    r = run(tmp_path / "b" / "x.png", "-o", out, "--model", tiny_ckpt, "--skip-existing")
    assert r.exit_code == 0 and "1 image(s) done" in r.stderr
    with Image.open(out / "x_prob.png") as m:
        assert m.size == (20, 30)  # b's map, not a's kept under b's name
    # the same file spelled another way (absolute, then relative) is done: its entry is kept, with numbers
    monkeypatch.chdir(tmp_path)
    r = run("b/x.png", "-o", out, "--model", tiny_ckpt, "--skip-existing")
    assert r.exit_code == 0 and "1 skipped" in r.stderr
    entry = json.loads((out / "summary.json").read_text())["images"][0]
    assert entry["skipped"] and entry["path"] == "b/x.png" and entry["width"] == 20 and entry["in_focus_fraction"] is not None


def test_outputs_named_one_by_one_are_not_inputs(tmp_path, tiny_ckpt):
    d = tmp_path / "io"
    photo(d / "cat.jpg", 0)
    photo(d / "dog.jpg", 1)
    for _ in range(2):  # as `defocus predict io/*.jpg -o io` twice: the shell names the overlays too
        r = run(*sorted(d.glob("*.jpg")), "-o", d, "--model", tiny_ckpt)
        assert r.exit_code == 0 and "2 image(s) done" in r.stderr
    assert "note: 2 input(s) not taken: outputs of defocus predict" in r.stderr
    assert sorted(p.name for p in d.iterdir()) == sorted(
        ["cat.jpg", "dog.jpg", "summary.json"] + [f"{s}_{k}" for s in ("cat", "dog")
                                                 for k in ("prob.png", "mask.png", "overlay.jpg")])


def test_a_file_name_in_another_encoding_keeps_the_summary(tmp_path, tiny_ckpt):
    import os

    d = tmp_path / "in"
    photo(d / "ok.png", 0)
    name = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: no valid UTF-8
    try:
        photo(d / name, 1)
    except (UnicodeEncodeError, OSError):
        pytest.skip("this file system takes UTF-8 names only")
    out = tmp_path / "out"
    r = run(d, "-o", out, "--model", tiny_ckpt, "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["n_images"] == 2 and summary["failed"] == 0
    assert {Path(e["path"]).name for e in summary["images"]} == {"ok.png", name}
    assert json.loads(r.stdout)["n_images"] == 2


def test_output_folder_expands_home(tmp_path, tiny_ckpt, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)  # where a literal "~" folder would appear
    photo(tmp_path / "p.png")
    assert run(tmp_path / "p.png", "--output=~/maps", "--model", tiny_ckpt).exit_code == 0
    assert (tmp_path / "home" / "maps" / "p_prob.png").is_file()


SLOW_RUN = """
import sys, time
import numpy as np
from defocus import classical
from defocus.cli import app

calls = []

def slow(rgb):
    calls.append(1)
    time.sleep(0.15 if len(calls) <= 3 else 1.0)  # slower after a few, so a loaded machine cannot finish first
    return np.full(rgb.shape[:2], 0.75, np.float32)

classical.METHODS["slow"] = slow
app(["predict", sys.argv[1], "-o", sys.argv[2], "--method", "slow", "--workers", "1", "--batch-size", "1",
     "--save", "prob,mask"])
"""


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_interrupted_run_writes_its_summary(tmp_path, signame):
    """A run stopped by Ctrl-C or SIGTERM lists what it wrote in summary.json and exits with 128 + signal."""
    import os
    import signal
    import subprocess
    import sys
    import time

    d = tmp_path / "in"
    for i in range(40):
        photo(d / f"p{i:02d}.png", i, size=(24, 16))
    out = tmp_path / "out"
    # a test runner's worker may ignore SIGINT, and a child would inherit that (as a background job does, on
    # purpose): start the run with the default disposition, as an interactive shell does
    proc = subprocess.Popen([sys.executable, "-c", SLOW_RUN, str(d), str(out)], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while len(list(out.glob("*_mask.png"))) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(getattr(signal, signame))
    stderr = proc.communicate(timeout=60)[1]
    assert proc.returncode == 128 + getattr(signal, signame), stderr
    assert "Traceback" not in stderr and f"interrupted ({signame})" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["n_planned"] == 40
    assert 3 <= summary["n_images"] < 40 and summary["failed"] == 0
    listed = {rel for e in summary["images"] for rel in e["outputs"].values()}
    on_disk = {p.name for p in out.iterdir() if p.name.endswith(".png")}
    assert listed == on_disk  # every image written is listed, and nothing listed is missing
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary files left


def test_errors_print_above_the_progress_bar(tmp_path, tiny_ckpt, capsys):
    """Log records during a batch (the default error report) go above the progress bar, never after it."""
    import logging
    import sys

    from defocus.inference import Predictor, predict_files

    for i in range(3):
        photo(tmp_path / "in" / f"p{i}.png", i)
    (tmp_path / "in" / "p1.png").write_text("not an image")
    handler = logging.StreamHandler(sys.stderr)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        summary = predict_files(Predictor(tiny_ckpt, device="cpu", size=64, batch_size=1), [tmp_path / "in"],
                                tmp_path / "out", save="mask")
    finally:
        root.removeHandler(handler)
    assert summary["failed"] == 1
    err = capsys.readouterr().err
    assert "3/3" in err  # the bar was drawn
    lines = [ln for ln in err.split("\n") if "p1.png" in ln]
    # what a terminal shows of the line is what follows its last carriage return: the message alone
    assert len(lines) == 1 and lines[0].split("\r")[-1].startswith(str(tmp_path)), repr(lines)


def test_no_upscale_is_recorded_and_runs_small_photos_at_their_size(tmp_path, tiny_ckpt):
    p = photo(tmp_path / "small.png", size=(48, 32))
    r = run(p, "-o", tmp_path / "o", "--model", tiny_ckpt, "--no-upscale")
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["settings"]["upscale"] is False
    assert Image.open(tmp_path / "o" / "small_prob.png").size == (48, 32)
    r = run(p, "-o", tmp_path / "d", "--model", tiny_ckpt)
    assert json.loads((tmp_path / "d" / "summary.json").read_text())["settings"]["upscale"] is True


def test_upscale_flag_defaults_to_the_models_own(tmp_path, tiny_ckpt):
    """Without --upscale/--no-upscale the model's own input default applies: the bundled model (trained without
    enlarging) runs a 48x32 photo at its own size, another network enlarges it as the paper does."""
    photo(tmp_path / "in" / "small.png")
    cases = {"bundled": ["--model", "default"], "bundled-upscale": ["--model", "default", "--upscale"],
             "tiny": ["--model", tiny_ckpt], "tiny-no-upscale": ["--model", tiny_ckpt, "--no-upscale"]}
    for name, args in cases.items():
        r = run(tmp_path / "in", "-o", tmp_path / name, "--save", "prob", *args)
        assert r.exit_code == 0, r.output
        settings = json.loads((tmp_path / name / "summary.json").read_text())["settings"]
        assert settings["upscale"] is (name in ("bundled-upscale", "tiny")), name


def test_size_defaults_to_the_models_own(tmp_path, tiny_ckpt):
    """Without --size the model's own input size applies: 512 for the bundled model (its file records it), the
    paper's 320 for a network whose file records none."""
    photo(tmp_path / "in" / "small.png")
    cases = {"bundled": (["--model", "default"], 512), "tiny": (["--model", tiny_ckpt], 320),
             "bundled-96": (["--model", "default", "--size", "96"], 96)}
    for name, (args, size) in cases.items():
        r = CliRunner().invoke(app, ["predict", str(tmp_path / "in"), "-o", str(tmp_path / name), "--save", "prob",
                                     "--device", "cpu", *map(str, args)])
        assert r.exit_code == 0, r.output
        assert json.loads((tmp_path / name / "summary.json").read_text())["settings"]["size"] == size, name


@pytest.mark.parametrize("flag,setting", [("--flip-tta", "flip_tta"), ("--refine", "refine")])
def test_network_only_options_are_recorded_and_refused_for_classical_methods(tmp_path, tiny_ckpt, flag, setting):
    """--flip-tta and --refine (what they do: test_inference.py, test_refine.py) are recorded in summary.json; a
    classical method, whose map is computed its own way, refuses them with the set-up exit status."""
    p = photo(tmp_path / "p.png", size=(48, 32))
    for name, extra in (("plain", []), ("with", [flag])):
        r = run(p, "-o", tmp_path / name, "--model", tiny_ckpt, "--save", "prob", *extra)
        assert r.exit_code == 0, r.stderr
        assert json.loads((tmp_path / name / "summary.json").read_text())["settings"][setting] is bool(extra)
    r = run(p, "-o", tmp_path / "lbp", "--method", "lbp", flag)
    assert r.exit_code == 2 and setting in r.stderr


def test_each_image_records_the_mask_threshold_it_used(tmp_path):
    """A classical method's threshold is its own per image (settings record null): each entry says which."""
    p = photo(tmp_path / "p.png", size=(48, 32))
    for method, expected in (("lbp", 0.3), ("hifst", None)):
        r = CliRunner().invoke(app, ["predict", str(p), "-o", str(tmp_path / method), "--method", method, "--json",
                                     "--save", "mask"])
        assert r.exit_code == 0, r.output
        summary = json.loads(r.stdout)
        entry = summary["images"][0]
        assert summary["settings"]["threshold"] is None and 0 < entry["threshold"] <= 1
        assert expected is None or entry["threshold"] == expected
        mask = np.asarray(Image.open(tmp_path / method / "p_mask.png")) > 127
        assert abs(mask.mean() - entry["in_focus_fraction"]) < 1e-6
