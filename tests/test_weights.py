"""Both weight layouts, written here with random values and checked against the values applied
directly by each format's own definition."""

import h5py
import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from dgn_engine.errors import UsageError
from dgn_engine.exporter.classifiers import load_classifier
from dgn_engine.exporter.vgg import VGG16_CONVS, vgg_style
from dgn_engine.preprocessing import IMAGENET_CAFFE, IMAGENET_TORCHVISION

SMALL_CONVS = (4, 4, "M", 8, "M")


def keras1_layers(convs, in_channels, size, hidden, classes, rng):
    """The Keras-1 Sequential of the VGG gist: ZeroPadding2D + Convolution2D per conv, MaxPooling2D,
    Flatten, Dense + Dropout; kernels in Theano order [out, in, kh, kw], dense [in, out]."""
    layers, c = [], in_channels
    for v in convs:
        if v == "M":
            layers.append(("pool", ()))
            size //= 2
        else:
            layers += [
                ("pad", ()),
                (
                    "conv",
                    (
                        (rng.standard_normal((v, c, 3, 3)) * 0.3).astype(np.float32),
                        (rng.standard_normal(v) * 0.1).astype(np.float32),
                    ),
                ),
            ]
            c = v
    layers.append(("flatten", ()))
    width = c * size * size
    for h in (*hidden, classes):
        layers.append(
            (
                "dense",
                (
                    (rng.standard_normal((width, h)) / np.sqrt(width)).astype(np.float32),
                    (rng.standard_normal(h) * 0.1).astype(np.float32),
                ),
            )
        )
        if h != classes:
            layers.append(("dropout", ()))
        width = h
    return layers


def write_keras1(path, layers):
    with h5py.File(path, "w") as f:
        f.attrs["nb_layers"] = len(layers)
        for k, (_, params) in enumerate(layers):
            g = f.create_group(f"layer_{k}")
            g.attrs["nb_params"] = len(params)
            for p, value in enumerate(params):
                g.create_dataset(f"param_{p}", data=value)


def keras1_forward(layers, x):
    """Theano semantics: convolution flips the kernel (true convolution); dense is x @ W + b."""
    for kind, params in layers:
        if kind == "pad":
            x = np.pad(x, ((0, 0), (1, 1), (1, 1)))
        elif kind == "conv":
            w, b = params
            patches = sliding_window_view(x, (3, 3), axis=(1, 2))  # [c, i, j, u, v]
            x = np.maximum(np.einsum("ocuv,cijuv->oij", w, patches[..., ::-1, ::-1]) + b[:, None, None], 0)
        elif kind == "pool":
            c, h, w_ = x.shape
            x = x[:, : h // 2 * 2, : w_ // 2 * 2].reshape(c, h // 2, 2, w_ // 2, 2).max(axis=(2, 4))
        elif kind == "flatten":
            x = x.reshape(-1)
        elif kind == "dense":
            w, b = params
            x = x @ w + b
            if params is not layers[-1][1]:  # ReLU on every dense layer but the last
                x = np.maximum(x, 0)
    return x


def small_factory():
    return vgg_style(3, 12, 5, convs=SMALL_CONVS, hidden=(6,))


def test_keras1_layout_small(tmp_path):
    rng = np.random.default_rng(0)
    layers = keras1_layers(SMALL_CONVS, 3, 12, (6,), 5, rng)
    path = str(tmp_path / "small.h5")
    write_keras1(path, layers)
    from dgn_engine.exporter.weights import apply_state_dict, keras1_state_dict

    module = small_factory()
    apply_state_dict(module, keras1_state_dict(path, module), path)
    x = rng.standard_normal((3, 12, 12)).astype(np.float32)
    expected = keras1_forward(layers, x.astype(np.float64))
    got = module(torch.from_numpy(x)[None]).detach().numpy()[0]
    # float32 network against a float64 evaluation of the same values: rounding only
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_torchvision_layout_small(tmp_path):
    """A state dict with random values loads and computes what those values compute directly."""
    rng = np.random.default_rng(1)
    module = small_factory()
    state = {
        k: torch.from_numpy(rng.standard_normal(tuple(v.shape)).astype(np.float32) * 0.3)
        for k, v in module.state_dict().items()
    }
    path = str(tmp_path / "small.pth")
    torch.save(state, path)
    loaded = load_classifier("tests.test_weights:small_factory", path, image_size=12)
    x = torch.from_numpy(rng.standard_normal((2, 3, 12, 12)).astype(np.float32))
    F = torch.nn.functional
    h = x
    for i in (0, 2):
        h = F.relu(F.conv2d(h, state[f"features.{i}.weight"], state[f"features.{i}.bias"], padding=1))
    h = F.max_pool2d(h, 2)
    h = F.relu(F.conv2d(h, state["features.5.weight"], state["features.5.bias"], padding=1))
    h = F.max_pool2d(h, 2).flatten(1)
    h = F.relu(h @ state["classifier.0.weight"].T + state["classifier.0.bias"])
    h = h @ state["classifier.3.weight"].T + state["classifier.3.bias"]
    torch.testing.assert_close(loaded.module(x), h, rtol=1e-5, atol=1e-5)
    assert loaded.sources[path] and len(loaded.sources[path]) == 64  # sha256 recorded


@pytest.fixture(scope="module")
def vgg16_keras_file(tmp_path_factory):
    rng = np.random.default_rng(2)
    layers = keras1_layers(VGG16_CONVS, 3, 224, (4096, 4096), 1000, rng)
    path = str(tmp_path_factory.mktemp("w") / "vgg16_weights.h5")
    write_keras1(path, layers)
    return path, layers


@pytest.mark.slow  # the full-size VGG-16 (528 MB of weights)
def test_vgg16_keras1_layout_full_size(vgg16_keras_file):
    """The real VGG-16 reads the original 37-layer Keras-1 file: kernels flipped, dense transposed."""
    path, layers = vgg16_keras_file
    assert len(layers) == 37
    clf = load_classifier("vgg16", path)
    state = clf.module.state_dict()
    convs = [p for k, p in layers if k == "conv"]
    dense = [p for k, p in layers if k == "dense"]
    conv_names = [f"features.{i}" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)]
    for name, (w, b) in zip(conv_names, convs):
        np.testing.assert_array_equal(state[name + ".weight"].numpy(), w[:, :, ::-1, ::-1])
        np.testing.assert_array_equal(state[name + ".bias"].numpy(), b)
    for name, (w, _b) in zip(("classifier.0", "classifier.3", "classifier.6"), dense):
        np.testing.assert_array_equal(state[name + ".weight"].numpy(), w.T)
    assert clf.preprocessing == IMAGENET_CAFFE
    assert clf.num_classes == 1000


