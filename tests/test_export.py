"""Conv + BN folding (exactness and safety), ONNX export parity, the ONNX backend, and the benchmark harness."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from conftest import TINY_BACKBONE
from defocus.cli import app
from defocus.inference import Predictor
from defocus.models import create_model, save_model
from defocus.models.fuse import find_conv_bn_pairs, fuse_conv_bn


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters (a fresh model's fold would be near-identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return randomise_bn(create_model("dffnet", backbone=TINY_BACKBONE))


@pytest.fixture(scope="module")
def tiny_ckpt(tiny, tmp_path_factory):
    return str(save_model(tiny, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"))


def test_fused_equals_unfused(tiny):
    fused = fuse_conv_bn(tiny)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())  # every pair folds in this model
    assert any(isinstance(m, nn.BatchNorm2d) for m in tiny.modules())  # the original is untouched
    x = torch.randn(2, 3, 96, 160, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, got = tiny(x)[0], fused(x)[0]
    assert ref.std() > 0.1  # a non-degenerate output
    assert (ref - got).abs().max() <= 1e-4
    assert (ref.sigmoid() - got.sigmoid()).abs().max() <= 1e-4


def test_fold_is_skipped_where_the_conv_output_is_reused():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.bn_a = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
            self.b, self.bn_b = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.a(x)
            return self.bn_a(y) + y, self.bn_b(self.b(x))  # a's output also feeds the sum: not foldable

    m = randomise_bn(Residual())
    x = torch.randn(1, 3, 8, 8)
    assert find_conv_bn_pairs(m, x) == [("b", "bn_b")]
    fused = fuse_conv_bn(m, example=x)
    assert isinstance(fused.bn_a, nn.BatchNorm2d) and isinstance(fused.bn_b, nn.Identity)
    with torch.no_grad():
        for r, f in zip(m(x), fused(x)):
            assert (r - f).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="eval"):
        fuse_conv_bn(Residual().train())


def test_predictor_optimisations_do_not_change_outputs(tiny, shared_dir):
    image = sorted((shared_dir / "data" / "DUT" / "test_samples" / "images").iterdir())[0]
    fast = Predictor(tiny, device="cpu", size=96).predict(image)
    plain = Predictor(tiny, device="cpu", size=96, fuse=False, channels_last=False).predict(image)
    assert fast.prob.shape == plain.prob.shape
    assert np.abs(fast.prob - plain.prob).max() <= 1e-4
    assert plain.prob.std() > 0.01


def test_onnx_export_parity_and_backend(tiny, tiny_ckpt, shared_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    from defocus.export import export_onnx

    images = sorted((shared_dir / "data" / "CUHK" / "TE-1_btbnet320_samples" / "images").iterdir())[:1]
    report = export_onnx(tiny, tmp_path / "m.onnx", check_images=images)
    shapes = [tuple(c["shape"]) for c in report["cases"]]
    assert (2, 3, 256, 384) in shapes and (1, 3, 200, 296) in shapes and len(shapes) == 4  # dynamic N, H, W
    assert report["max_abs_diff_prob"] <= 1e-4 and report["max_abs_diff_logit"] <= 1e-4
    onnx_pred = Predictor(str(tmp_path / "m.onnx"), device="cpu", size=96, keep_aspect=True).predict(images[0])
    with pytest.raises(ValueError, match="runs on ONNX Runtime"):  # never a silent switch of backend
        Predictor(str(tmp_path / "m.onnx"), device="cpu", backend="torch")
    torch_pred = Predictor(tiny_ckpt, device="cpu", size=96, keep_aspect=True).predict(images[0])
    assert onnx_pred.model.kind == "onnx" and onnx_pred.model.backbone == "resnet18"
    assert np.abs(onnx_pred.prob - torch_pred.prob).max() <= 1e-4
    in_memory = Predictor(tiny_ckpt, device="cpu", size=96, backend="onnx").predict(images[0])
    assert np.abs(in_memory.prob - Predictor(tiny_ckpt, device="cpu", size=96).predict(images[0]).prob).max() <= 1e-4


def test_fp16_weights_halve_the_file_and_keep_the_float16_model_exact(tiny, tmp_path):
    """A model whose weights are float16 values (as loaded from float16 weights) exports with float16
    initializers + casts: about half the bytes and the same ONNX Runtime output as the float32 file."""
    pytest.importorskip("onnxruntime")
    import copy

    import onnx

    from defocus.export import export_onnx_bytes
    from defocus.onnx_runtime import onnx_session

    half = copy.deepcopy(tiny).half().float().eval()
    plain = export_onnx_bytes(half, fuse=False)
    small = export_onnx_bytes(half, fuse=False, fp16_weights=True)
    assert len(small) < 0.6 * len(plain)
    types = {i.data_type for i in onnx.load_from_string(small).graph.initializer if len(i.dims) > 1}
    assert types == {onnx.TensorProto.FLOAT16}
    x = np.random.default_rng(0).standard_normal((1, 3, 96, 128)).astype(np.float32)
    a = onnx_session(plain).run(None, {"image": x})[0]
    b = onnx_session(small).run(None, {"image": x})[0]
    with torch.inference_mode():
        ref = half(torch.from_numpy(x))[0].numpy()
    assert np.array_equal(a, b) and np.abs(b - ref).max() <= 1e-4
    # weights that are not float16 values stay float32 (a lossless conversion or none)
    mixed = onnx.load_from_string(export_onnx_bytes(tiny, fuse=False, fp16_weights=True))
    assert onnx.TensorProto.FLOAT in {i.data_type for i in mixed.graph.initializer if len(i.dims) > 1}


def test_shipped_onnx_model_matches_the_bundled_weights(examples_dir):
    """weights/default.onnx is the bundled safetensors model: the same maps within float rounding."""
    pytest.importorskip("onnxruntime")
    from defocus.bundled import bundled_onnx, bundled_weights

    if bundled_onnx() is None or bundled_weights() is None:
        pytest.skip("this installation does not ship both bundled model files")
    onnx_p, torch_p = Predictor(device="cpu"), Predictor(device="cpu", backend="torch")
    assert onnx_p.backend == "onnx" and onnx_p.info.source == "bundled (weights/default.onnx)"
    assert torch_p.backend == "torch" and onnx_p.info.backbone == torch_p.info.backbone
    image = examples_dir / "dahlia_flower.jpg"
    a, b = onnx_p.predict(image).prob_lowres, torch_p.predict(image).prob_lowres
    assert b.std() > 0.1 and np.abs(a - b).max() <= 5e-4  # measured 2.3e-4 here, 5.6e-4 at most over the example photos (the seventh bundled model)


def test_export_cli(tiny_ckpt, tmp_path):
    pytest.importorskip("onnxruntime")
    r = CliRunner().invoke(app, ["export", "--model", tiny_ckpt, "-o", str(tmp_path / "x.onnx")])
    assert r.exit_code == 0, r.output
    assert "max |prob diff|" in r.stdout and (tmp_path / "x.onnx").is_file()
    r = CliRunner().invoke(app, ["export", "--model", str(tmp_path / "nothing.safetensors"), "-o",
                                 str(tmp_path / "y.onnx")])
    assert r.exit_code == 2 and not (tmp_path / "y.onnx").exists()


def test_export_cli_default_without_bundled_weights(monkeypatch, tmp_path):
    import defocus.bundled

    monkeypatch.setattr(defocus.bundled, "bundled_weights", lambda: None)
    r = CliRunner().invoke(app, ["export", "--model", "default", "-o", str(tmp_path / "m.onnx")])
    assert r.exit_code == 2 and "no bundled weights" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "m.onnx").exists()


def test_benchmark_rows(tiny_ckpt):
    from defocus.bench import benchmark, format_table

    report = benchmark(model=tiny_ckpt, size=64, batch_sizes=(1, 2), backends=("torch", "torch-baseline"),
                       runs=2, warmup=1, isolate=False)
    rows = report["results"]
    assert [(r["backend"], r["batch"]) for r in rows] == [("torch", 1), ("torch", 2), ("torch-baseline", 1),
                                                          ("torch-baseline", 2)]
    assert all(r["images_per_s"] > 0 and r["p90_ms"] >= r["p50_ms"] > 0 for r in rows)
    assert report["machine"]["logical_cpus"] >= 1 and "resnet18" in format_table(report)
    with pytest.raises(ValueError, match="unknown backend"):
        benchmark(model=tiny_ckpt, backends=("tensorrt",))


def test_benchmark_of_a_classical_method_times_an_image_with_a_focus_contrast():
    from defocus.bench import benchmark, focus_contrast_image
    from defocus.classical import predict_map

    img = focus_contrast_image(64, np.random.default_rng(0))
    prob = predict_map("lbp", img)     # the matting and the inference have something to solve (noise has not)
    assert prob[:, :28].mean() > 0.8 and prob[:, 36:].mean() < 0.2
    rows = benchmark(method="lbp", size=64, runs=1, warmup=0, isolate=False)["results"]
    assert len(rows) == 1 and rows[0]["backend"] == "numpy" and rows[0]["size"] == 64 and rows[0]["batch"] == 1
    for bad in (dict(backends=("torch-baseline",)), dict(backends=("torch", "onnx")), dict(batch_sizes=(8,)),
                dict(threads=1)):
        with pytest.raises(ValueError, match="apply to networks"):
            benchmark(method="lbp", size=64, runs=1, warmup=0, isolate=False, **bad)
    from defocus import Predictor

    for bad in (dict(precision="bf16"), dict(compile=True), dict(device="cuda")):
        with pytest.raises(ValueError, match="apply to networks"):
            Predictor(method="hifst", **bad)


def test_benchmark_of_an_onnx_file_names_the_backend_it_runs_on(tmp_path):
    from defocus.bench import benchmark

    with pytest.raises(ValueError, match="runs on ONNX Runtime: --backend onnx"):
        benchmark(model=str(tmp_path / "model.onnx"), backends=("torch",), runs=1, isolate=False)


def test_benchmark_times_by_default_the_backend_predict_runs(tiny, tiny_ckpt, tmp_path):
    pytest.importorskip("onnxruntime")
    from defocus.bench import benchmark
    from defocus.export import export_onnx
    from defocus.inference import bundled_weights

    export_onnx(tiny, tmp_path / "m.onnx", check=False)
    expected = [(str(tmp_path / "m.onnx"), "onnx"), (tiny_ckpt, "torch")]
    if bundled_weights() is not None:
        expected.append(("default", Predictor("default", device="cpu").backend))
    for model, backend in expected:
        row, = benchmark(model=model, size=64, batch_sizes=(1,), runs=1, warmup=0, isolate=False)["results"]
        assert row["backend"] == backend == Predictor(model, device="cpu").backend, model
    r = CliRunner().invoke(app, ["benchmark", "--model", str(tmp_path / "m.onnx"), "--size", "64", "--batch-size",
                                 "1", "--runs", "1", "--warmup", "0", "--json"])
    assert r.exit_code == 0, r.output
    assert [row["backend"] for row in json.loads(r.stdout)["results"]] == ["onnx"]


@pytest.mark.parametrize("args, message", [(["--batch-size", "a"], "positive integers"),
                                           (["--batch-size", "1,,2"], "empty item"),
                                           (["--device", "tpu"], "unknown device 'tpu'")])
def test_benchmark_bad_options_are_one_line_errors(args, message):
    r = CliRunner().invoke(app, ["benchmark", "--model", "dffnet:resnet18", "--runs", "1", *args])
    assert r.exit_code == 2 and message in " ".join(r.output.split()) and "Traceback" not in r.output


@pytest.mark.slow
def test_benchmark_cli_isolated(tiny_ckpt):
    r = CliRunner().invoke(app, ["benchmark", "--model", tiny_ckpt, "--size", "64", "--batch-size", "1",
                                 "--runs", "1", "--warmup", "0", "--threads", "1", "--json"])
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)["results"][0]
    assert row["peak_rss_mb"] > 0 and row["threads"] == 1


def test_bundled_model_fused_equals_unfused(shared_dir):
    from defocus.inference import bundled_weights

    if bundled_weights() is None:
        pytest.skip("no bundled weights in this installation")
    images = sorted((shared_dir / "data" / "DUT" / "test_samples" / "images").iterdir())[:2]
    fast = Predictor(device="cpu", backend="torch")
    plain = Predictor(device="cpu", backend="torch", fuse=False, channels_last=False)
    assert fast.info.source.startswith("bundled")
    for image in images:
        a, b = fast.predict(image), plain.predict(image)
        assert b.prob.std() > 0.1  # real weights, a real photo: a non-trivial map
        assert np.abs(a.prob - b.prob).max() <= 1e-4


def test_exported_model_runs_without_torch(tiny, shared_dir, tmp_path):
    """An exported model predicts in a process that never imports torch, with the same maps as in this one."""
    pytest.importorskip("onnxruntime")
    import subprocess
    import sys

    from defocus.export import export_onnx

    export_onnx(tiny, tmp_path / "m.onnx", check=False)
    image = sorted((shared_dir / "data" / "DUT" / "test_samples" / "images").iterdir())[0]
    script = (
        "import sys, numpy as np\n"
        "from defocus import Predictor\n"
        f"r = Predictor({str(tmp_path / 'm.onnx')!r}, size=96).predict({str(image)!r})\n"
        f"np.save({str(tmp_path / 'prob.npy')!r}, r.prob)\n"
        "print('torch' in sys.modules, 'timm' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
    here = Predictor(str(tmp_path / "m.onnx"), device="cpu", size=96).predict(image).prob
    assert np.array_equal(np.load(tmp_path / "prob.npy"), here) and here.std() > 0.01


@pytest.mark.slow
def test_benchmark_of_an_onnx_file_is_torch_free(tiny, tmp_path):
    pytest.importorskip("onnxruntime")
    from defocus.bench import benchmark
    from defocus.export import export_onnx

    export_onnx(tiny, tmp_path / "m.onnx", check=False)
    row = benchmark(model=str(tmp_path / "m.onnx"), size=64, batch_sizes=(1,), backends=("onnx",), runs=1,
                    warmup=0, threads=1)["results"][0]
    assert row["torch_imported"] is False and row["threads"] == 1 and row["peak_rss_mb"] > 0
    with pytest.raises(ValueError, match="ONNX Runtime only"):
        benchmark(model=str(tmp_path / "m.onnx"), backends=("torch-baseline",), isolate=False)


def test_bf16_on_cpu_is_close_and_fp16_is_refused(tiny, shared_dir):
    image = sorted((shared_dir / "data" / "DUT" / "test_samples" / "images").iterdir())[0]
    exact = Predictor(tiny, device="cpu", size=96).predict(image).prob
    bf16 = Predictor(tiny, device="cpu", size=96, precision="bf16").predict(image).prob
    assert bf16.dtype == np.float32 and bf16.shape == exact.shape
    assert 0 < np.abs(bf16 - exact).max() < 0.05  # bf16 rounding: close, not identical
    with pytest.raises(ValueError, match="fp16"):
        Predictor(tiny, device="cpu", precision="fp16")
    with pytest.raises(ValueError, match="torch backend only"):
        Predictor(tiny, device="cpu", precision="bf16", backend="onnx")


def test_a_model_runs_at_the_input_defaults_its_file_records(tmp_path):
    """The input defaults a network file records (``with_input_defaults``: not enlarging small photos, its own
    input size) survive saving, loading and the ONNX export, and are what ``Predictor`` uses unless told
    otherwise; files without them keep the paper's enlargement and size."""
    import copy

    from defocus.models import load_model, with_input_defaults

    torch.manual_seed(0)
    plain = create_model("dffnet", backbone=TINY_BACKBONE).eval()
    marked = with_input_defaults(copy.deepcopy(plain), upscale=False)
    assert "upscale" not in plain.config and marked.config["upscale"] is False
    paths = {"plain": save_model(plain, tmp_path / "plain.safetensors"),
             "marked": save_model(marked, tmp_path / "marked.safetensors")}
    assert load_model(paths["marked"]).config["upscale"] is False
    assert "upscale" not in load_model(paths["plain"]).config
    sized = save_model(with_input_defaults(copy.deepcopy(marked), size=64), tmp_path / "sized.safetensors")
    assert load_model(sized).config["input_size"] == 64 and load_model(sized).config["upscale"] is False
    pytest.importorskip("onnxruntime")
    from defocus.export import export_onnx

    export_onnx(load_model(paths["marked"]), tmp_path / "marked.onnx", check=False)
    candidates = {"plain": [str(paths["plain"])], "marked": [str(paths["marked"]), str(tmp_path / "marked.onnx")]}
    small = np.full((40, 60, 3), 128, np.uint8)
    for name, files in candidates.items():
        for f in files:
            p = Predictor(f, device="cpu", size=96)
            assert p.options.upscale is (name == "plain"), f
            assert p.input_size((60, 40)) == ((96, 96) if name == "plain" else (60, 40))
            assert p.predict(small).prob_lowres.shape == ((96, 96) if name == "plain" else (40, 60))
            assert Predictor(f, device="cpu", size=96, upscale=True).input_size((60, 40)) == (96, 96)
            assert p.with_options(upscale=True).with_options(upscale=None).options.upscale is (name == "plain")
    export_onnx(load_model(sized), tmp_path / "sized.onnx", check=False)
    for f in (sized, tmp_path / "sized.onnx"):
        p = Predictor(str(f), device="cpu")
        assert (p.options.size, p.options.upscale, p.info.size) == (64, False, 64)
        assert p.input_size((200, 100)) == (64, 64) and p.input_size((60, 40)) == (60, 40)
        assert p.predict(small).prob_lowres.shape == (40, 60)
        assert Predictor(str(f), device="cpu", size=96).input_size((200, 100)) == (96, 96)
        assert p.with_options(size=32).with_options(size=None).options.size == 64
    assert Predictor(str(paths["plain"]), device="cpu").options.size == 320       # the paper's


def test_an_onnx_file_defocus_did_not_export_is_named(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["logit"])], "foreign",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("logit", TensorProto.FLOAT, [1, 3, 8, 8])])
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(ValueError, match="foreign.onnx: this ONNX file was not exported by defocus"):
        Predictor(str(path))
