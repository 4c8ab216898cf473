"""Schedules, resumable data order and checkpoint files of the training engine."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from defocus.config import load_config
from defocus.engine.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from defocus.engine.sampling import ResumableSampler, SeededDataset
from defocus.engine.schedules import distill_weight, lr_factor, run_epochs, schedule_epoch, total_steps


def test_epoch_poly_schedule_matches_the_reference_numbers():
    o = load_config().optim
    assert run_epochs(o) == 74
    assert 1e-4 * lr_factor(o, 1, 0) == pytest.approx(9.89e-5, abs=5e-8)
    assert 1e-4 * lr_factor(o, 74, 10_000) == pytest.approx(9.72e-6, abs=5e-9)
    assert lr_factor(o, 10, 0) == lr_factor(o, 10, 99)   # constant within an epoch
    assert total_steps(o, 100) == 7400                    # CUHK-TR-1: 604 // 6 = 100 batches per epoch
    o75 = load_config(None, ["skip_last_epoch=false"]).optim
    assert run_epochs(o75) == 75


def test_iteration_poly_schedule_and_virtual_epochs():
    o = load_config(None, ["max_iters=1000"]).optim
    assert lr_factor(o, 1, 0) == 1.0
    assert lr_factor(o, 1, 500) == pytest.approx(0.5 ** 0.9)
    assert total_steps(o, 3) == 1000
    assert schedule_epoch(o, 1, 0) == 1 and schedule_epoch(o, 1, 999) == 74
    assert load_config(None, ["schedule=constant"]).optim.schedule == "constant"
    assert lr_factor(load_config(None, ["schedule=constant"]).optim, 50, 0) == 1.0


def test_distillation_weight_schedule():
    cfg = load_config()
    lam = [distill_weight(cfg.distill, cfg.optim, e, 0) for e in range(1, 75)]
    assert lam[:14] == [3.0] * 14 and lam[14] == 0.0
    assert lam[15] == pytest.approx(0.05) and lam[-1] == pytest.approx(2.95)
    const = load_config(None, ["lambda_schedule=constant", "lambda_value=2"])
    assert distill_weight(const.distill, const.optim, 15, 0) == 2.0


def test_sampler_resumes_mid_epoch_and_shards_disjointly():
    data = list(range(11))
    full = ResumableSampler(data, shuffle=True, seed=42)
    full.set_position(3)
    order = list(full)
    part = ResumableSampler(data, shuffle=True, seed=42)
    part.set_position(3, start=4)
    assert list(part) == order[4:] and len(part) == len(order) - 4
    assert all(e == 3 for e, _ in order)
    full.set_position(4)
    assert [i for _, i in full] != [i for _, i in order]          # a new permutation each epoch
    shards = []
    for rank in range(2):
        s = ResumableSampler(data, num_replicas=2, rank=rank, shuffle=True, seed=42, drop_last=True)
        s.set_position(0)
        shards.append([i for _, i in s])
    assert len(shards[0]) == len(shards[1]) == 5 and not set(shards[0]) & set(shards[1])


def test_batches_grouped_by_shape_hold_one_shape_each_and_resume_mid_epoch():
    from defocus.engine.sampling import group_in_batches

    keys = ["a", "b", "a", "b", "b", "a", "b", "a", "a", "b", "a"]
    assert group_in_batches(range(11), keys, 2) == [0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9]   # 9 (b) left alone, last
    data = list(range(11))
    full = ResumableSampler(data, seed=42, shape_keys=keys, batch_size=3)
    full.set_position(1)
    order = [i for _, i in full]
    assert sorted(order) == data                                          # every item once
    runs = [order[k:k + 3] for k in range(0, 9, 3)]
    assert all(len({keys[i] for i in run}) == 1 for run in runs)          # full batches: one shape each
    part = ResumableSampler(data, seed=42, shape_keys=keys, batch_size=3)
    part.set_position(1, start=3)
    assert [i for _, i in part] == order[3:]
    with pytest.raises(ValueError, match="one key per item"):
        ResumableSampler(data, shape_keys=keys[:5], batch_size=3)


class RandomItems(torch.utils.data.Dataset):
    """Items made only of global random draws (as random augmentation would be)."""

    def __init__(self):
        self.epochs = []

    def __len__(self):
        return 4

    def set_epoch(self, e):
        self.epochs.append(e)

    def __getitem__(self, i):
        return (random.random(), float(np.random.rand()), float(torch.rand(())))


def test_seeded_dataset_depends_only_on_seed_epoch_and_index():
    base = RandomItems()
    ds = SeededDataset(base, seed=7)
    a = ds[(0, 2)]
    torch.manual_seed(99)
    np.random.seed(3)
    state = (random.getstate(), torch.get_rng_state())
    b = [ds[(0, i)] for i in (3, 1, 2)][-1]
    assert a == b
    assert ds[(1, 2)] != a and ds[(0, 3)] != a
    assert random.getstate() == state[0] and torch.equal(torch.get_rng_state(), state[1])   # restored
    assert base.epochs == [0, 1, 0]
    assert SeededDataset(RandomItems(), seed=8)[(0, 2)] != a


def test_checkpoint_round_trip_with_rng_states(tmp_path):
    state = capture_rng()
    expected = (random.random(), np.random.rand(), torch.rand(()).item())
    opt = torch.optim.Adam([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    path = save_checkpoint({"rng": state, "opt": opt.state_dict(), "step": 5, "cfg": {"a": [1, 2]}},
                           tmp_path / "sub" / "c.pt")
    assert sorted(p.name for p in path.parent.iterdir()) == ["c.pt"]   # no temporary file left behind
    loaded = load_checkpoint(path)
    restore_rng(loaded["rng"])
    assert (random.random(), np.random.rand(), torch.rand(()).item()) == expected
    assert loaded["step"] == 5 and loaded["cfg"] == {"a": [1, 2]}
    torch.save({"x": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a defocus training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_model_init_loads_a_saved_network_strictly(tmp_path):
    from conftest import TINY_BACKBONE
    from defocus.engine.stages import build_student
    from defocus.models import create_model, save_model

    torch.manual_seed(1)
    saved = create_model("dffnet", backbone=TINY_BACKBONE)
    save_model(saved, tmp_path / "a.safetensors", dtype=torch.float16)
    save_checkpoint({"model": saved.state_dict(), "step": 7}, tmp_path / "ckpt.pt")
    for source in ("a.safetensors", "ckpt.pt"):
        cfg = load_config(None, [f"model.backbone={TINY_BACKBONE}", "model.pretrained=false",
                                 f"model.init={tmp_path / source}"])
        student = build_student(cfg)
        tol = 1e-3 if source.endswith("safetensors") else 0  # the first file was stored in float16
        for (k, a), b in zip(student.state_dict().items(), saved.state_dict().values()):
            assert torch.allclose(a.float(), b.float(), atol=tol, rtol=tol), k
    other = create_model("pdnet", backbone=TINY_BACKBONE)
    save_model(other, tmp_path / "other.safetensors")
    cfg = load_config(None, [f"model.backbone={TINY_BACKBONE}", "model.pretrained=false",
                             f"model.init={tmp_path / 'other.safetensors'}"])
    with pytest.raises(RuntimeError):
        build_student(cfg)


def test_model_init_default_fine_tunes_the_bundled_model():
    from defocus.engine.stages import build_student
    from defocus.models import load_model
    from defocus.inference import bundled_weights

    cfg = load_config(None, ["model.backbone=tf_efficientnet_lite2", "model.pretrained=false", "model.init=default"])
    student = build_student(cfg)
    bundled = load_model(bundled_weights()).state_dict()
    for k, v in student.state_dict().items():
        assert torch.equal(v.float(), bundled[k].float()), k