@pytest.mark.slow  # the full-size VGG-16 (528 MB of weights)
def test_vgg16_torchvision_layout_full_size(tmp_path):
    from dgn_engine.exporter.vgg import vgg16

    state = {k: torch.randn(v.shape) * 0.01 for k, v in vgg16().state_dict().items()}
    path = str(tmp_path / "vgg16.pth")
    torch.save(state, path)
    clf = load_classifier("vgg16", path)
    for k, v in clf.module.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)
    assert clf.preprocessing == IMAGENET_TORCHVISION
    names = clf.layer_names()
    # every named module is tappable: the blocks and the 31 + 7 layers in them
    assert names[:3] == ["features", "features.0", "features.1"] and names[-1] == "classifier.6"
    assert sum(1 for n in names if n.startswith("features")) == 32


def test_wrong_architecture_names_first_misfit(tmp_path):
    from dgn_engine.exporter.vgg import vgg16

    state = vgg16().state_dict()
    state["features.2.weight"] = torch.zeros(32, 64, 3, 3)
    path = str(tmp_path / "other.pth")
    torch.save(state, path)
    with pytest.raises(
        UsageError,
        match=r"tensor 'features\.2\.weight' has shape \(32, 64, 3, 3\), "
        r"the network needs \(64, 64, 3, 3\)",
    ):
        load_classifier("vgg16", path)


def test_truncated_files(tmp_path, vgg16_keras_file):
    from dgn_engine.exporter.vgg import vgg16

    pth = str(tmp_path / "t.pth")
    torch.save(vgg16().features[0].state_dict(), pth)
    data = open(pth, "rb").read()
    open(pth, "wb").write(data[: len(data) // 2])
    with pytest.raises(UsageError, match="cannot be read as a torch file"):
        load_classifier("vgg16", pth)
    h5 = str(tmp_path / "t.h5")
    open(h5, "wb").write(open(vgg16_keras_file[0], "rb").read(4096))
    with pytest.raises(UsageError, match="cannot be read as Keras-1 HDF5"):
        load_classifier("vgg16", h5)
    with pytest.raises(UsageError, match="does not exist"):
        load_classifier("vgg16", str(tmp_path / "missing.pth"))
