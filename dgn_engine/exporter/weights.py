"""Loading real weights from files, with one-line errors for anything that does not fit.

Layouts: a torch state dict (torchvision's names for VGG-16), and the original Keras-1
`vgg16_weights.h5` (groups layer_0 .. layer_N holding param_0 (kernel) and param_1 (bias); Theano
kernels [out, in, kh, kw] stored flipped, since Theano convolves where torch cross-correlates;
dense kernels [in, out]).
"""

from __future__ import annotations

import os
import zipfile

import numpy as np
import torch
import torch.nn as nn

from ..digests import sha256_file  # noqa: F401 (re-exported for the loaders)
from ..errors import UsageError


def require_file(path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise UsageError(f"{what} {path!r} does not exist (give the path of a file)")


def read_torch_file(path: str, what: str = "weights file"):
    """torch.load with tensors only; a missing, truncated or foreign file becomes one line."""
    require_file(path, what)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, Exception) as e:  # noqa: B014
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(
            f"{what} {path!r} cannot be read as a torch file (truncated or not a state dict?): {reason[:200]}"
        ) from None


def state_dict_from_file(path: str) -> dict[str, torch.Tensor]:
    obj = read_torch_file(path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UsageError(f"weights file {path!r} holds no state dict (a mapping of names to tensors)")
    return obj


def apply_state_dict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load exactly: every tensor present with its shape, nothing extra; else name the first misfit."""
    expected = module.state_dict()
    for name, tensor in expected.items():
        if name not in state:
            raise UsageError(
                f"weights {source!r} do not fit this architecture: tensor {name!r} "
                f"(shape {tuple(tensor.shape)}) is missing"
            )
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise UsageError(
                f"weights {source!r} do not fit this architecture: tensor {name!r} has "
                f"shape {tuple(state[name].shape)}, the network needs {tuple(tensor.shape)}"
            )
    extra = [n for n in state if n not in expected]
    if extra:
        raise UsageError(
            f"weights {source!r} do not fit this architecture: unexpected tensor "
            f"{extra[0]!r} (shape {tuple(state[extra[0]].shape)})"
        )
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})


def keras1_state_dict(path: str, module: nn.Module) -> dict[str, torch.Tensor]:
    """Read a Keras-1 `layer_k/param_p` file into `module`'s names (conv and linear in order)."""
    require_file(path, "weights file")
    try:
        import h5py
    except ImportError:
        raise UsageError("reading Keras .h5 weights needs h5py: pip install 'dgn-engine[keras]'") from None
    try:
        with h5py.File(path, "r") as f:
            names = sorted((k for k in f.keys() if k.startswith("layer_")), key=lambda k: int(k[6:]))
            if not names:
                raise UsageError(f"weights file {path!r} is not in the Keras-1 layer_k/param_p layout")
            params = [
                (k, [np.asarray(f[k][f"param_{p}"]) for p in range(int(f[k].attrs.get("nb_params", 0)))]) for k in names
            ]
    except UsageError:
        raise
    except Exception as e:  # h5py raises OSError/KeyError for truncated or foreign files
        raise UsageError(
            f"weights file {path!r} cannot be read as Keras-1 HDF5 (truncated?): {str(e).splitlines()[0][:200]}"
        ) from None
    layers = [(k, p) for k, p in params if p]
    targets = [(n, m) for n, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if len(layers) != len(targets):
        raise UsageError(f"weights file {path!r} holds {len(layers)} weighted layers, the network has {len(targets)}")
    state = {}
    for (group, (kernel, bias)), (name, m) in zip(layers, targets):
        if isinstance(m, nn.Conv2d):
            if kernel.ndim != 4:
                raise UsageError(
                    f"weights file {path!r}: {group}/param_0 has shape {kernel.shape}, "
                    f"{name}.weight needs {tuple(m.weight.shape)}"
                )
            kernel = kernel[:, :, ::-1, ::-1]
        else:
            kernel = kernel.T
        state[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel))
        state[f"{name}.bias"] = torch.from_numpy(np.ascontiguousarray(bias))
    return state
