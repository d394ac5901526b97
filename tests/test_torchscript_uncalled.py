"""TorchScript archives holding submodules that forward never calls (an auxiliary head, a module with
no forward at all, a module only another method uses): the archive loads, its interpretation gives the
archive's own output, the submodules forward calls are tap points and the others are not."""

import torch
import torch.nn as nn

from dgn_engine.artifacts import load_artifacts
from dgn_engine.cli.main import main
from dgn_engine.exporter.classifiers import Tapped, load_classifier
from tests.conftest import error_line

SIZE = 16


class _Stats(nn.Module):
    """A module without forward: forward reads its parameter, nothing calls it."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 10))


class _Conv(nn.Conv2d):
    """nn.Conv2d whose forward is one ATen op: scripted nn.Conv2d calls its helper `_conv_forward`,
    which the interpreter does not follow (traced ones are unaffected)."""

    def forward(self, x):
        return torch.conv2d(x, self.weight, self.bias, self.stride, self.padding)


class _Body(nn.Module):
    def __init__(self, conv):
        super().__init__()
        self.stem = conv(3, 8, 3, padding=1)
        self.layer1 = nn.Sequential(conv(8, 16, 3, stride=2, padding=1), conv(16, 16, 3, padding=1))

    def forward(self, x):
        return torch.relu(self.layer1(torch.relu(self.stem(x)))).mean((2, 3))


class _Net(nn.Module):
    """A small conv net with an auxiliary head forward never calls, a module without forward and a
    head that only `embed` uses."""

    def __init__(self, conv=nn.Conv2d):
        super().__init__()
        torch.manual_seed(0)
        self.stats = _Stats()  # registered first: the old walk over every module met it before any other
        self.body = _Body(conv)
        self.fc = nn.Linear(16, 10)
        self.aux = nn.Linear(16 * (SIZE // 2) ** 2, 10)  # an auxiliary classifier, used in training only
        self.embed_head = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(self.body(x)) * self.stats.scale

    def embed(self, x):
        return self.embed_head(self.body(x))


class _ScriptedNet(_Net):
    @torch.jit.export  # scripting compiles forward and the methods marked so; tracing traces the ones named
    def embed(self, x):
        return self.embed_head(self.body(x))


CALLED = {"body", "body.stem", "body.layer1", "body.layer1.0", "body.layer1.1", "fc"}
UNCALLED = {"stats", "aux", "embed_head"}


def _traced(path) -> str:
    """Traced for forward and embed: `aux` and `stats` keep no forward, `embed_head` only embed's."""
    x = torch.randn(1, 3, SIZE, SIZE)
    torch.jit.save(torch.jit.trace_module(_Net().eval(), {"forward": x, "embed": x}), str(path))
    return str(path)


def _reads_the_archive(path, tap):
    """The interpreted archive's output and `tap`'s activation on a random batch, against the archive
    and the original module. The interpretation runs the archive's own ATen ops in its order on the
    same inputs, so both are bit-for-bit equal (load_classifier itself interprets only where they are)."""
    classifier = load_classifier(path, image_size=SIZE)
    archive = torch.jit.load(path)
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out, acts = Tapped(classifier, [tap])(x)
        expected = archive(x)
    assert torch.equal(out, expected)
    return classifier, acts[tap], x


def test_traced_archive_taps_only_the_called_submodules(tmp_path):
    path = _traced(tmp_path / "traced.pt")
    classifier, act, x = _reads_the_archive(path, "body.layer1.0")
    names = set(classifier.layer_names())
    assert CALLED <= names and not names & UNCALLED, names
    # the tap reads what the original module's layer returns
    module, seen = _Net().eval(), {}
    module.body.layer1[0].register_forward_hook(lambda _m, _i, out: seen.update(out=out))
    with torch.no_grad():
        module(x)
    assert torch.equal(act, seen["out"])


def test_scripted_archive_taps_only_the_called_submodules(tmp_path):
    """Scripted, `aux` and `embed_head` keep a compiled forward of their own; `stats` has none."""
    path = str(tmp_path / "scripted.pt")
    torch.jit.save(torch.jit.script(_ScriptedNet(_Conv).eval()), path)
    classifier, _, _ = _reads_the_archive(path, "body.layer1.1")
    names = set(classifier.layer_names())
    assert classifier.tappable and CALLED <= names and not names & UNCALLED, names


def test_scripted_archive_with_helper_methods_keeps_class_targets(tmp_path):
    """Scripted nn.Conv2d calls a helper method, which is not interpreted: class targets only, and the
    submodule without forward no longer stops the loading."""
    path = str(tmp_path / "scripted.pt")
    torch.jit.save(torch.jit.script(_ScriptedNet().eval()), path)
    classifier = load_classifier(path, image_size=SIZE)
    assert not classifier.tappable and classifier.layer_names() == []
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(Tapped(classifier, [])(x)[0], torch.jit.load(path)(x))


def test_channel_target_on_a_called_layer_exports(tmp_path, capsys):
    path = _traced(tmp_path / "traced.pt")
    common = ["export", "--classifier", path, "--image-size", str(SIZE), "--mode", "pixel", "--batch", "1"]
    assert main([*common, "--target", "channel:body.layer1.0:3", "--out", str(tmp_path / "art")]) == 0
    assert "body.layer1.0" in load_artifacts(str(tmp_path / "art")).manifest["taps"]
    err = error_line(capsys, [*common, "--target", "channel:aux:3", "--out", str(tmp_path / "aux")])
    assert "unknown layer 'aux'" in err and "body.layer1.0" in err
