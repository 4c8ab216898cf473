"""Training configs: recipe defaults, YAML presets with ``base:`` inheritance, ``key=value`` overrides."""
from __future__ import annotations

from pathlib import Path

import pytest

from defocus.config import apply_overrides, dump_config, find_config, load_config
from defocus.data.registry import get_spec
from defocus.data.synth import config_from_dict

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "configs").glob("*.yaml"))


def test_defaults_are_the_reference_recipe():
    cfg = load_config()
    assert cfg.stage == "stage1" and cfg.seed == 42
    assert (cfg.model.name, cfg.model.pretrained) == ("dffnet", True)
    assert (cfg.optim.lr, cfg.optim.epochs, cfg.optim.skip_last_epoch) == (1e-4, 75, True)
    assert (cfg.optim.poly_power, cfg.optim.poly_offset, cfg.optim.grad_clamp) == (0.9, 5, 0.5)
    assert (cfg.data.batch_size, cfg.data.size, cfg.data.hflip, cfg.data.jitter) == (6, 320, 0.5, 0.1)
    assert (cfg.loss.beta, cfg.loss.edge_reduction, cfg.loss.edge_padding) == (0.5, "sum", "zeros")
    d = cfg.distill
    assert (d.lambda_value, d.lambda_switch, d.projector_lr, d.projector_weight_decay, d.teacher_mode) == \
        (3.0, 15, 0.1, 5e-4, "train")


def test_overrides_short_and_dotted_keys_with_type_conversion():
    cfg = load_config(None, ["lr=3e-4", "optim.epochs=10", "batch_size=2", "pretrained=false",
                             "depth_kwargs={tiny: true}", "output_dir=/tmp/x", "max_iters=100", "amp=bf16",
                             "final_weight=1.1"])
    assert cfg.optim.lr == 3e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.epochs == 10 and cfg.data.batch_size == 2
    assert cfg.model.pretrained is False
    assert cfg.distill.depth_kwargs == {"tiny": True}
    assert cfg.output_dir == "/tmp/x" and cfg.optim.max_iters == 100 and cfg.engine.amp == "bf16"
    assert cfg.loss.final_weight == 1.1
    assert load_config(None, ["pretrained=/w/resnest.pth"]).model.pretrained == "/w/resnest.pth"
    assert load_config(None, ["max_iters=null"]).optim.max_iters is None


@pytest.mark.parametrize("item, message", [
    ("lr", "key=value"),
    ("learning_rate=1", "unknown config key"),
    ("optim.nope=1", "unknown key"),
    ("batch_size=six", "batch_size"),
    ("stage=stage3", "stage must be one of"),
    ("optim=1", "names a section"),
])
def test_bad_overrides_are_reported(item, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [item])


def test_dotted_override_into_a_nested_mapping():
    d = apply_overrides({"data": {"size": 320}}, ["data.synthetic={sources: [a], length: 4}"])
    assert d["data"] == {"size": 320, "synthetic": {"sources": ["a"], "length": 4}}


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_loads(path, tmp_path):
    cfg = load_config(path, [f"output_dir={tmp_path}"])
    assert cfg.stage in ("stage1", "stage2", "rdffnet")
    for entry in cfg.data.train:
        get_spec(entry["name"])   # a registered dataset
    if cfg.data.synthetic is not None:
        config_from_dict(cfg.data.synthetic.get("cfg", {}))   # every renderer knob exists and is valid
    dump_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again.to_dict() == {**cfg.to_dict(), "config_dir": cfg.config_dir}


def test_paper_presets_follow_the_method():
    s1 = load_config(REPO / "configs" / "paper_cuhk_tr1_stage1.yaml")
    s2 = load_config(REPO / "configs" / "paper_cuhk_tr1_stage2.yaml")
    assert s1.model.backbone == "resnest101e" and s1.data.train == [{"name": "cuhk-tr1"}]
    assert s2.stage == "stage2" and s2.loss.final_weight == 1.1
    assert s2.data.train == s1.data.train and s2.optim == s1.optim      # inherited from stage 1
    assert s2.distill.teacher_checkpoint == "runs/paper_cuhk_tr1/stage1/model.safetensors"
    dut = load_config(REPO / "configs" / "paper_cuhk_dut_stage2.yaml")
    assert dut.data.train == [{"name": "cuhk-tr1+dut-tr"}] and dut.loss.final_weight == 1.1
    assert dut.distill.teacher_checkpoint.startswith("runs/paper_cuhk_dut/stage1")
    r = load_config(REPO / "configs" / "paper_cuhk_tr1_rdffnet.yaml")
    assert r.stage == "rdffnet" and r.model.name == "rdffnet" and r.loss.depth_loss == "l1"
    lite = load_config(REPO / "configs" / "synth_lite0_stage1.yaml")
    assert lite.model.backbone == "tf_efficientnet_lite0" and lite.model.pretrained is True
    assert lite.data.synthetic["sources"] == ["../shared/data/natural"] and lite.optim.max_iters


def test_find_config_by_preset_name(monkeypatch):
    monkeypatch.chdir(REPO)
    assert find_config("smoke_stage1").resolve() == (REPO / "configs" / "smoke_stage1.yaml").resolve()
    with pytest.raises(FileNotFoundError, match="no_such_preset"):
        find_config("no_such_preset")
