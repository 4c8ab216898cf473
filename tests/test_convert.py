"""Conversion of the authors' checkpoints, built synthetically from the reference manifest of their names/shapes.

Each synthetic tensor is a view at a distinct offset into one shared random storage, so every tensor has
distinct values (equality identifies where a tensor landed) while the file stays small.
"""
from __future__ import annotations

import json

import pytest
import torch

from defocus.convert import (AUTHORS_CLASSES, CheckpointMismatchError, convert_checkpoint, convert_state_dict,
                             detect_arch, load_authors_checkpoint, unwrap_state_dict)
from defocus.models import load_model, read_metadata

ARCHS = list(AUTHORS_CLASSES)


@pytest.fixture(scope="module")
def manifest(shared_dir):
    data = json.loads((shared_dir / "reference" / "official_dffnet_state_dicts.json").read_text())
    assert data["source_class_names"] == AUTHORS_CLASSES
    return data["state_dicts"]


def synthetic_state_dict(shapes: dict, seed: int = 0) -> dict:
    """Random tensors with the manifest's names and shapes (int64 counters for ``num_batches_tracked``)."""
    numels = [torch.Size(s).numel() for s in shapes.values()]
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(max(numels) + 4 * len(shapes), generator=g)
    sd = {}
    for i, (name, shape) in enumerate(shapes.items()):
        if name.endswith("num_batches_tracked"):
            sd[name] = torch.tensor(1000 + i, dtype=torch.long)
        else:
            sd[name] = base[4 * i: 4 * i + numels[i]].view(shape)
    return sd


@pytest.fixture(scope="module")
def authors_files(manifest, tmp_path_factory):
    """One synthetic authors' .pth per released variant: {arch: (path, state dict)}."""
    root = tmp_path_factory.mktemp("authors")
    out = {}
    for seed, arch in enumerate(ARCHS):
        sd = synthetic_state_dict(manifest[arch], seed)
        if arch == "dffnet_no_dffm":  # as trained: the DFFM convolutions never ran, so never counted a batch
            sd.update({f"agg1.conv_upsample{i}.bn.num_batches_tracked": torch.tensor(0) for i in (1, 2, 3, 6)})
        path = root / f"{arch}.pth"
        torch.save(sd, path)
        out[arch] = (path, sd)
    return out


@pytest.fixture(scope="module")
def converted(authors_files):
    """{arch: (model, report, authors' state dict)}, each converted from its file (one ResNeSt build each)."""
    out = {}
    for arch, (path, sd) in authors_files.items():
        model, report = load_authors_checkpoint(path)
        out[arch] = (model, report, sd)
    return out


def test_dffnet_and_its_variant_without_dffm_are_told_apart_by_their_batchnorm_counters(authors_files, caplog):
    from defocus.models.authors import dffm_never_ran

    assert detect_arch(authors_files["dffnet_no_dffm"][1]) == "dffnet_no_dffm"
    assert detect_arch(authors_files["dffnet"][1]) == "dffnet"
    untrained = {k: torch.tensor(0) if k.endswith("num_batches_tracked") else v
                 for k, v in authors_files["dffnet_no_dffm"][1].items()}
    assert not dffm_never_ran(untrained) and detect_arch(untrained) == "dffnet"   # cannot tell: the default
    with caplog.at_level("WARNING", logger="defocus.models.authors"):
        _, report = convert_state_dict(authors_files["dffnet_no_dffm"][1], arch="dffnet")
    assert report.arch == "dffnet" and "never ran in training" in caplog.text


def test_variant_detection(manifest):
    expected = {"dffnet": "dffnet", "dffnet_no_dffm": "dffnet", "dffnet_no_attention": "dffnet_no_attention",
                "pdnet": "pdnet", "rdffnet": "rdffnet"}
    for arch, shapes in manifest.items():
        assert detect_arch(dict.fromkeys(shapes)) == expected[arch]


