"""Classifiers of every common family as D, as a module, as a traced TorchScript archive and as an
ONNX file: D's gradient through the exporter's translations against float64, exports in both modes,
`verify` of the step graph, and the engine's results against the torch reference's.
"""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from dgn_engine.artifacts import load_artifacts
from dgn_engine.cli.main import main
from dgn_engine.engine.backends.step_graph import StepGraphBackend
from dgn_engine.engine.backends.torch_reference import TorchBackend
from dgn_engine.engine.loop import run_batch
from dgn_engine.exporter.coupled import Sources, build_coupled
from dgn_engine.exporter.verify import RELATIVE_TO_FLOAT32, verify
from dgn_engine.targets import parse_target
from tests import zoo
from tests.conftest import error_line
from tests.small_models import write_calibrated_decoder

pytestmark = pytest.mark.zoo

# a block of each net (not a leaf), so that channel targets read a whole block's output
BLOCK = {
    "resnet_basic": "layer1.1",
    "resnet_bottleneck": "layer1.0",
    "mobilenet_v2": "2",
    "mobilenet_v3": "2.block",
    "efficientnet": "4",
    "densenet": "7",
    "inception": "4",
    "squeezenet": "4",
    "dilated": "fuse",
    "vit": "patch_embed",
}


def _export(out, classifier, mode, decoder=None, *extra):
    argv = ["export", "--classifier", classifier, "--mode", mode, "--out", str(out), *extra]
    if decoder:
        argv += ["--decoder", decoder]
    assert main(argv) == 0
    return load_artifacts(str(out))


