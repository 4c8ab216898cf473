"""Batch prediction on Ray Data (defocus.distributed) on one local Ray instance shared by the module: identical
maps to the single-process path, bad files as rows, resume after a killed job, object-storage style inputs, the
CLI; plus the results table and output naming, which need only pyarrow."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import REPO, TINY_BACKBONE
from defocus.cli import app
from defocus.distributed import relative_stem
from test_inference import BAD, make_bad_and_odd_files

HAS_RAY = all(importlib.util.find_spec(m) is not None for m in ("ray", "pyarrow"))
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="Ray Data not installed (the 'ray' extra)")
needs_arrow = pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="pyarrow not installed")
SUFFIXES = ("_prob.png", "_mask.png", "_overlay.jpg")


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray instance (2 CPUs, no dashboard) for the module; yields its address."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", configure_logging=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from defocus.models import create_model, save_model

    return str(save_model(create_model("dffnet", backbone=TINY_BACKBONE).eval(),
                          tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"))


def photos(folder: Path, n: int, size=(48, 32), seed=0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        path = folder / f"p{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        out.append(path)
    return out


def read_rows(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(out / "predictions.parquet").to_pylist()


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


# ------------------------------------------------------------------------------------- no Ray needed


def test_uri_output_stems_keep_the_folder_layout():
    roots = ["/data/photos", "/data/photos/2024"]
    assert relative_stem("/data/photos/2023/a.jpg", roots) == "2023/a"
    assert relative_stem("/data/photos/2024/b.JPG", roots) == "b"          # the longest root wins
    assert relative_stem("/elsewhere/c.png", roots) == "c"
    assert relative_stem("s3://bucket/set/x/d.jpeg", ["s3://bucket/set"]) == "x/d"
    assert relative_stem("bucket/set/x/d.jpeg", ["s3://bucket/set"]) == "x/d"  # Ray reports paths sans scheme


@needs_arrow
def test_table_parts_resume_and_compaction(tmp_path):
    from defocus import prediction_table as pt

    rows = lambda *r: pt.rows_to_table([dict(zip(("path", "error", "width"), x)) for x in r])  # noqa: E731
    pt.write_part(rows(("b", None, 2), ("a", "broken", None)), tmp_path)
    pt.write_part(rows(("a", None, 5)), tmp_path)
    assert pt.done_paths(tmp_path) == {"a", "b"}
    pt.write_part(rows(("c", "unreadable", None)), tmp_path)
    assert pt.done_paths(tmp_path) == {"a", "b"} and pt.done_paths(tmp_path, retry_failed=False) == {"a", "b", "c"}
    (tmp_path / pt.PARTS_DIR / "part-99999999999999999999-x.parquet").write_bytes(b"PAR1 cut short")
    table = pt.compact_table(tmp_path)
    assert [(r["path"], r["width"], r["error"]) for r in read_rows(tmp_path)] == \
        [("a", 5, None), ("b", 2, None), ("c", None, "unreadable")]
    assert table.name == "predictions.parquet" and not (tmp_path / pt.PARTS_DIR).exists()
    assert pt.done_paths(tmp_path) == {"a", "b"}
    (tmp_path / "never").mkdir()
    assert not pt.compact_table(tmp_path / "never").exists()   # a run that never started leaves no empty table


def test_compaction_removes_the_temporary_file_of_a_part_write_cut_short(tmp_path):
    from defocus import prediction_table as pt
    from defocus.atomic import temp_path

    pt.write_part(pt.rows_to_table([{"path": "a", "error": None, "width": 5}]), tmp_path)
    parts = tmp_path / pt.PARTS_DIR
    temp_path(parts / "part-00000000000000000001-deadbeef.parquet").write_bytes(b"")  # a worker killed mid-write
    pt.compact_table(tmp_path)
    assert [r["path"] for r in read_rows(tmp_path)] == ["a"] and not parts.exists()


def test_cli_without_ray_is_one_clear_line(tmp_path, monkeypatch):
    for name in ("ray", "ray.data"):
        monkeypatch.setitem(sys.modules, name, None)  # import ray -> ImportError, as when it is not installed
    photos(tmp_path / "in", 1)
    r = CliRunner().invoke(app, ["predict", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--ray"])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert lines == ['error: Ray Data is not installed (ray): pip install "defocus[ray]"'], lines
    assert not (tmp_path / "out" / "predictions.parquet").exists()


# ---------------------------------------------------------------------------------------- on Ray


@needs_ray
def test_identical_to_single_process_on_the_examples(tmp_path, ray_address):
    import torch

    from defocus.distributed import predict_dataset
    from defocus.inference import Predictor, predict_files

    # each actor of 1 CPU runs PyTorch on one thread; CPU kernels may round differently on another thread count
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = predict_files(Predictor(device="cpu"), [REPO / "examples"], tmp_path / "single", progress=False)
    finally:
        torch.set_num_threads(threads)
    run = predict_dataset([REPO / "examples"], tmp_path / "ray", concurrency=2, ray_batch_size=3, progress=False)
    n = len(single["images"])
    assert n == 11 and single["failed"] == 0
    assert (run.processed, run.failed, run.skipped) == (n, 0, 0)
    for entry in single["images"]:
        for suffix in SUFFIXES:
            a, b = tmp_path / "single" / (entry["output"] + suffix), tmp_path / "ray" / (entry["output"] + suffix)
            assert np.array_equal(pixels(a), pixels(b)), b.name
    rows = {r["path"]: r for r in read_rows(tmp_path / "ray")}
    assert len(rows) == n
    for entry in single["images"]:
        row = rows[str(Path(entry["path"]).resolve())]
        assert (row["width"], row["height"], row["error"]) == (entry["width"], entry["height"], None)
        assert row["in_focus_fraction"] == entry["in_focus_fraction"] and row["output"] == entry["output"]
        assert row["model"] == run.model and "bundled" in row["model"]

    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray").iterdir()}
    again = predict_dataset([REPO / "examples"], tmp_path / "ray", concurrency=2, progress=False)
    assert (again.processed, again.skipped) == (0, n)  # a rerun over a finished job does nothing
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray").iterdir() if p.suffix != ".parquet"} == \
        {k: v for k, v in before.items() if not k.endswith(".parquet")}
    assert len(read_rows(tmp_path / "ray")) == n


@needs_ray
def test_bad_files_are_rows_and_the_cli_keeps_sub_folders(tmp_path, ray_address, tiny_ckpt):
    files = make_bad_and_odd_files(tmp_path / "in" / "odd")
    good = photos(tmp_path / "in" / "sub", 2)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["predict", str(tmp_path / "in"), "-r", "-o", str(out), "--model", tiny_ckpt,
                                 "--size", "64", "--no-progress", "--json", "--ray-address", ray_address,
                                 "--ray-concurrency", "1", "--ray-batch-size", "4"])
    assert r.exit_code == 1, r.output
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == len(BAD)
    for key, reason in BAD.items():
        assert sum(str(files[key]) in e and reason in e for e in errors) == 1, (key, errors)
    summary = json.loads(r.stdout)
    assert summary["processed"] == len(files) + len(good) and summary["failed"] == len(BAD)
    rows = {Path(r["path"]).name: r for r in read_rows(out)}
    assert len(rows) == len(files) + len(good)
    for key, path in files.items():
        assert (rows[path.name]["error"] is not None) == (key in BAD), key
        for suffix in SUFFIXES:
            assert (out / "odd" / (path.stem + suffix)).is_file() == (key not in BAD), (key, suffix)
    assert "max-pixels" in rows["bomb.png"]["error"] and rows["one.png"]["width"] == 1
    assert rows["p001.png"]["output"] == "sub/p001" and (out / "sub" / "p001_overlay.jpg").is_file()
    assert not [p for p in out.rglob(".*") if p.name != ".predictions.parts"]  # no temporary files left


@needs_ray
def test_uri_inputs_and_datasets_of_images(tmp_path, ray_address, tiny_ckpt):
    """Files read by Ray Data's file systems (file:// here, s3:// on a cluster) and a dataset of decoded images
    give the same maps as the file path."""
    import ray

    from defocus.distributed import predict_dataset
    from defocus.inference import Predictor, predict_files

    paths = photos(tmp_path / "in" / "a", 3, size=(40, 30))
    (tmp_path / "in" / "a" / "broken.png").write_bytes(b"\x89PNG not really")
    predict_files(Predictor(tiny_ckpt, size=64, device="cpu"), paths, tmp_path / "ref" / "a", progress=False)
    opts = dict(model=tiny_ckpt, size=64, device="cpu", progress=False, ray_batch_size=2)
    uri = predict_dataset([f"file://{tmp_path / 'in'}"], tmp_path / "uri", **opts)
    items = [{"path": str(p), "image": pixels(p), "output": f"a/{p.stem}"} for p in paths]
    items.append({"path": "escape", "image": pixels(paths[0]), "output": "../escape"})
    arrays = predict_dataset(ray.data.from_items(items), tmp_path / "arr", save="prob", **opts)
    assert (uri.processed, uri.failed, arrays.processed, arrays.failed) == (4, 1, 4, 1)
    assert "leaves the output folder" in read_rows(tmp_path / "arr")[-1]["error"]
    assert not (tmp_path / "escape_prob.png").exists()
    for p in paths:
        for suffix in SUFFIXES:
            assert np.array_equal(pixels(tmp_path / "ref" / "a" / (p.stem + suffix)),
                                  pixels(tmp_path / "uri" / "a" / (p.stem + suffix)))
        assert np.array_equal(pixels(tmp_path / "ref" / "a" / (p.stem + "_prob.png")),
                              pixels(tmp_path / "arr" / "a" / (p.stem + "_prob.png")))
    broken = [r for r in read_rows(tmp_path / "uri") if r["error"]]
    assert len(broken) == 1 and broken[0]["path"].endswith("broken.png")
    again = predict_dataset([f"file://{tmp_path / 'in'}"], tmp_path / "uri", **opts)
    assert (again.processed, again.failed, again.skipped) == (1, 1, 3)  # the failed file is tried again


RESUME_SCRIPT = """
import sys
from defocus.distributed import predict_dataset
predict_dataset([sys.argv[1]], sys.argv[2], address=sys.argv[3], model=sys.argv[4], size=64, device="cpu",
                batch_size=1, ray_batch_size=2, flush_rows=2, progress=False)