@pytest.mark.parametrize("arch", ARCHS)
def test_every_tensor_is_used_or_a_known_unused_copy(converted, manifest, arch):
    model, report, sd = converted[arch]
    assert report.arch == arch
    assert report.loaded == len(model.state_dict())
    assert report.loaded + len(report.dropped) == len(manifest[arch])
    dropped_groups = {k.split(".")[1] if k.startswith("resnest.") else k.split(".")[0] for k in report.dropped}
    if arch == "pdnet":
        assert dropped_groups == {"layer3_2", "layer4_2", "rfb1_1", "rfb2_1", "rfb3_1", "rfb4_1"}
    elif arch == "dffnet_no_dffm":
        assert dropped_groups == {"layer3_2", "layer4_2", "agg1"}
        assert {k.split(".")[1] for k in report.dropped if k.startswith("agg1.")} == {
            "conv_upsample1", "conv_upsample2", "conv_upsample3", "conv_upsample6"}
    else:
        assert dropped_groups == {"layer3_2", "layer4_2"}
    assert not model.training


def test_tensors_land_in_the_right_modules(converted):
    model, _, sd = converted["dffnet"]
    bb, dec = model.backbone.body, model.decoder
    pairs = [
        (dec.r2_up.conv.weight, "agg1.conv_upsample6.conv.weight"),          # CB_e
        (dec.top.conv.weight, "agg1.conv_upsample4.conv.weight"),            # CB_a (T1)
        (dec.r4_to_t2.bn.running_var, "agg1.conv_upsample1.bn.running_var"),  # CB_b
        (dec.r4_up2.conv.weight, "agg1.conv_upsample2.conv.weight"),         # CB_c, shared
        (dec.r3_up.conv.weight, "agg1.conv_upsample3.conv.weight"),          # CB_d, shared
        (dec.g2_up.conv.weight, "agg1.conv_upsample5.conv.weight"),
        (dec.g3_up.conv.weight, "agg1.conv_upsample7.conv.weight"),
        (dec.g4_fuse.bn.weight, "agg1.conv_concat4.bn.weight"),
        (dec.head_conv.conv.weight, "agg1.conv4.conv.weight"),
        (dec.head.bias, "agg1.conv5.bias"),
        (dec.sides[3].bias, "agg1.side4.bias"),
        (dec.sides[0].weight, "agg1.side1.weight"),
        (dec.attention_convs[2].weight, "agg1.spatial_attention3.0.weight"),
        (bb.layer3[5].conv1.weight, "resnest.layer3_1.5.conv1.weight"),
        (bb.layer4[2].conv2.fc2.bias, "resnest.layer4_1.2.conv2.fc2.bias"),
        (bb.conv1[6].weight, "resnest.conv1.6.weight"),
        (model.rfbs[0].branch3[3].conv.weight, "rfb1_1.branch3.3.conv.weight"),
        (model.rfbs[3].conv_res.bn.bias, "rfb4_1.conv_res.bn.bias"),
    ]
    for ours, theirs in pairs:
        assert torch.equal(ours, sd[theirs]), theirs
    # the unused copy must not be what was loaded
    assert not torch.equal(bb.layer3[5].conv1.weight, sd["resnest.layer3_2.5.conv1.weight"])
    assert torch.equal(bb.layer1[0].conv2.bn0.num_batches_tracked, sd["resnest.layer1.0.conv2.bn0.num_batches_tracked"])


def test_variant_specific_modules(converted):
    pd, _, sd = converted["pdnet"]
    assert pd.rfbs is None
    assert torch.equal(pd.decoder.reduce[3].weight, sd["agg1.conv11.weight"])  # 2048 -> 32
    assert torch.equal(pd.decoder.reduce[0].bias, sd["agg1.conv44.bias"])      # 256 -> 32
    assert torch.equal(pd.decoder.top.conv.weight, sd["agg1.conv_upsample4.conv.weight"])
    rd, _, sd = converted["rdffnet"]
    assert rd.decoder.depth_head is None and rd.config["final_depth_head"] is False
    assert torch.equal(rd.decoder.depth_sides[0].weight, sd["agg1.side5.weight"])
    assert torch.equal(rd.decoder.depth_sides[3].bias, sd["agg1.side8.bias"])
    ng, _, sd = converted["dffnet_no_dffm"]
    assert not hasattr(ng.decoder, "r4_to_t2")
    assert torch.equal(ng.decoder.top.conv.weight, sd["agg1.conv_upsample4.conv.weight"])
    na, _, _ = converted["dffnet_no_attention"]
    assert not hasattr(na.decoder, "attention_convs")