def _engine_equals_reference(art, targets):
    """The step graph's gradient and updates against torch float64 for 2 steps (`verify`), then
    `run_batch` on the step graph against the torch reference for one step: the same noise, start,
    features, image and activations. Over more steps two float32 implementations part: a ReLU decision in G or D taken
    differently where a pre-activation lies within rounding of 0 changes the gradient by one unit's
    share (measured on a random 48 px decoder: onnxruntime's input gradient 3e-3 from float64, torch
    float32's 5e-7; at 75 px 3e-4 and 1.4e-3), and G amplifies it."""
    _verified(art)
    spec = replace(art.spec, steps=1)
    sources = Sources.from_json(art.manifest["sources"])
    engine = run_batch(StepGraphBackend(art, "cpu"), targets, spec)
    reference = run_batch(TorchBackend(build_coupled(sources, art.spec, art.manifest["taps"])), targets, spec)
    for a, b in zip(engine, reference):
        # one float32 forward pass of G (up to 15 layers) and D in each: rounding accumulates to
        # ~1e-5 of O(1) values (1.4e-5 at most measured here); verify's floor, 1e-4, leaves room
        np.testing.assert_allclose(np.array(a.curve), np.array(b.curve), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(a.image, b.image, rtol=1e-4, atol=1e-4)


def _gradient_error(module, size):
    """D's input gradient as the exporter writes it, run in onnxruntime, and in torch float32, against
    torch float64: (onnxruntime's relative L2 error, torch float32's)."""
    import onnxruntime

    from dgn_engine.exporter.tracing import trace_onnx

    def grad(x, w):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            return torch.autograd.grad((module(x) * w).sum(), x)[0]

    torch.manual_seed(0)
    x, w = torch.randn(2, 3, size, size), torch.randn(2, 10)
    graph = trace_onnx(grad, [x, w], ["x", "w"], ["g"])
    session = onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    ours = session.run(None, {"x": x.numpy(), "w": w.numpy()})[0]
    float32 = grad(x, w).numpy()
    module.double()
    ref = grad(x.double(), w.double()).numpy()
    module.float()
    rel = lambda a: float(np.linalg.norm(a - ref) / np.linalg.norm(ref))  # noqa: E731
    return rel(ours), rel(float32)


def onnx_file(path, module, size, *, batch=None, channels_last=False, opset=17, **export_options):
    """The net as an ONNX file written by torch's TorchScript-based exporter (tensor names carry the
    module paths, as in most files users have): batch axis dynamic unless `batch` fixes it."""
    if channels_last:
        module = _ChannelsLast(module)
    example = torch.randn(batch or 2, *((size, size, 3) if channels_last else (3, size, size)))
    dynamic = export_options.pop("dynamic_axes", None if batch else {"image": {0: "batch"}})
    torch.onnx.export(
        module.eval(),
        (example,),
        str(path),
        dynamo=False,
        input_names=["image"],
        output_names=["scores"],
        dynamic_axes=dynamic,
        opset_version=opset,
        **export_options,
    )
    return str(path)


class _ChannelsLast(torch.nn.Module):
    """A net taking [batch, height, width, channels] images, as TensorFlow-made files do."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x.permute(0, 3, 1, 2).contiguous())


# torch.onnx cannot write adaptive max-pooling to an output size that does not divide the input
ONNX_UNWRITABLE = {"inception"}


def _form(name, form, tmp_path):
    module = zoo.ZOO[name]()
    size = module.preprocessing.image_size
    if form == "torchscript":
        return torch.jit.trace(module, torch.randn(1, 3, size, size)), size
    if form.startswith("onnx"):
        from dgn_engine.exporter.classifiers import load_classifier

        path = tmp_path / "d.onnx"
        if form == "onnx":
            onnx_file(path, module, size)
        else:  # torch.export's ONNX exporter (opset 18), whose tensor names are not module paths
            torch.onnx.export(
                module,
                (torch.randn(2, 3, size, size),),
                str(path),
                dynamo=True,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
            )
        return load_classifier(str(path)).module, size
    return module, size


# CI keeps under 30 minutes: ONNX files of four nets (torch's exporters take 3-8 s a net), the rest
# with `python -m pytest -m full_zoo`
ONNX_GRADIENT_CI = {"onnx": ("resnet_basic", "mobilenet_v3", "efficientnet", "vit"), "onnx_dynamo": ("vit",)}


def _gradient_case(form, name):
    if form in ONNX_GRADIENT_CI and name not in ONNX_GRADIENT_CI[form]:
        return pytest.param(form, name, marks=pytest.mark.full_zoo)
    return form, name


@pytest.mark.parametrize(
    "form,name", [_gradient_case(f, n) for f in ("module", "torchscript", "onnx", "onnx_dynamo") for n in zoo.ZOO]
)
def test_gradient_of_d(tmp_path, name, form):
    """Every zoo net's input gradient (what the step graph backpropagates into G) through the
    exporter's translations, in onnxruntime: as close to float64 as torch float32 (verify's rule)."""
    if form.startswith("onnx") and name in ONNX_UNWRITABLE:
        pytest.skip("torch.onnx cannot write this net")
    module, size = _form(name, form, tmp_path)
    ours, float32 = _gradient_error(module, size)
    assert ours <= max(RELATIVE_TO_FLOAT32 * float32, 1e-6), (ours, float32)


def _verified(art):
    """`verify`: each step from float64's state, the gradient through the optimiser's slots.
    Untrained mode: 10 steps of the batch's 2 targets, as verify judges the state at 75% of the
    target-steps, so 5 of 20 may hold a ReLU input within rounding of 0 (the ONNX-file ResNet at step 2,
    after AdaMax's first full-size move: in each target a pixel of G's last convolution at 1e-7 of its
    largest falls on the other side in onnxruntime and moves that target's gradient by 0.7-0.9%; every
    other target-step within 2.3e-5). Pretrained mode: 4 steps, so 2 of 8 may (the Inception net on an
    Intel Xeon: 2 in its first 2 steps, at 3e-3 and 1e-2), and no more, as over 10 torch float32 itself
    parts from float64 (ResNet and SqueezeNet: state 0.7 at 90%, 184 at worst) and the later steps
    measure nothing. A wrong graph is wrong in every target-step."""
    steps = 10 if art.spec.mode == "untrained" else 4
    ok, report = verify(art, steps, "cpu", log=lambda *_: None, engine_backends=[StepGraphBackend(art, "cpu")])
    assert ok, report


# CI runs one net of each kind of block in each form and every net's verify in one form at least;
# `python -m pytest -m full_zoo` runs the rest (the ViT runs in CI as an archive and in the
# transformer-block test, the bottleneck ResNet and the ViT in the gradient tests too). G does not
# depend on D beyond its size, so one net in CI is
# exported in both modes and the Inception net, the slowest, in pretrained mode only.
MODULE_CI = {
    "mobilenet_v3": ("untrained", "pretrained"),
    "inception": ("pretrained",),
    "mobilenet_v2": ("untrained",),
    "dilated": ("untrained",),
}
TORCHSCRIPT_CI = ("resnet_basic", "densenet", "vit")


def _zoo(in_ci):
    return [n if n in in_ci else pytest.param(n, marks=pytest.mark.full_zoo) for n in zoo.ZOO]


@pytest.mark.parametrize("name", _zoo(MODULE_CI))
def test_module_exported_and_run(tmp_path, name):
    size = zoo.ZOO[name]().preprocessing.image_size
    decoder = str(tmp_path / "decoder.pt")
    write_calibrated_decoder(decoder, size, "RGB")
    modes = MODULE_CI.get(name, ("untrained", "pretrained"))
    for mode in modes:
        art = _export(
            tmp_path / mode,
            f"tests.zoo:{name}",
            mode,
            decoder if mode == "pretrained" else None,
            "--taps",
            BLOCK[name],
            "--batch",
            "2",
        )
        assert art.manifest["plan"]["out_size"] == size
    if "untrained" in modes[:-1]:  # the last mode's artifacts are verified by the comparison below
        _verified(load_artifacts(str(tmp_path / "untrained")))
    _engine_equals_reference(art, [parse_target("class:3"), parse_target(f"channel:{BLOCK[name]}:1")])


@pytest.mark.parametrize("name", _zoo(TORCHSCRIPT_CI))
def test_torchscript_archive(tmp_path, name):
    module = zoo.ZOO[name]()
    size = module.preprocessing.image_size
    path = str(tmp_path / f"{name}.pt")
    torch.jit.save(torch.jit.trace(module, torch.randn(1, 3, size, size)), path)
    decoder = str(tmp_path / "decoder.pt")
    write_calibrated_decoder(decoder, size, "RGB")
    mean, std = (",".join(map(str, v)) for v in zoo.RGB)
    art = _export(
        tmp_path / "art",
        path,
        "pretrained",
        decoder,
        "--image-size",
        str(size),
        "--mean",
        mean,
        "--std",
        std,
        "--taps",
        BLOCK[name],
        "--batch",
        "2",
    )
    _engine_equals_reference(art, [parse_target("class:3"), parse_target(f"channel:{BLOCK[name]}:1")])


@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_torchscript_taps_read_the_blocks(tmp_path, name):
    """A traced archive's submodules are tapped by name: the activation is exactly what the module's
    own block returns (forward hook on the original), and the class outputs are the archive's."""
    from dgn_engine.exporter.classifiers import Tapped, load_classifier

    module = zoo.ZOO[name]()
    size = module.preprocessing.image_size
    path = str(tmp_path / "d.pt")
    torch.jit.save(torch.jit.trace(module, torch.randn(1, 3, size, size)), path)
    classifier = load_classifier(path, image_size=size)
    assert BLOCK[name] in classifier.layer_names()
    x = torch.randn(2, 3, size, size)
    seen = {}
    dict(module.named_modules())[BLOCK[name]].register_forward_hook(lambda _m, _i, out: seen.update(out=out))
    with torch.no_grad():
        expected = module(x)
        out, acts = Tapped(classifier, [BLOCK[name]])(x)
    assert torch.equal(acts[BLOCK[name]], seen["out"]) and torch.equal(out, expected)