"""


@needs_arrow
def test_a_row_whose_maps_another_path_overwrote_is_dropped(tmp_path):
    from defocus import prediction_table as pt

    rows = lambda *r: pt.rows_to_table([dict(zip(("path", "output", "error"), x)) for x in r])  # noqa: E731
    pt.write_part(rows(("/a/x.png", "x", None), ("/a/y.png", "y", None)), tmp_path)
    pt.write_part(rows(("/b/x.png", "x", None), ("/b/y.png", "y", "unreadable")), tmp_path)
    assert pt.done_outputs(tmp_path) == {"x": "/b/x.png", "y": "/a/y.png"}  # a failure writes no maps
    pt.compact_table(tmp_path)
    assert [(r["path"], r["output"]) for r in read_rows(tmp_path)] == \
        [("/a/y.png", "y"), ("/b/x.png", "x"), ("/b/y.png", "y")]


@needs_ray
def test_a_rerun_predicts_a_photo_whose_output_names_another_photo_wrote(tmp_path, ray_address, tiny_ckpt):
    from defocus.distributed import predict_dataset

    first = photos(tmp_path / "a", 1, size=(48, 32))[0]
    second = photos(tmp_path / "b", 1, size=(40, 30), seed=1)[0]          # another photo of the same name
    out = tmp_path / "out"
    kwargs = dict(model=tiny_ckpt, size=64, device="cpu", progress=False, address=ray_address)
    assert predict_dataset([first], out, **kwargs).processed == 1
    run = predict_dataset([second, out / "p000_prob.png"], out, **kwargs)  # an output named as an input too
    assert (run.processed, run.skipped) == (1, 0) and run.outputs_named == (out / "p000_prob.png",)
    assert [(r["path"], r["width"]) for r in read_rows(out)] == [(str(second), 40)]
    assert Image.open(out / "p000_mask.png").size == (40, 30)
    run = predict_dataset([second], out, **kwargs)                        # now it is done
    assert (run.processed, run.skipped) == (0, 1)


@needs_ray
def test_network_options_with_a_method_are_refused_before_ray_starts(tmp_path, monkeypatch):
    from defocus import distributed

    monkeypatch.setattr(distributed, "_connect", lambda *a: pytest.fail("Ray started"))
    for options in (dict(precision="bf16"), dict(compile=True)):
        with pytest.raises(ValueError, match="apply to networks"):
            distributed.predict_dataset([tmp_path], tmp_path / "out", model="default", method="lbp", **options)


@needs_ray
def test_maps_another_input_left_behind_are_never_taken_for_a_new_one(tmp_path, ray_address, tiny_ckpt):
    """a.jpg and a.png give a and a-2; once a.jpg is gone a.png becomes a, and a new a.webp, now a-2, is
    predicted rather than given the a-2 maps a.png left behind (each mask records its input's file name)."""
    from defocus.distributed import predict_dataset

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.full((30, 40, 3), 90, np.uint8)).save(src / "a.jpg")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(src / "a.png")
    out, kwargs = tmp_path / "out", dict(model=tiny_ckpt, size=64, device="cpu", progress=False,
                                         address=ray_address)
    assert predict_dataset([src], out, **kwargs).processed == 2
    (src / "a.jpg").unlink()
    predict_dataset([src], out, **kwargs)
    Image.fromarray(np.full((30, 40, 3), 200, np.uint8)).save(src / "a.webp")
    run = predict_dataset([src], out, **kwargs)
    assert (run.processed, run.skipped) == (1, 1)
    assert {Path(r["path"]).name: r["output"] for r in read_rows(out)} == {"a.png": "a", "a.webp": "a-2"}


