"""Training configs: recipe defaults, YAML presets with ``base:`` inheritance, ``key=value`` overrides."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from defocus.config import (DatasetEntry, TrainConfig, apply_overrides, deep_merge, dump_config, find_config,
                            load_config, read_yaml, to_plain)
from defocus.data.registry import get_spec
from defocus.data.synth import SharpnessTest, SynthConfig, config_from_dict

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
    assert cfg.distill.depth_kwargs.as_kwargs() == {"tiny": True}
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


def test_zoom_is_off_by_default_and_checked():
    assert load_config().data.zoom is None
    cfg = load_config(None, ["data.zoom=[0.25, 1.0]", "data.zoom_prob=0.3"])
    assert (cfg.data.zoom, cfg.data.zoom_prob) == ((0.25, 1.0), 0.3)
    with pytest.raises(ValueError, match=r"^data\.zoom: expected \[low, high\]"):
        load_config(None, ["data.zoom=[0.5, 2.0]"])
    with pytest.raises(ValueError, match=r"^data\.zoom_prob: expected a probability"):
        load_config(None, ["data.zoom_prob=1.5"])


def test_dotted_override_into_a_nested_mapping():
    d = apply_overrides({"data": {"size": 320}}, ["data.synthetic={sources: [a], length: 4}"])
    assert d["data"] == {"size": 320, "synthetic": {"sources": ["a"], "length": 4}}


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_loads(path, tmp_path):
    cfg = load_config(path, [f"output_dir={tmp_path}"])
    assert cfg.stage in ("stage1", "stage2", "rdffnet")
    for entry in cfg.data.train:
        get_spec(entry.name)   # a registered dataset
    if cfg.data.synthetic is not None:
        assert isinstance(cfg.data.synthetic.cfg, SynthConfig)   # every renderer knob exists and is valid
    dump_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again.to_dict() == {**cfg.to_dict(), "config_dir": cfg.config_dir}


def test_paper_presets_follow_the_method():
    s1 = load_config(REPO / "configs" / "paper_cuhk_tr1_stage1.yaml")
    s2 = load_config(REPO / "configs" / "paper_cuhk_tr1_stage2.yaml")
    assert s1.model.backbone == "resnest101e" and s1.data.train == (DatasetEntry("cuhk-tr1"),)
    assert s2.stage == "stage2" and s2.loss.final_weight == 1.1
    assert s2.data.train == s1.data.train and s2.optim == s1.optim      # inherited from stage 1
    assert s2.distill.teacher_checkpoint == "runs/paper_cuhk_tr1/stage1/model.safetensors"
    dut = load_config(REPO / "configs" / "paper_cuhk_dut_stage2.yaml")
    assert dut.data.train == (DatasetEntry("cuhk-tr1+dut-tr"),) and dut.loss.final_weight == 1.1
    assert dut.distill.teacher_checkpoint.startswith("runs/paper_cuhk_dut/stage1")
    r = load_config(REPO / "configs" / "paper_cuhk_tr1_rdffnet.yaml")
    assert r.stage == "rdffnet" and r.model.name == "rdffnet" and r.loss.depth_loss == "l1"
    lite = load_config(REPO / "configs" / "synth_lite0_stage1.yaml")
    assert lite.model.backbone == "tf_efficientnet_lite0" and lite.model.pretrained is True
    assert lite.data.synthetic.sources == ("../shared/data/natural",) and lite.optim.max_iters


def test_find_config_by_preset_name(monkeypatch):
    monkeypatch.chdir(REPO)
    assert find_config("smoke_stage1").resolve() == (REPO / "configs" / "smoke_stage1.yaml").resolve()
    with pytest.raises(FileNotFoundError, match="no_such_preset"):
        find_config("no_such_preset")
    with pytest.raises(FileNotFoundError, match="elsewhere/smoke_stage1.yaml: no such config file"):
        find_config("elsewhere/smoke_stage1.yaml")     # a path is never swapped for the preset of its name


def test_a_teacher_bootstrap_is_relative_to_the_file_that_names_it(tmp_path):
    (tmp_path / "mine.yaml").write_text(f"base: {REPO / 'configs' / 'smoke_stage2.yaml'}\n")
    cfg = load_config(tmp_path / "mine.yaml")
    assert Path(cfg.distill.teacher_bootstrap) == (REPO / "configs" / "smoke_stage1.yaml").resolve()


def _assert_given(expected, resolved, key="config"):
    """Every value in ``expected`` (plain YAML data) is the resolved value at the same key."""
    if isinstance(expected, dict):
        assert isinstance(resolved, dict), key
        for k, v in expected.items():
            assert k in resolved, f"{key}.{k} dropped"
            _assert_given(v, resolved[k], f"{key}.{k}")
    elif isinstance(expected, list):
        assert isinstance(resolved, list) and len(resolved) == len(expected), key
        for i, (a, b) in enumerate(zip(expected, resolved)):
            _assert_given(a, b, f"{key}[{i}]")
    else:
        assert type(resolved) in (type(expected), float), f"{key}: {resolved!r} is not {expected!r}"
        assert resolved == expected, f"{key}: {resolved!r} != {expected!r}"


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_means_what_its_file_says(path):
    """The typed config of a preset holds each value of its file (and its base chain) at the same key, and the
    defaults everywhere else; the renderer settings are the SynthConfig the file's ``cfg`` gives."""
    raw = read_yaml(path)
    cfg = load_config(path)
    expected = deep_merge({k: v for k, v in TrainConfig().to_dict().items() if k != "config_dir"}, raw)
    _assert_given(expected, cfg.to_dict())
    for i, entry in enumerate(raw.get("data", {}).get("train") or []):
        given = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()}
        assert cfg.data.train[i] == DatasetEntry(**given)
    synthetic = raw.get("data", {}).get("synthetic")
    if synthetic is not None:
        s = cfg.data.synthetic
        assert s.sources == tuple(synthetic["sources"]) and s.length == synthetic.get("length")
        assert s.seed == synthetic.get("seed")          # None: the run's seed renders
        given = {k: tuple(v) if isinstance(v, list) else v for k, v in (synthetic.get("cfg") or {}).items()}
        assert s.cfg == SynthConfig(**{**given, "size": cfg.data.size})       # rendered at the training size
        assert s.cfg == replace(config_from_dict(synthetic.get("cfg") or {}), size=cfg.data.size)