def test_scripted_archive_with_control_flow_is_class_only(tmp_path, capsys):
    path = str(tmp_path / "scripted.pt")
    torch.jit.save(torch.jit.script(zoo.resnet_basic()), path)
    err = error_line(
        capsys,
        [
            "export",
            "--classifier",
            path,
            "--image-size",
            "64",
            "--mode",
            "untrained",
            "--taps",
            "layer1",
            "--out",
            str(tmp_path / "a"),
        ],
    )
    assert "control flow" in err and "torch.jit.trace" in err


# EfficientNet: shape arithmetic in the graph (Shape, Gather, Pad); with the modules above and the
# archives, every architecture of the zoo has its gradient verified in CI
ONNX_CI = ("efficientnet", "resnet_basic", "resnet_bottleneck", "squeezenet")


@pytest.mark.parametrize(
    "name",
    [n if n in ONNX_CI else pytest.param(n, marks=pytest.mark.full_zoo) for n in zoo.ZOO if n not in ONNX_UNWRITABLE],
)
def test_onnx_file(tmp_path, name):
    """An ONNX file as D: its size and channels read from the file, a tensor tapped by its ONNX name,
    verify in untrained mode and the engine against the torch reference."""
    module = zoo.ZOO[name]()
    size = module.preprocessing.image_size
    path = onnx_file(tmp_path / f"{name}.onnx", module, size)
    from dgn_engine.exporter.classifiers import load_classifier

    d = load_classifier(path)
    tap = [n for n, shape in d.layout(d.layer_names()).items() if len(shape) == 3][-1]  # the last feature map
    mean, std = (",".join(map(str, v)) for v in zoo.RGB)
    art = _export(
        tmp_path / "art", path, "untrained", None, "--taps", tap, "--batch", "2", "--mean", mean, "--std", std
    )
    assert art.manifest["plan"]["out_size"] == size
    _engine_equals_reference(art, [parse_target("class:3"), parse_target(f"channel:{tap}:1")])


