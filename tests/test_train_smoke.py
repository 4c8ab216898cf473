"""The smoke presets end to end on CPU: synthetic 64x64 data rendered from the real natural photos, a few
iterations, a checkpoint that ``defocus.load_model`` opens. Stage 2 trains its own stage-1 teacher first."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import defocus
from defocus.cli import app
from defocus.config import load_config
from defocus.engine import train

REPO = Path(__file__).resolve().parents[1]


def smoke_overrides(shared_dir, out):
    sources = shared_dir / "data" / "natural" / "SOD"
    return [f"output_dir={out}", f"data.synthetic={{sources: ['{sources}'], length: 8}}", "progress=false"]


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_smoke_stage1_from_the_command_line(shared_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    args = ["train", "smoke_stage1"]
    for o in smoke_overrides(shared_dir, tmp_path):
        args += ["--set", o]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "finished at step 3" in res.output
    model = defocus.load_model(tmp_path / "model.safetensors")
    with torch.no_grad():
        logit = model(torch.zeros(1, 3, 64, 64))[0]
    assert logit.shape == (1, 1, 64, 64)
    log = rows(tmp_path / "log.csv")
    assert [r["step"] for r in log] == ["1", "2", "3"]
    assert all(float(r["loss"]) > 0 for r in log)


def test_smoke_stage2_bootstraps_its_teacher(shared_dir, tmp_path):
    cfg = load_config(REPO / "configs" / "smoke_stage2.yaml", smoke_overrides(shared_dir, tmp_path))
    result = train(cfg)
    assert result.complete and result.step == 3
    teacher = defocus.load_model(tmp_path / "teacher" / "model.safetensors")
    student = defocus.load_model(result.model_path)
    assert set(student.state_dict()) == set(teacher.state_dict())   # a plain DFFNet: no projectors inside
    log = rows(tmp_path / "log.csv")
    assert {"kd_dbd", "kd_depth", "lam"} <= set(log[0]) and float(log[0]["lam"]) == 3.0


def test_smoke_rdffnet(shared_dir, tmp_path):
    # every frame zoomed: the rendered depth target is cut with the image and its masks
    cfg = load_config(REPO / "configs" / "smoke_rdffnet.yaml",
                      smoke_overrides(shared_dir, tmp_path) + ["data.zoom=[0.3, 0.6]", "data.zoom_prob=1.0"])
    result = train(cfg)
    model = defocus.load_model(result.model_path)
    assert model.config["name"] == "rdffnet"
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 64))
    assert len(out) == 4 and len(out[3]) == 5     # four side depth maps + the final depth map
    assert float(rows(tmp_path / "log.csv")[-1]["depth"]) > 0


def test_a_missing_teacher_is_a_clear_error(tmp_path):
    cfg = load_config(REPO / "configs" / "smoke_stage2.yaml", [f"output_dir={tmp_path}", "teacher_bootstrap=null"])
    with pytest.raises(ValueError, match="teacher_checkpoint"):
        train(cfg)