def test_sections_are_typed_and_frozen():
    cfg = load_config(REPO / "configs" / "bundled_lite0_paste.yaml", [
        "data.val={name: folder, root: /v, mask_white: blur}", "model_kwargs={dffm: false}",
        "depth_kwargs={tiny: true, tiny_width: 4}", "data.synthetic.cfg.sharpness={threshold: 0.5}"])
    syn = cfg.data.synthetic
    assert syn.cfg.paste_prob == 0.5 and syn.cfg.blur_radius == (1.6, 10.0) and syn.seed == 3
    assert syn.cfg.sharpness == SharpnessTest(threshold=0.5)
    assert syn.cfg.jpeg_quality == (75, 95)     # untouched knobs keep the renderer's defaults
    assert cfg.data.val == DatasetEntry("folder", root="/v", mask_white="blur")
    assert cfg.data.val.dataset_kwargs("/d", "l.txt")["root"] == "/v"
    assert cfg.data.val.dataset_kwargs("/d", "l.txt")["list_file"] == "l.txt"
    assert cfg.model.model_kwargs.as_kwargs() == {"dffm": False}
    assert cfg.distill.depth_kwargs.as_kwargs() == {"tiny": True, "tiny_width": 4}
    assert cfg.optim.betas == (0.9, 0.999)
    with pytest.raises(AttributeError):
        cfg.optim.lr = 1.0
    pair = load_config(None, ["data.synthetic={sources: [[a/images, a/masks], b], cfg: {blur_radius: [3, 9]}}"])
    assert pair.data.synthetic.sources == (("a/images", "a/masks"), "b")
    assert pair.data.synthetic.cfg.blur_radius == (3.0, 9.0)


