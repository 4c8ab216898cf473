"""The model registry as a typed table."""
from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

import defocus
from defocus.cli import app
from defocus.convert import AUTHORS_CLASSES
from defocus.models import MODELS, ModelSpec, create_model, get_model_spec, list_models


def test_specs_are_frozen_and_typed():
    spec = get_model_spec("dffnet_no_dffm")
    assert isinstance(spec, ModelSpec) and spec.decoder_options == {"dffm": False} and spec.uses_rfb
    assert not get_model_spec("pdnet").uses_rfb and get_model_spec("dffnet_vgg16").default_backbone == "vgg16"
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"
    with pytest.raises(TypeError):
        MODELS["new"] = spec
    with pytest.raises(ValueError, match="unknown model 'nope'; available: dffnet"):
        get_model_spec("nope")


def test_pretrained_names_are_the_authors_released_variants():
    assert list_models(pretrained=True) == list(AUTHORS_CLASSES)
    assert "dffnet_vgg16" in list_models() and "dffnet_vgg16" not in list_models(pretrained=True)


def test_spec_options_reach_the_decoder_and_the_config():
    model = create_model("rdffnet", backbone="resnet18", final_depth_head=False)
    assert model.decoder.depth_heads and model.decoder.depth_head is None
    assert model.config["final_depth_head"] is False and model.rfbs is not None


def test_models_command_lists_the_table():
    out = CliRunner().invoke(app, ["models", "--pretrained"]).output
    assert [line.split()[0] for line in out.splitlines()] == defocus.list_pretrained() == ["default"]
    assert "dffnet_vgg16" in CliRunner().invoke(app, ["models"]).output