def test_converted_model_runs(converted):
    """Shapes only: random weights (with running variances of either sign) give no meaningful values."""
    model, _, _ = converted["rdffnet"]
    with torch.no_grad():
        logit, feats, sides, depths = model(torch.randn(1, 3, 64, 64))
    assert logit.shape == (1, 1, 64, 64)
    assert [f.shape[1] for f in feats] == [2048, 1024, 512, 256]
    assert [d.shape[-1] for d in depths] == [4, 4, 8, 16]  # no final depth head in the authors' R-DFFNet


def test_convert_to_safetensors_and_load(authors_files, converted, tmp_path):
    path, _ = authors_files["pdnet"]
    out = tmp_path / "pdnet.safetensors"
    report = convert_checkpoint(path, out)
    assert report.arch == "pdnet"
    meta = read_metadata(out)
    assert meta["config"]["name"] == "pdnet" and meta["source_class"] == "PDnet"
    loaded = load_model(out)
    ref = converted["pdnet"][0].state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in loaded.state_dict().items())


def test_load_model_converts_authors_file_on_the_fly(authors_files, converted):
    path, _ = authors_files["dffnet_no_attention"]
    model = load_model(path)
    assert model.config["name"] == "dffnet_no_attention" and not model.training
    ref = converted["dffnet_no_attention"][0].state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())


def test_wrapped_and_prefixed_file(manifest, tmp_path):
    sd = synthetic_state_dict(manifest["dffnet_no_attention"], seed=7)
    path = tmp_path / "wrapped.pth"
    torch.save({"epoch": 74, "model": {f"module.{k}": v for k, v in sd.items()}}, path)
    model, report = load_authors_checkpoint(path)
    assert report.arch == "dffnet_no_attention"
    assert torch.equal(model.decoder.sides[1].bias, sd["agg1.side2.bias"])


def test_unwrap_variants():
    t = torch.zeros(1)
    assert unwrap_state_dict({"a.w": t}) == {"a.w": t}
    assert unwrap_state_dict({"state_dict": {"module.a.w": t}, "optimizer": {}}) == {"a.w": t}
    assert unwrap_state_dict({"model": {"state_dict": {"a.w": t}}}) == {"a.w": t}
    assert unwrap_state_dict({"state_dict": {"a.w": t}, "best_mae": torch.tensor(0.03), "epoch": 9}) == {"a.w": t}
    with pytest.raises(CheckpointMismatchError, match="no tensors"):
        unwrap_state_dict({"epoch": 3})


def test_truncated_file(manifest, tmp_path):
    sd = synthetic_state_dict({k: v for k, v in manifest["pdnet"].items() if k.startswith("agg1.")})
    path = tmp_path / "truncated.pth"
    torch.save(sd, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointMismatchError, match="truncated.pth: cannot read") as e:
        load_authors_checkpoint(path)
    assert "\n" not in str(e.value)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("hello")
    with pytest.raises(ValueError, match="notes.pth"):
        load_authors_checkpoint(path)
    with pytest.raises(CheckpointMismatchError, match="not a D-DFFNet-family"):
        convert_state_dict({"conv.weight": torch.zeros(1)})


def test_files_that_are_no_authors_checkpoint_are_named(authors_files, tmp_path):
    """A defocus file given to convert, the authors' tensors saved as safetensors (they load like the .pth), and a
    MiDaS file: each named for what it is, the path once."""
    from safetensors.torch import save_file

    from defocus.models import load_model

    path, sd = authors_files["pdnet"]
    as_safetensors = tmp_path / "pdnet.safetensors"
    save_file({k: v.clone() for k, v in sd.items()}, as_safetensors)
    assert load_model(as_safetensors).config["name"] == "pdnet"
    convert_checkpoint(as_safetensors, tmp_path / "ours.safetensors")
    with pytest.raises(ValueError, match="ours.safetensors: already a defocus checkpoint"):
        convert_checkpoint(tmp_path / "ours.safetensors", tmp_path / "again.safetensors")
    midas = tmp_path / "midas.pt"
    torch.save({"pretrained.layer1.0.weight": torch.zeros(1), "scratch.output_conv.4.bias": torch.zeros(1)}, midas)
    with pytest.raises(CheckpointMismatchError, match="a MiDaS depth network"):
        load_authors_checkpoint(midas)
    from defocus.inference.loading import load_network

    with pytest.raises(ValueError) as e:
        load_network(str(midas))
    assert str(e.value).count(str(midas)) == 1


