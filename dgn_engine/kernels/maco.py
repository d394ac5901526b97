"""The second classic baseline's image (maco mode): magnitude-constrained optimisation (MACO, Fel et
al., "Unlocking Feature Visualization for Deeper Networks with MAgnitude Constrained Optimization",
NeurIPS 2023). The image's Fourier magnitude is fixed to a natural-image spectrum and only its phase
is optimised: the phase is standardised, the image made by the inverse DFT, standardised, its colours
recorrelated and squashed by a sigmoid.
"""

from __future__ import annotations

import numpy as np
import torch

from .pixel import colour_matrix, colour_sigmoid, frequency_scale, inverse_dft

STANDARDISE_EPS = 1e-5


def power_law_magnitude(channels: int, size: int) -> np.ndarray:
    """The default spectrum [C, S, S//2+1]: 1 / frequency (natural images' average, roughly)."""
    return np.repeat((frequency_scale(size) / size)[None], channels, axis=0).astype(np.float32)


def image_magnitude(pixels: np.ndarray, order: str) -> np.ndarray:
    """The mean Fourier magnitude [C, S, S//2+1] of photos uint8 [N, S, S, C] in D's channel order,
    taken on their decorrelated colours (the space the phase lives in)."""
    m = colour_matrix(order)
    total = None
    for img in pixels:  # one at a time: a folder of photos need not fit in memory as floats
        x = np.moveaxis(img.astype(np.float64) / 255.0, -1, 0)
        decorrelated = np.einsum("dc,chw->dhw", np.linalg.inv(m), x)
        mag = np.abs(np.fft.rfft2(decorrelated - decorrelated.mean(axis=(1, 2), keepdims=True)))
        total = mag if total is None else total + mag
    return (total / len(pixels)).astype(np.float32)


def _standardised(x: torch.Tensor) -> torch.Tensor:
    """Each target's tensor (the first axis) to mean 0 and standard deviation 1."""
    dims = tuple(range(1, x.dim()))
    centred = x - x.mean(dim=dims, keepdim=True)
    return centred / (centred.square().mean(dim=dims, keepdim=True).sqrt() + STANDARDISE_EPS)


def maco_image(phase: torch.Tensor, magnitude: torch.Tensor, order: str) -> torch.Tensor:
    """phase [K, C, S, S//2+1] and the fixed magnitude [C, S, S//2+1] -> image [K, C, S, S] in (0, 1)."""
    phase = _standardised(phase)
    x = inverse_dft(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
    return colour_sigmoid(_standardised(x), order)
