"""`defocus models` and ``defocus.list_pretrained()``: which names load trained weights, and where they are."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import defocus
from defocus.cli import app


def test_list_pretrained_names_the_bundled_model_with_its_files():
    import defocus.bundled
    from defocus.pretrained import get_pretrained

    if defocus.bundled.bundled_onnx() is None or defocus.bundled.bundled_weights() is None:
        pytest.skip("this installation does not ship both bundled model files")
    assert defocus.list_pretrained() == ["default"]
    m = get_pretrained("default")
    assert (m.architecture, m.backbone) == ("dffnet", "tf_efficientnet_lite2")
    assert m.parameters == pytest.approx(5.41e6, rel=0.01)  # the model card's count
    assert set(m.files) == {"onnx", "safetensors"} and all(m.size_bytes(f) < 15e6 for f in m.files)
    assert m.description.endswith("512x512 input")  # read from its file, as Predictor reads it
    with pytest.raises(ValueError, match="no pretrained model"):
        get_pretrained("resnest_imagenet")


def test_without_bundled_files_nothing_is_pretrained(monkeypatch):
    import defocus.pretrained as pre

    monkeypatch.setattr(pre, "bundled_onnx", lambda: None)
    monkeypatch.setattr(pre, "bundled_weights", lambda: None)
    assert pre.list_pretrained() == []
    r = CliRunner().invoke(app, ["models"])
    assert r.exit_code == 0 and "none in this installation" in r.stdout


def test_models_command_lists_weights_and_architectures():
    r = CliRunner().invoke(app, ["models"])
    assert r.exit_code == 0, r.output
    assert "default" in r.stdout and "default.onnx" in r.stdout and "dffnet_vgg16" in r.stdout
    r = CliRunner().invoke(app, ["models", "--pretrained"])
    # only names that load weights by name; the authors' variants need their files and are listed without the flag
    assert r.exit_code == 0 and r.stdout.split() == defocus.list_pretrained()
    for name in defocus.list_models(pretrained=True):
        assert name not in r.stdout.split()
    r = CliRunner().invoke(app, ["models", "--json"])
    listing = json.loads(r.stdout)
    assert [m["name"] for m in listing["pretrained"]] == defocus.list_pretrained()
    assert "dffnet" in [a["name"] for a in listing["architectures"]]