@needs_ray
def test_a_uri_listing_of_a_folder_that_holds_the_outputs_skips_them(tmp_path, ray_address, tiny_ckpt):
    from defocus.distributed import predict_dataset

    photos(tmp_path / "in", 1, size=(40, 30))
    kwargs = dict(model=tiny_ckpt, size=64, device="cpu", progress=False, address=ray_address)
    for _ in range(2):
        run = predict_dataset([f"file://{tmp_path / 'in'}"], tmp_path / "in" / "maps", **kwargs)
    assert (run.processed, run.skipped) == (0, 1) and len(run.outputs_named) == 3
    assert not (tmp_path / "in" / "maps" / "maps").exists()
    only_outputs = predict_dataset([f"file://{tmp_path / 'in' / 'maps'}"], tmp_path / "none", **kwargs)
    assert only_outputs.table is None and only_outputs.to_dict()["table"] is None   # no row: no table


@needs_ray
def test_resume_after_the_job_is_killed(tmp_path, ray_address, tiny_ckpt):
    from defocus.distributed import predict_dataset

    n = 16
    paths = photos(tmp_path / "in", n, size=(1000, 750))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    job = subprocess.Popen([sys.executable, "-c", RESUME_SCRIPT, str(tmp_path / "in"), str(out), ray_address,
                            tiny_ckpt], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def complete() -> set[str]:
        return {p.stem for p in paths if all((out / (p.stem + s)).is_file() for s in SUFFIXES)}

    deadline = time.monotonic() + 180
    while len(complete()) < 6 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)
    assert job.wait(30) == -signal.SIGKILL, job.stderr.read().decode()[-2000:]
    job.stderr.close()
    done_before, t_end = complete(), time.monotonic() + 30
    while time.monotonic() < t_end:  # the killed job's actors stop with their driver: let writes in flight land
        time.sleep(1.5)
        if complete() == done_before:
            break
        done_before = complete()
    assert 6 <= len(done_before) < n, len(done_before)
    stamps = {s: (out / (s + "_mask.png")).stat() for s in done_before}

    run = predict_dataset([tmp_path / "in"], out, model=tiny_ckpt, size=64, device="cpu", progress=False)
    assert run.failed == 0 and run.skipped >= len(done_before) and run.processed + run.skipped == n
    rows = read_rows(out)
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in paths)  # every image exactly once
    assert all(r["error"] is None and r["width"] == 1000 for r in rows)
    assert complete() == {p.stem for p in paths}
    for stem, st in stamps.items():  # images finished before the kill were not predicted again
        now = (out / (stem + "_mask.png")).stat()
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), stem
    assert not (out / ".predictions.parts").exists()


def test_bytes_read_by_uri_fail_with_the_reason_a_path_gives(tmp_path):
    import io

    from defocus import imageio
    from defocus.distributed import _open_bytes

    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[:50])
    with pytest.raises(imageio.ImageDecodeError) as by_path:
        imageio.open_image(tmp_path / "cut.jpg")
    assert _open_bytes(buf.getvalue()[:50]) == (None, by_path.value.reason)
