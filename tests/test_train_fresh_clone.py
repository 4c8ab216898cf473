"""`defocus train` on a fresh clone: the smoke presets render procedural scenes (no data folder anywhere), and
missing data folders are one line on stderr with exit status 2, before any network is built."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import defocus
from defocus.cli import app
from defocus.data import procedural, synth


@pytest.fixture
def fresh_clone_dir(tmp_path, monkeypatch):
    """An empty working directory with no ``../shared`` beside it and no data environment variables."""
    work = tmp_path / "clone"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("DEFOCUS_SHARED", str(tmp_path / "no_shared"))
    monkeypatch.delenv("DEFOCUS_DATA", raising=False)
    assert not (tmp_path / "shared").exists()
    return work


def run(*args):
    return CliRunner().invoke(app, list(args))


def test_smoke_preset_trains_without_any_data_folder(fresh_clone_dir):
    res = run("train", "smoke_stage1", "--set", "output_dir=out", "--set", "progress=false")
    assert res.exit_code == 0, res.output + res.stderr
    assert "finished at step 3" in res.stdout
    model = defocus.load_model(fresh_clone_dir / "out" / "model.safetensors")
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64))[0].shape == (1, 1, 64, 64)


@pytest.mark.parametrize("sets,needle", [
    (["data.synthetic={sources: [nowhere/SOD], length: 8}"], "synthetic source nowhere/SOD not found"),
    (["data.synthetic={sources: ['procedural:zero'], length: 8}"], "positive integer"),
])
def test_missing_synthetic_sources_are_one_line(fresh_clone_dir, sets, needle):
    args = ["train", "smoke_stage1", "--set", "output_dir=out"]
    for s in sets:
        args += ["--set", s]
    res = run(*args)
    assert res.exit_code == 2
    assert res.stderr.strip().startswith("error:") and needle in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output + res.stderr
    assert not (fresh_clone_dir / "out").exists()


def test_a_wrong_data_root_fails_before_any_network_is_built(fresh_clone_dir, monkeypatch):
    import defocus.engine.trainer as trainer

    def no_training(*a, **k):
        raise AssertionError("the trainer was started")

    monkeypatch.setattr(trainer.Trainer, "__init__", no_training)  # the paper preset would fetch ImageNet weights
    (fresh_clone_dir / "empty").mkdir()
    res = run("train", "paper_cuhk_tr1_stage1", "--set", "data_root=empty", "--set", "output_dir=out")
    assert res.exit_code == 2
    assert "folder not found" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_procedural_scenes_are_deterministic_and_render_every_case():
    a_img, a_mask = procedural.procedural_scene(3, 64)
    b_img, b_mask = procedural.procedural_scene(3, 64)
    assert np.array_equal(np.asarray(a_img), np.asarray(b_img))
    assert np.array_equal(np.asarray(a_mask), np.asarray(b_mask))
    assert min(a_img.size) == 80
    fraction = (np.asarray(a_mask) >= 128).mean()
    assert 0.05 < fraction < 0.6
    assert not np.array_equal(np.asarray(procedural.procedural_scene(4, 64)[0].resize(a_img.size)), np.asarray(a_img))
    ds = synth.SyntheticDefocusDataset(["procedural:16"], size=64, length=16, seed=0)
    assert len(ds.sources) == 16
    cases = set()
    for i in range(16):
        image, in_focus, info = ds.render(i)
        assert image.shape == (64, 64, 3) and in_focus.shape == (64, 64)
        assert info["source"].startswith("procedural:")
        cases.add(info["case"])
        if info["case"] == "near":   # the subject passes the sharpness test: it is labelled in focus
            assert 0.02 < in_focus.mean() < 0.9
    assert "near" in cases


def test_procedural_source_names():
    assert procedural.scene_count("procedural") == procedural.DEFAULT_COUNT
    assert procedural.scene_count("procedural:5") == 5
    assert procedural.scene_count("../shared/data/natural") is None
    assert procedural.scene_count(["images", "masks"]) is None
    with pytest.raises(ValueError, match="positive integer"):
        procedural.scene_count("procedural:0")
