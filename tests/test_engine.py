"""Training engine on CPU with a tiny backbone (resnet18, random init) and 64x64 inputs: each stage learns on a
fixed batch, resume is exact, a NaN loss stops cleanly, and two gloo processes keep identical replicas."""
from __future__ import annotations

import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

import defocus
from defocus.config import load_config
from defocus.defaults import INPUT_DEFAULT_KEYS
from defocus.engine import NonFiniteLossError, Trainer
from defocus.engine.checkpoint import load_checkpoint
from defocus.models import create_model, save_model

SIZE = 64


class ToyDefocus(torch.utils.data.Dataset):
    """Left part in focus (sharp noise), right part blurred (smooth); the split column varies per item and
    a random brightness offset (drawn from torch's global generator) stands in for augmentation."""

    def __init__(self, n: int = 5, nan: bool = False):
        self.n, self.nan = n, nan

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        col = 16 + 6 * (i % 6)
        sharp = torch.randn(3, SIZE, SIZE, generator=g)
        smooth = torch.nn.functional.avg_pool2d(sharp[None], 9, 1, 4)[0]
        img = torch.where(torch.arange(SIZE) < col, sharp, smooth) + 0.1 * torch.randn(3, 1, 1)
        if self.nan:
            img = img * float("nan")
        target = (torch.arange(SIZE) < col).float().expand(1, SIZE, SIZE).clone()
        return dict(image=img, target=target, stem=f"toy{i}")


class TwoShapes(ToyDefocus):
    """ToyDefocus whose odd items are 32 rows taller (their image and target mirrored out at the bottom)."""

    def __getitem__(self, i):
        item = super().__getitem__(i)
        if i % 2:
            item["image"] = torch.cat([item["image"], item["image"].flip(1)[:, :32]], 1)
            item["target"] = torch.cat([item["target"], item["target"][:, :32]], 1)
        return item


def make_cfg(tmp_path, stage="stage1", extra=()):
    sets = [f"stage={stage}", "backbone=resnet18", "pretrained=false", "batch_size=2", "num_workers=0",
            f"output_dir={tmp_path}", "progress=false", "log_every=1", "tensorboard=false",
            "depth_kwargs={tiny: true}", f"size={SIZE}"]
    return load_config(None, sets + list(extra))