def _against_onnxruntime(path, x: np.ndarray, taps: int = 2) -> float:
    """D as dgn-engine reads an ONNX file (its class outputs and the last `taps` feature maps, tapped by
    ONNX name) against onnxruntime running the file itself, with those tensors made graph outputs:
    the worst relative L2 error over them."""
    import onnx
    import onnxruntime

    from dgn_engine.exporter.classifiers import Tapped, load_classifier

    d = load_classifier(path)
    names = [n for n, shape in d.layout(d.layer_names()).items() if len(shape) == 3][-taps:]
    model = onnx.load(path)
    model.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = x.transpose(0, 2, 3, 1) if d.module.channels_last else x
    theirs = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(feed)})
    with torch.no_grad():
        out, acts = Tapped(d, names)(torch.from_numpy(x))
    ours = [out.numpy(), *(acts[n].numpy() for n in names)]
    return max(float(np.linalg.norm(a - b) / np.linalg.norm(b)) for a, b in zip(ours, theirs))


@pytest.mark.parametrize(
    "name",
    [n if n in ONNX_CI else pytest.param(n, marks=pytest.mark.full_zoo) for n in zoo.ZOO if n not in ONNX_UNWRITABLE],
)
def test_onnx_file_as_onnxruntime_runs_it(tmp_path, name):
    """The converted D equals the file as onnxruntime runs it. Both float32, with their own kernels:
    sums of up to a few thousand products round to ~1e-6 relative; 1e-5 leaves room for the order."""
    size = zoo.ZOO[name]().preprocessing.image_size
    path = onnx_file(tmp_path / f"{name}.onnx", zoo.ZOO[name](), size)
    x = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
    assert _against_onnxruntime(path, x) < 1e-5


def test_channels_last_one_image_file_as_onnxruntime_runs_it(tmp_path):
    """The same for a TensorFlow-style file: NHWC input, batch fixed to 1 (one image at a time)."""
    path = onnx_file(tmp_path / "d.onnx", LeNet(), 32, batch=1, channels_last=True)
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    assert _against_onnxruntime(path, x) < 1e-5


def test_onnx_file_with_one_image_batches_channels_last(tmp_path, decoder_file):
    """A file fixing its batch to 1 with [batch, height, width, channels] input (TensorFlow-style):
    the layout is read from the graph, images pass one at a time, and the engine equals the reference."""
    path = onnx_file(tmp_path / "d.onnx", LeNet(), 32, batch=1, channels_last=True)
    art = _export(tmp_path / "art", path, "pretrained", decoder_file, "--batch", "3")
    assert art.manifest["plan"]["out_size"] == 32
    _engine_equals_reference(art, [parse_target(f"class:{c}") for c in (0, 4, 9)])


class _TwoInputs(torch.nn.Module):
    def forward(self, x, scale):
        return torch.flatten(x, 1)[:, :10] * scale


def test_onnx_files_d_cannot_be(tmp_path, capsys):
    two = str(tmp_path / "two.onnx")
    torch.onnx.export(
        _TwoInputs(), (torch.randn(1, 3, 8, 8), torch.randn(1, 10)), two, dynamo=False, input_names=["image", "scale"]
    )
    err = error_line(capsys, ["export", "--classifier", two, "--mode", "untrained", "--out", str(tmp_path / "a")])
    assert "takes 2 inputs (image, scale)" in err and "one image batch" in err
    sizeless = onnx_file(tmp_path / "sizeless.onnx", LeNet(), 32, dynamic_axes={"image": {0: "b", 2: "h", 3: "w"}})
    err = error_line(capsys, ["export", "--classifier", sizeless, "--mode", "untrained", "--out", str(tmp_path / "a")])
    assert "does not tell its input size" in err and "--image-size" in err
    fixed = onnx_file(tmp_path / "fixed.onnx", LeNet(), 32)
    err = error_line(
        capsys,
        ["export", "--classifier", fixed, "--image-size", "64", "--mode", "untrained", "--out", str(tmp_path / "a")],
    )
    assert "takes 32x32 images" in err
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not a model at all")
    err = error_line(
        capsys, ["export", "--classifier", str(garbage), "--mode", "untrained", "--out", str(tmp_path / "a")]
    )
    assert "is not an ONNX model" in err


class LeNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = torch.nn.Conv2d(3, 6, 5), torch.nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = torch.nn.Linear(400, 120), torch.nn.Linear(120, 84), torch.nn.Linear(84, 10)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x.view(x.size(0), -1))))))


def test_traced_lenet_export_run_verify(tmp_path):
    """A new user's CIFAR-10 LeNet, traced with torch.jit.trace: export, verify and an all-classes run."""
    torch.manual_seed(0)
    path = str(tmp_path / "lenet.pt")
    torch.jit.save(torch.jit.trace(LeNet().eval(), torch.randn(1, 3, 32, 32)), path)
    art = str(tmp_path / "art")
    assert (
        main(
            ["export", "--classifier", path, "--image-size", "32", "--mode", "untrained", "--batch", "5", "--out", art]
        )
        == 0
    )
    assert main(["verify", "--artifacts", art, "--steps", "2"]) == 0
    out = tmp_path / "results"
    assert main(["run", "--artifacts", art, "--all-classes", "--steps", "20", "--out", str(out), "--quiet"]) == 0
    record = json.loads((out / "targets" / "class-7.json").read_text())
    views = record["faithfulness"]
    assert set(views) == {"last_step", "median", "png"}
    assert views["png"]["activation"] == pytest.approx(record["final_activation"])


class _Warp(torch.nn.Module):
    """A spatial-transformer layer: grid_sample, whose gradient has no ONNX translation."""

    def forward(self, x):
        theta = torch.tensor([[[1.0, 0.1, 0.0], [0.0, 1.0, 0.0]]]).expand(x.shape[0], 2, 3)
        grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
        return torch.nn.functional.grid_sample(x, grid, align_corners=False)


def warped():
    net = zoo.resnet_basic()
    net.stem.add_module("warp", _Warp())
    return net


def test_untranslatable_op_names_the_layer(tmp_path, capsys):
    # pixel mode: D's op is what is named, and without G the step traces in a fraction of the time
    err = error_line(
        capsys, ["export", "--classifier", "tests.test_zoo:warped", "--mode", "pixel", "--out", str(tmp_path / "a")]
    )
    assert "'stem.warp' (_Warp)" in err and "aten.grid_sampler_2d" in err and "gradient" in err
    # the same net as an ONNX file: the layer is the ONNX node whose translation calls the op
    path = onnx_file(tmp_path / "warped.onnx", warped(), 64, opset=20)
    err = error_line(capsys, ["export", "--classifier", path, "--mode", "pixel", "--out", str(tmp_path / "b")])
    assert "(GridSample)" in err and "aten.grid_sampler_2d" in err and "gradient" in err
    # as a traced TorchScript archive: the submodule's name and class
    path = str(tmp_path / "warped.pt")
    torch.jit.save(torch.jit.trace(warped(), torch.randn(1, 3, 64, 64)), path)
    err = error_line(
        capsys,
        ["export", "--classifier", path, "--image-size", "64", "--mode", "pixel", "--out", str(tmp_path / "c")],
    )
    assert "'stem.warp' (_Warp)" in err and "aten.grid_sampler_2d" in err


def test_unknown_and_unfit_taps(tmp_path, capsys):
    err = error_line(
        capsys,
        [
            "export",
            "--classifier",
            "tests.zoo:resnet_basic",
            "--mode",
            "untrained",
            "--taps",
            "layer9",
            "--out",
            str(tmp_path / "a"),
        ],
    )
    assert "unknown layer 'layer9'" in err and "layer1.1" in err and "stem" in err


def test_wrong_input_size(tmp_path, capsys):
    err = error_line(
        capsys,
        [
            "export",
            "--classifier",
            "tests.zoo:vit",
            "--image-size",
            "48",
            "--mode",
            "untrained",
            "--out",
            str(tmp_path / "a"),
        ],
    )
    assert "does not accept 3x48x48 input" in err


def test_transformer_block_features_as_channels(tmp_path):
    """A ViT block's [tokens, features] output is tappable: a channel target reads one feature's mean
    over the tokens and a neuron target one token's feature, in the engine as in the torch reference."""
    art = _export(tmp_path / "art", "tests.zoo:vit", "untrained", None, "--taps", "blocks.0", "--batch", "2")
    assert art.layout["blocks.0"] == (17, 32)  # 16 patches and the class token, 32 features
    _engine_equals_reference(art, [parse_target("channel:blocks.0:5"), parse_target("neuron:blocks.0:5:3")])