def test_pickled_models_and_folders_are_named_for_what_they_are(tmp_path):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "whole.pth")
    with pytest.raises(CheckpointMismatchError, match=r"whole.pth: holds pickled Python objects "
                                                      r"\(torch.nn.modules.linear.Linear\)"):
        load_authors_checkpoint(tmp_path / "whole.pth")
    (tmp_path / "run").mkdir()
    with pytest.raises(CheckpointMismatchError, match="run: a folder, not a checkpoint file"):
        load_authors_checkpoint(tmp_path / "run")


def test_training_checkpoint_is_named_as_such(tmp_path):
    """A run's resume state given where a model is expected points to the model file beside it."""
    from defocus.engine.checkpoint import save_checkpoint
    from defocus.models import load_model

    path = save_checkpoint({"model": {"conv.weight": torch.zeros(1)}, "optimizers": {}, "step": 3},
                           tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointMismatchError, match="`defocus train` checkpoint .* model.safetensors"):
        load_authors_checkpoint(path)
    with pytest.raises(ValueError, match="model.safetensors beside it"):
        load_model(path)


def test_wrong_shape_and_missing_tensor_messages(manifest):
    """Mismatches are reported in one line with the authors' names, before any weight is loaded."""
    sd = {k: torch.empty(v) for k, v in manifest["pdnet"].items() if not k.startswith(("resnest.layer3_2",
                                                                                        "resnest.layer4_2"))}
    sd["agg1.conv5.weight"] = torch.zeros(1, 64, 1, 1)
    del sd["agg1.conv_concat3.bn.running_var"]
    sd["agg1.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError) as e:
        convert_state_dict(sd)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("does not match pdnet (PDnet)")
    assert "missing 1 (e.g. agg1.conv_concat3.bn.running_var)" in msg
    assert "agg1.conv5.weight: file (1, 64, 1, 1), expected (1, 128, 1, 1)" in msg
    assert "unexpected 1 (e.g. agg1.extra.weight)" in msg


def test_arch_must_agree_with_the_keys(manifest):
    sd = {k: torch.empty(0) for k in manifest["pdnet"]}
    with pytest.raises(CheckpointMismatchError, match="holds a pdnet .* not dffnet"):
        convert_state_dict(sd, arch="dffnet")
    with pytest.raises(CheckpointMismatchError, match="unknown variant"):
        convert_state_dict(sd, arch="dffnet_vgg16")


def test_cli_convert(authors_files, tmp_path):
    from typer.testing import CliRunner

    from defocus.cli import app

    runner = CliRunner()
    path, sd = authors_files["dffnet"]
    out = tmp_path / "ng.safetensors"
    result = runner.invoke(app, ["convert", str(path), str(out), "--arch", "dffnet_no_dffm", "--dtype", "float16"])
    assert result.exit_code == 0, result.output
    assert "dffnet_no_dffm (PDnet_ResNest_4F_SL_LA_NG)" in result.output
    meta = read_metadata(out)
    assert meta["config"]["name"] == "dffnet_no_dffm"
    bad = tmp_path / "bad.pth"
    bad.write_bytes(path.read_bytes()[:1000])
    result = runner.invoke(app, ["convert", str(bad), str(tmp_path / "bad.safetensors")])
    assert result.exit_code == 1 and "bad.pth: cannot read" in result.output
    assert not (tmp_path / "bad.safetensors").exists()
    import stat

    from defocus.atomic import UMASK

    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~UMASK  # as open() makes files, not private
    for dst in (tmp_path, tmp_path / "x.onnx"):  # a folder, or a name that says another format
        result = runner.invoke(app, ["convert", str(path), str(dst)])
        assert result.exit_code == 2 and not (tmp_path / "x.onnx").exists()