@pytest.fixture(scope="module")
def stage1_teacher(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "stage1.safetensors"
    save_model(create_model("dffnet", backbone="resnet18"), path)
    return path


def fixed_batch(n=2):
    ds = ToyDefocus(n)
    items = [ds[i] for i in range(n)]
    return {k: torch.stack([it[k] for it in items]) for k in ("image", "target")}


@pytest.mark.parametrize("stage", ["stage1", "stage2", "rdffnet"])
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(tmp_path, stage, stage1_teacher):
    cfg = make_cfg(tmp_path, stage, ["lr=1e-3", "schedule=constant", f"teacher_checkpoint={stage1_teacher}",
                                      "lambda_schedule=constant"])
    trainer = Trainer(cfg, train_dataset=ToyDefocus(4))
    batch = fixed_batch()
    losses = [trainer.train_step(batch)["loss"] for _ in range(4)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.9 * losses[0], losses


def test_stage2_keeps_teachers_frozen_and_out_of_the_student(tmp_path, stage1_teacher):
    cfg = make_cfg(tmp_path, "stage2", [f"teacher_checkpoint={stage1_teacher}", "max_iters=1"])
    trainer = Trainer(cfg, train_dataset=ToyDefocus(4))
    st = trainer.stage
    before = {k: v.clone() for k, v in st.dbd_teacher.state_dict().items() if v.is_floating_point()
              and "running" not in k}
    assert st.dbd_teacher.training and st.depth_teacher.training    # reference: train-mode BN, no grad
    assert not any(p.requires_grad for p in st.dbd_teacher.parameters())
    opt_params = {id(p) for o in trainer.optimizers.values() for g in o.param_groups for p in g["params"]}
    assert not opt_params & {id(p) for p in st.dbd_teacher.parameters()}
    assert trainer.optimizers["projectors"].param_groups[0]["lr"] == 0.1
    assert trainer.optimizers["projectors"].param_groups[0]["weight_decay"] == 5e-4
    result = trainer.fit()
    after = st.dbd_teacher.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    model = defocus.load_model(result.model_path)   # the student alone: no projector / teacher tensors
    assert set(model.state_dict()) == set(st.student.state_dict())
    cfg_eval = make_cfg(tmp_path / "eval", "stage2", [f"teacher_checkpoint={stage1_teacher}", "teacher_mode=eval"])
    assert not Trainer(cfg_eval, train_dataset=ToyDefocus(4)).stage.dbd_teacher.training


def _all_state(trainer):
    sd = {f"model.{k}": v for k, v in trainer.trainable.state_dict().items()}
    for name, opt in trainer.optimizers.items():
        for pid, s in opt.state_dict()["state"].items():
            for k, v in s.items():
                if torch.is_tensor(v):
                    sd[f"{name}.{pid}.{k}"] = v
    return sd


def test_resume_after_step_k_matches_an_uninterrupted_run(tmp_path, stage1_teacher):
    # 7 samples, batch 2, drop_last: 3 batches per epoch, so the run is cut in the middle of epoch 1.
    extra = [f"teacher_checkpoint={stage1_teacher}", "epochs=4", "skip_last_epoch=false"]
    full = Trainer(make_cfg(tmp_path / "full", "stage2", extra), train_dataset=ToyDefocus(7))
    full.fit(max_steps=3)

    first = Trainer(make_cfg(tmp_path / "cut", "stage2", extra), train_dataset=ToyDefocus(7))
    first.fit(max_steps=2)
    ckpt = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert (ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]) == (2, 0, 2)
    assert "dbd_teacher" not in str(list(ckpt["model"]))
    torch.manual_seed(1234)   # disturb the global generator: resume must restore it
    resumed = Trainer(make_cfg(tmp_path / "cut", "stage2", extra + ["resume=auto"]), train_dataset=ToyDefocus(7))
    assert resumed.step == 2
    resumed.fit(max_steps=3)

    a, b = _all_state(full), _all_state(resumed)
    assert set(a) == set(b)
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, diff[:5]
    assert resumed.step == full.step == 3
    rows = (tmp_path / "cut" / "log.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3"]


def test_nan_loss_stops_with_the_step_and_keeps_the_checkpoint(tmp_path):
    cfg = make_cfg(tmp_path, "stage1")
    Trainer(cfg, train_dataset=ToyDefocus(6)).fit(max_steps=2)
    ckpt_file = tmp_path / "checkpoint.pt"
    saved = load_checkpoint(ckpt_file)
    bad = Trainer(make_cfg(tmp_path, "stage1", ["resume=auto"]), train_dataset=ToyDefocus(6, nan=True))
    with pytest.raises(NonFiniteLossError, match=r"at step 3 \(epoch 1, batch 3/3\)"):
        bad.fit()
    again = load_checkpoint(ckpt_file)
    assert again["step"] == 2
    assert all(torch.equal(v, again["model"][k]) for k, v in saved["model"].items())
    # the model in memory was not updated with NaN gradients either
    assert all(torch.isfinite(p).all() for p in bad.stage.student.parameters())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(procs, timeout: float) -> list:
    """Start ``procs``, wait up to ``timeout`` seconds in all, kill those still running (a collective that waits
    for ever); returns their exit codes (None: killed)."""
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    codes = [p.exitcode for p in procs]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    return codes


def test_ddp_two_gloo_processes_keep_identical_replicas(tmp_path):
    seen = {}
    port = _free_port()
    ctx = mp.get_context("fork")   # children inherit the imported modules (fast start)
    procs = [ctx.Process(target=_ddp_rank_dump, args=(r, 2, port, str(tmp_path))) for r in range(2)]
    assert run_processes(procs, 120) == [0, 0]
    for r in range(2):
        seen[r] = torch.load(tmp_path / f"rank{r}.pt", weights_only=True)
    assert seen[0]["step"] == seen[1]["step"] == 2
    assert seen[0]["n_samples"] == seen[1]["n_samples"] == 4   # each rank gets its half of the 8 samples
    diff = [k for k in seen[0]["params"] if not torch.equal(seen[0]["params"][k], seen[1]["params"][k])]
    assert not diff, diff[:5]
    torch.manual_seed(42)   # the run's seed: the initial weights
    init = create_model("dffnet", backbone="resnet18").state_dict()
    moved = [k for k, v in seen[0]["params"].items() if v.is_floating_point() and not torch.equal(v, init[k])]
    assert moved   # the replicas trained (and did so identically)
    assert defocus.load_model(tmp_path / "model.safetensors") is not None


def _ddp_rank_dump(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    import torch.distributed as dist

    cfg = make_cfg(out_dir, "stage1", ["max_iters=2", "device=cpu"])
    trainer = Trainer(cfg, train_dataset=ToyDefocus(8))
    trainer.fit()
    torch.save({"step": trainer.step, "n_samples": trainer.sampler.num_samples,
                "params": trainer.stage.student.state_dict()}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def test_validation_keeps_the_best_model_and_a_budget_stops_cleanly(tmp_path):
    cfg = make_cfg(tmp_path, "stage1", ["epochs=2", "skip_last_epoch=false", "val_every=1", "val_metric=mae"])
    trainer = Trainer(cfg, train_dataset=ToyDefocus(2), val_dataset=ToyDefocus(3))
    result = trainer.fit()
    assert result.complete and result.step == 2 and result.epoch == 2
    val = (tmp_path / "val.csv").read_text().strip().splitlines()
    assert len(val) == 3 and val[0].startswith("step,epoch,n,mae,fbeta,iou")
    maes = [float(line.split(",")[3]) for line in val[1:]]
    assert result.best["metric"] == "mae" and result.best["value"] == pytest.approx(min(maes), rel=1e-5)
    assert defocus.load_model(tmp_path / "model_best.safetensors") is not None

    budget = make_cfg(tmp_path / "budget", "stage1", ["max_minutes=0"])
    short = Trainer(budget, train_dataset=ToyDefocus(4)).fit()
    assert not short.complete and short.step == 1
    assert defocus.load_model(short.model_path) is not None
    assert load_checkpoint(short.checkpoint_path)["step"] == 1


def test_a_run_folder_is_not_overwritten_and_a_resume_keeps_its_settings(tmp_path):
    Trainer(make_cfg(tmp_path, "stage1", ["max_iters=1"]), train_dataset=ToyDefocus(4)).fit()
    with pytest.raises(ValueError, match="holds another run"):  # a new run into the same folder
        Trainer(make_cfg(tmp_path, "stage1", ["max_iters=2"]), train_dataset=ToyDefocus(4))
    with pytest.raises(ValueError, match=r"optim.lr: 0.0001 -> 0.5"):
        Trainer(make_cfg(tmp_path, "stage1", ["max_iters=2", "lr=0.5", "resume=auto"]), train_dataset=ToyDefocus(4))
    resumed = Trainer(make_cfg(tmp_path, "stage1", ["max_iters=2", f"resume={tmp_path}"]),  # longer: allowed
                      train_dataset=ToyDefocus(4))
    assert resumed.step == 1 and resumed.fit().step == 2


def test_rdffnet_with_its_final_depth_head_only_trains_and_without_any_is_refused(tmp_path):
    only_final = make_cfg(tmp_path / "final", "rdffnet", ["max_iters=1", "model_kwargs={depth_heads: false}"])
    assert Trainer(only_final, train_dataset=ToyDefocus(4)).fit().step == 1
    none = make_cfg(tmp_path / "none", "rdffnet", ["model_kwargs={depth_heads: false, final_depth_head: false}"])
    with pytest.raises(ValueError, match="an R-DFFNet stage trains depth heads"):
        Trainer(none, train_dataset=ToyDefocus(4))


class RecordingToy(ToyDefocus):
    """A toy set that records the samples it hands out."""

    def __init__(self, n, seen):
        super().__init__(n)
        self.seen = seen

    def __getitem__(self, i):
        self.seen.append(i)
        return super().__getitem__(i)


def test_a_resume_with_another_batch_size_goes_on_from_the_same_sample(tmp_path):
    first, second = [], []
    Trainer(make_cfg(tmp_path, "stage1", ["max_iters=3"]), train_dataset=RecordingToy(8, first)).fit()
    resumed = Trainer(make_cfg(tmp_path, "stage1", ["max_iters=5", "batch_size=1", "resume=auto"]),
                      train_dataset=RecordingToy(8, second))
    assert resumed.fit().epoch == 1                       # 6 samples, then the last 2 of the epoch one by one
    assert len(first) == 6 and len(second) == 2 and sorted(first + second) == list(range(8))


def test_runs_never_mix_in_one_folder(tmp_path):
    from defocus.engine.trainer import folder_lock

    Trainer(make_cfg(tmp_path / "a", "stage1", ["max_iters=1"]), train_dataset=ToyDefocus(4)).fit()
    Trainer(make_cfg(tmp_path / "b", "stage1", ["max_iters=1"]), train_dataset=ToyDefocus(4)).fit()
    with pytest.raises(ValueError, match="holds another run: continuing .* would mix"):
        Trainer(make_cfg(tmp_path / "b", "stage1", ["max_iters=2", f"resume={tmp_path / 'a'}"]),
                train_dataset=ToyDefocus(4))
    branch = Trainer(make_cfg(tmp_path / "c", "stage1", ["max_iters=2", f"resume={tmp_path / 'a'}"]),
                     train_dataset=ToyDefocus(4))
    assert branch.fit().step == 2                          # into a new folder: allowed
    trainer = Trainer(make_cfg(tmp_path / "d", "stage1", ["max_iters=1"]), train_dataset=ToyDefocus(4))
    (tmp_path / "d").mkdir()
    with folder_lock(tmp_path / "d"):                      # another process trains there
        with pytest.raises(ValueError, match="another run is training into this folder"):
            trainer.fit()
    assert trainer.fit().step == 1


def test_a_folder_that_cannot_be_locked_trains_unlocked_with_a_warning(tmp_path, monkeypatch, caplog):
    import errno
    import fcntl

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with caplog.at_level("WARNING", logger="defocus.engine.trainer"):
        assert Trainer(make_cfg(tmp_path, "stage1", ["max_iters=1"]), train_dataset=ToyDefocus(4)).fit().step == 1
    assert "cannot lock the run folder" in caplog.text
    from defocus.engine.trainer import folder_lock

    with pytest.raises(KeyError) as err, folder_lock(tmp_path):   # an error of the run is not chained to it
        raise KeyError("x")
    assert err.value.__context__ is None


def test_a_resume_that_changes_the_validation_metric_keeps_the_best_model_by_the_new_one(tmp_path):
    Trainer(make_cfg(tmp_path, "stage1", ["max_iters=2", "val_every=1", "val_metric=iou"]),
            train_dataset=ToyDefocus(4), val_dataset=ToyDefocus(2)).fit()
    result = Trainer(make_cfg(tmp_path, "stage1", ["max_iters=4", "val_every=1", "val_metric=mae", "resume=auto"]),
                     train_dataset=ToyDefocus(4), val_dataset=ToyDefocus(2)).fit()
    assert result.best["metric"] == "mae" and result.best["step"] == 4


def test_iteration_mode_validates_the_epoch_that_ends_the_run(tmp_path):
    # 4 samples, batch 2: 2 batches an epoch; max_iters 4 ends exactly at the end of epoch 2
    cfg = make_cfg(tmp_path, "stage1", ["max_iters=4", "val_every=1"])
    result = Trainer(cfg, train_dataset=ToyDefocus(4), val_dataset=ToyDefocus(2)).fit()
    rows = (tmp_path / "val.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["2", "4"] and result.epoch == 2


def test_a_signal_stops_after_the_step_and_checkpoints(tmp_path):
    import os
    import signal

    trainer = Trainer(make_cfg(tmp_path, "stage1", ["max_iters=50"]), train_dataset=ToyDefocus(4))
    real_step = trainer.train_step

    def step_then_signal(batch):
        out = real_step(batch)
        if trainer.step == 2:  # the third step is running when the signal arrives
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    trainer.train_step = step_then_signal
    before = signal.getsignal(signal.SIGTERM)
    result = trainer.fit()
    assert result.interrupted == "SIGTERM" and not result.complete and result.step == 3
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back


class SmallPhotos(torch.utils.data.Dataset):
    """ToyDefocus items cut to sizes under the training size, each its own (as photos kept at their own size)."""

    sizes = [(40, 64), (64, 48), (32, 24)]

    def __len__(self):
        return len(self.sizes)

    def __getitem__(self, i):
        h, w = self.sizes[i]
        return {k: (v[..., :h, :w] if torch.is_tensor(v) else v) for k, v in ToyDefocus(3)[i].items()}


def test_batches_of_items_of_two_shapes_take_one_step_weighted_by_samples(tmp_path):
    from defocus.engine.data import batch_items, collate_by_shape

    ds = TwoShapes(4)
    mixed = collate_by_shape([ds[0], ds[1], ds[2]])
    assert [tuple(g["image"].shape) for g in mixed] == [(2, 3, 64, 64), (1, 3, 96, 64)] and batch_items(mixed) == 3
    assert isinstance(collate_by_shape([ds[0], ds[2]]), dict)            # one shape: a plain batch
    trainer = Trainer(make_cfg(tmp_path, "stage1", ["max_iters=2", "batch_size=3"]), train_dataset=TwoShapes(6))
    torch.manual_seed(0)
    one, two = (trainer.stage.compute(trainer.forward, group, 1, 0)[0].item() for group in mixed)
    torch.manual_seed(0)
    parts = trainer.train_step(mixed)
    assert parts["loss"] == pytest.approx((2 * one + two) / 3, rel=1e-5)
    result = Trainer(make_cfg(tmp_path / "fit", "stage1", ["max_iters=2", "batch_size=3"]),
                     train_dataset=TwoShapes(6)).fit()
    assert result.step == 2 and load_checkpoint(tmp_path / "fit" / "checkpoint.pt")["sample_in_epoch"] == 0


def test_frozen_batchnorm_keeps_its_statistics_while_the_weights_train(tmp_path):
    def batchnorm_state(trainer):
        bn = [m for m in trainer.stage.student.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        return [(m.running_mean.clone(), int(m.num_batches_tracked), m.weight.detach().clone()) for m in bn]

    for freeze in (True, False):
        trainer = Trainer(make_cfg(tmp_path / str(freeze), "stage1", ["max_iters=2", f"model.freeze_bn={freeze}"]),
                          train_dataset=ToyDefocus(4))
        before = batchnorm_state(trainer)
        trainer.fit()
        after = batchnorm_state(trainer)
        assert any(not torch.equal(b[2], a[2]) for b, a in zip(before, after))        # scales train either way
        kept = all(torch.equal(b[0], a[0]) and b[1] == a[1] for b, a in zip(before, after))
        assert kept == freeze


def frames_and_windows(tmp_path, frames: int = 6, windows: int = 6) -> list:
    """Settings training on ``frames`` 80x60 photos kept whole (full_frame) and ``windows`` 48x48 photos cut to
    32x32 windows."""
    from PIL import Image

    entries = []
    for name, size, full, count in (("frames", (80, 60), True, frames), ("windows", (48, 48), False, windows)):
        for k in range(count):
            for sub, mode in (("im", "RGB"), ("gt", "L")):
                (tmp_path / name / sub).mkdir(parents=True, exist_ok=True)
                Image.effect_noise(size, 40 + k).convert(mode).save(tmp_path / name / sub / f"{k}.png")
        entries.append(f"{{name: folder, image_dir: {tmp_path / name / 'im'}, mask_dir: {tmp_path / name / 'gt'}, "
                       f"full_frame: {str(full).lower()}}}")
    return [f"data.train=[{', '.join(entries)}]", "data.crop=32", "data.upscale=false"]


def test_full_frame_entries_train_in_batches_of_one_shape(tmp_path, caplog):
    trainer = Trainer(make_cfg(tmp_path / "run", "stage1", frames_and_windows(tmp_path) + ["max_iters=6"]))
    shapes, step = [], trainer.train_step

    def recording(batch):
        shapes.append(sorted({tuple(g["image"].shape) for g in (batch if isinstance(batch, list) else [batch])}))
        return step(batch)

    trainer.train_step = recording
    assert trainer.fit().step == 6
    assert sorted(map(tuple, shapes)) == [((2, 3, 32, 32),)] * 3 + [((2, 3, 60, 64),)] * 3
    resumed = Trainer(make_cfg(tmp_path / "run", "stage1", frames_and_windows(tmp_path)
                               + ["max_iters=8", "batch_size=3", "resume=auto"]))
    assert "grouped anew" not in caplog.text                 # the epoch had ended: nothing to regroup
    Trainer(make_cfg(tmp_path / "mid", "stage1", frames_and_windows(tmp_path) + ["max_iters=1"])).fit()
    Trainer(make_cfg(tmp_path / "mid", "stage1", frames_and_windows(tmp_path)
                     + ["max_iters=2", "batch_size=3", "resume=auto"]))
    assert "grouped anew" in caplog.text                     # mid-epoch: some samples may repeat, and it says so
    assert resumed.step == 6


def test_trained_without_enlarging_the_model_records_it_and_validates_photos_at_their_own_size(tmp_path):
    cfg = make_cfg(tmp_path, "stage1", ["epochs=1", "data.upscale=false", "val_every=1", "skip_last_epoch=false"])
    result = Trainer(cfg, train_dataset=ToyDefocus(2), val_dataset=SmallPhotos()).fit()
    val = (tmp_path / "val.csv").read_text().strip().splitlines()
    assert len(val) == 2 and val[1].split(",")[2] == "3"          # all three photos scored, at their own sizes
    for path in (result.model_path, tmp_path / "model_best.safetensors"):
        assert defocus.load_model(path).config["upscale"] is False
        assert defocus.Predictor(path, backend="torch", device="cpu").options.upscale is False
    paper = Trainer(make_cfg(tmp_path / "paper", "stage1", ["max_iters=1", "size=320"]),
                    train_dataset=ToyDefocus(2)).fit()
    assert not set(INPUT_DEFAULT_KEYS) & set(defocus.load_model(paper.model_path).config)  # the paper's: none


def test_trained_at_another_size_the_model_records_it_and_predicts_at_it(tmp_path):
    result = Trainer(make_cfg(tmp_path, "stage1", ["max_iters=1"]), train_dataset=ToyDefocus(2)).fit()
    assert defocus.load_model(result.model_path).config["input_size"] == SIZE != 320
    assert defocus.Predictor(result.model_path, backend="torch", device="cpu").options.size == SIZE


def test_full_frame_entries_train_in_two_gloo_processes_with_identical_replicas(tmp_path):
    """Each process groups its share of the epoch by shape; a batch that mixes shapes on one process and not on
    the other still takes one gradient exchange a step, so the replicas stay identical and nothing waits."""
    settings = frames_and_windows(tmp_path, frames=2, windows=10) + ["max_iters=4", "batch_size=6",
                                                                      "model.freeze_bn=true"]
    port = _free_port()
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_ddp_frames_rank, args=(r, 2, port, str(tmp_path / "run"), settings))
             for r in range(2)]
    assert run_processes(procs, 180) == [0, 0]
    seen = [torch.load(tmp_path / "run" / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert seen[0]["step"] == seen[1]["step"] == 4
    # a step at which one process's batch held both shapes and the other's one
    assert any(len(a) != len(b) for a, b in zip(seen[0]["shapes"], seen[1]["shapes"]))
    diff = [k for k in seen[0]["params"] if not torch.equal(seen[0]["params"][k], seen[1]["params"][k])]
    assert not diff, diff[:5]


def _ddp_frames_rank(rank, world, port, out_dir, settings):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    import torch.distributed as dist

    trainer = Trainer(make_cfg(out_dir, "stage1", settings + ["device=cpu"]))
    shapes, step = [], trainer.train_step

    def recording(batch):
        shapes.append(sorted({tuple(g["image"].shape[2:]) for g in (batch if isinstance(batch, list) else [batch])}))
        return step(batch)

    trainer.train_step = recording
    trainer.fit()
    torch.save({"step": trainer.step, "shapes": shapes, "params": trainer.stage.student.state_dict()},
               f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()
