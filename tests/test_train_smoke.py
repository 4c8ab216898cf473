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
    log = rows(tmp_path / "log.csv")
    assert float(log[-1]["depth"]) > 0
    heads = [float(log[-1][f"depth{k}"]) for k in range(1, 6)]   # each depth output's own term, as documented
    assert min(heads) > 0 and abs(sum(heads) - float(log[-1]["depth"])) < 1e-3


def test_a_missing_teacher_is_a_clear_error(tmp_path):
    cfg = load_config(REPO / "configs" / "smoke_stage2.yaml", [f"output_dir={tmp_path}", "teacher_bootstrap=null"])
    with pytest.raises(ValueError, match="teacher_checkpoint"):
        train(cfg)


# ----------------------------------------------------------------------------------------------------------------
# Stage 2 with a teacher it trains first: interruption, resume and set-up errors before the teacher trains
# ----------------------------------------------------------------------------------------------------------------

def stage2_config(tmp_path, *sets, teacher_iters=6):
    """smoke_stage2 (procedural data, no data set needed) whose bootstrap teacher trains ``teacher_iters`` steps."""
    boot = tmp_path / "teacher_recipe.yaml"
    tmp_path.mkdir(parents=True, exist_ok=True)
    boot.write_text(f"base: {REPO / 'configs' / 'smoke_stage1.yaml'}\noptim:\n  max_iters: {teacher_iters}\n")
    return load_config(REPO / "configs" / "smoke_stage2.yaml",
                       [f"output_dir={tmp_path / 'run'}", "progress=false", f"distill.teacher_bootstrap={boot}",
                        "optim.max_iters=2", *sets])


def test_a_signal_while_the_teacher_trains_stops_the_run_and_the_resume_continues_the_teacher(tmp_path,
                                                                                             monkeypatch):
    import os
    import signal

    from defocus.engine import TeacherInterrupted, Trainer
    from defocus.models.io import read_metadata

    real_step, sent = Trainer.train_step, []

    def step_then_signal(self, batch):
        out = real_step(self, batch)
        if self.cfg.stage == "stage1" and self.step == 2 and not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
    with pytest.raises(TeacherInterrupted) as stopped:
        train(stage2_config(tmp_path))
    teacher = tmp_path / "run" / "teacher"
    assert stopped.value.result.interrupted == "SIGTERM" and stopped.value.result.step == 3
    assert read_metadata(teacher / "model.safetensors")["complete"] == "False"
    assert not (tmp_path / "run" / "checkpoint.pt").exists()            # stage 2 did not start with it
    result = train(stage2_config(tmp_path, "engine.resume=auto"))
    meta = read_metadata(teacher / "model.safetensors")
    assert result.complete and meta["complete"] == "True" and meta["step"] == "6"
    assert [r["step"] for r in rows(teacher / "log.csv")] == [str(k) for k in range(1, 7)]


@pytest.mark.parametrize("weights, error", [("missing.pt", FileNotFoundError), ("notes.pt", ValueError)])
def test_a_bad_depth_teacher_file_fails_before_the_teacher_trains(tmp_path, weights, error):
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    # the MiDaS-sized network (the tiny test one loads no weights), its file checked before anything trains
    cfg = stage2_config(tmp_path, "distill.depth_kwargs={}", f"distill.depth_weights={tmp_path / weights}")
    with pytest.raises(error, match="depth_weights"):
        train(cfg)
    assert not (tmp_path / "run" / "teacher").exists()


def test_a_resume_with_other_settings_fails_before_the_teacher_trains(tmp_path):
    from defocus.models import create_model, save_model

    given = tmp_path / "stage1_run"
    save_model(create_model("dffnet", backbone="resnet18"), given / "model.safetensors")
    first = train(stage2_config(tmp_path, f"distill.teacher_checkpoint={given}"))   # a run folder names its model
    assert first.complete
    with pytest.raises(ValueError, match="teacher_checkpoint"):
        train(stage2_config(tmp_path, "engine.resume=auto"))                        # the setting left out
    assert not (tmp_path / "run" / "teacher").exists()
    with pytest.raises(FileNotFoundError, match="teacher_checkpoint"):
        train(stage2_config(tmp_path / "other", f"distill.teacher_checkpoint={tmp_path / 'nowhere'}"))