def test_typed_synthetic_section_builds_the_renderer():
    from defocus.engine.data import build_synthetic

    cfg = load_config(REPO / "configs" / "smoke_stage1.yaml", ["data.synthetic.cfg.p_far=0"])
    ds = build_synthetic(cfg.data.synthetic, cfg.data.size, None, cfg.seed)
    assert len(ds) == 8 and ds.seed == cfg.seed and ds.cfg.p_far == 0.0
    assert ds.cfg.size == cfg.data.synthetic.cfg.size == cfg.data.size == 64
    seeded = load_config(REPO / "configs" / "smoke_stage1.yaml", ["data.synthetic.seed=7"])
    assert build_synthetic(seeded.data.synthetic, 64, None, cfg.seed).seed == 7


@pytest.mark.parametrize("item, message", [
    ("data.train=[{name: cuhk-tr9}]", r"^data\.train\[0\]\.name: unknown dataset 'cuhk-tr9'"),
    ("data.train=[{root: /d}]", r"^data\.train\[0\]\.name: missing"),
    ("data.train=[{name: cuhk-tr1, roots: /d}]", r"^data\.train\[0\]\.roots: unknown key"),
    ("data.train=[{name: folder, strict: perhaps}]", r"^data\.train\[0\]\.strict: expected true/false"),
    ("data.train=cuhk-tr1", r"^data\.train: expected a list"),
    ("data.val={name: folder, mask_white: up}", r"^data\.val\.mask_white: polarity must be"),
    ("data.synthetic={length: 8}", r"^data\.synthetic\.sources: missing"),
    ("data.synthetic={sources: []}", r"^data\.synthetic\.sources: give at least one"),
    ("data.synthetic.length=many", r"^data\.synthetic\.length: expected an integer"),
    ("data.synthetic.cfg.p_nears=1", r"^data\.synthetic\.cfg\.p_nears: unknown key"),
    ("data.synthetic.cfg.blur_radius=[1, x]", r"^data\.synthetic\.cfg\.blur_radius\[1\]: expected a number"),
    ("data.synthetic.cfg.focus_threshold=5", r"^data\.synthetic\.cfg: focus_threshold must lie between"),
    ("data.synthetic.cfg.sharpness.window=wide", r"^data\.synthetic\.cfg\.sharpness\.window: expected an int"),
    ("model_kwargs={dffm: 3}", r"^model\.model_kwargs\.dffm: expected true/false"),
    ("depth_kwargs={tiniest: true}", r"^distill\.depth_kwargs\.tiniest: unknown key"),
    ("betas=[0.9]", r"^optim\.betas: expected 2 values"),
    ("pretrained=[1]", r"^model\.pretrained: cannot use"),
    ("seed=1.5", r"^seed: expected an integer"),
    ("schedule=cosine", r"^optim\.schedule: expected one of poly, constant"),
    ("amp=fp32", r"^engine\.amp: expected one of none, bf16, fp16"),
    ("distill.lambda_schedule=Paper", r"^distill\.lambda_schedule: expected one of paper, constant"),
    ("distill.teacher_mode=frozen", r"^distill\.teacher_mode: expected one of train, eval"),
    ("loss.edge_reduction=max", r"^loss\.edge_reduction: expected one of sum, mean"),
    ("loss.depth_loss=huber", r"^loss\.depth_loss: expected one of l1, l2"),
])
def test_bad_values_are_one_line_naming_the_key(item, message):
    with pytest.raises(ValueError, match=message) as err:
        load_config(REPO / "configs" / "smoke_stage1.yaml", [item])
    assert "\n" not in str(err.value)


def test_plain_form_round_trips():
    cfg = load_config(REPO / "configs" / "bundled_lite0_swap.yaml", ["depth_kwargs={mean: [0.5, 0.5, 0.5]}"])
    plain = cfg.to_dict()
    assert plain["data"]["synthetic"]["cfg"]["blur_radius"] == [1.3, 10.0] and plain["optim"]["betas"] == [0.9, 0.999]
    assert load_config() == TrainConfig()
    from defocus.config import from_dict

    assert from_dict(plain) == cfg and to_plain(from_dict(plain)) == plain
