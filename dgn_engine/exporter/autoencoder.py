"""The paper's denoising autoencoder, whose decoder is the pretrained G, and its training.

Encoder: blocks of two valid 3x3 convs (ReLU + BatchNorm each) and a 2x2 max-pool, widths 32, 64,
128, 256, 512 (five blocks at 224 px; as many as fit at smaller sizes), then Dense 2048 + ReLU and a
linear Dense to the feature vector. Training: Gaussian noise on the input, MSE, Adadelta, batch 24.
"""

from __future__ import annotations

import io
import math
import os
import stat

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import progress
from ..errors import UsageError, setting
from ..files import atomic_write
from ..plan import BN_EPS, GeneratorPlan, generator_plan
from ..preprocessing import Preprocessing
from .generator import Decoder
from .weights import read_torch_file

DECODER_FORMAT = "dgn-engine-decoder/1"
ENCODER_WIDTHS = (32, 64, 128, 256, 512)


class Encoder(nn.Module):
    def __init__(self, channels: int, image_size: int, features: int, width: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = []
        c, size = channels, image_size
        for w in ENCODER_WIDTHS:
            if (size - 4) // 2 < 2:
                break
            w = max(4, round(w * width))
            for _ in range(2):
                layers += [nn.Conv2d(c, w, 3), nn.ReLU(), nn.BatchNorm2d(w, eps=BN_EPS, momentum=0.01)]
                c = w
            layers.append(nn.MaxPool2d(2))
            size = (size - 4) // 2
        self.convs = nn.Sequential(*layers)
        hidden = max(16, round(2048 * width))
        self.dense = nn.Sequential(
            nn.Flatten(), nn.Linear(c * size * size, hidden), nn.ReLU(), nn.Linear(hidden, features)
        )

    def forward(self, x):
        return self.dense(self.convs(x))


class Autoencoder(nn.Module):
    def __init__(self, plan: GeneratorPlan, width: float):
        super().__init__()
        self.encoder = Encoder(plan.out_channels, plan.out_size, plan.features, width)
        self.decoder = Decoder(plan)

    def forward(self, x):
        return self.decoder(self.encoder(x))


def save_atomic(obj, path: str) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, buf.getvalue())


def save_decoder(path: str, decoder: Decoder, pp: Preprocessing, training: dict) -> None:
    save_atomic(
        {
            "format": DECODER_FORMAT,
            "plan": decoder.plan.to_json(),
            "preprocessing": pp.to_json(),
            "tensors": {k: v.float().cpu() for k, v in decoder.tensors().items()},
            "training": training,
        },
        path,
    )


def load_decoder(path: str, pp: Preprocessing | None = None) -> tuple[GeneratorPlan, dict[str, torch.Tensor], dict]:
    """(plan, plan-named tensors, training record); checks that it fits the classifier's input."""
    obj = read_torch_file(path, "decoder file")
    if not isinstance(obj, dict) or obj.get("format") != DECODER_FORMAT:
        raise UsageError(f"decoder file {path!r} is not a dgn-engine decoder (make one with dgn-engine train-decoder)")
    plan = GeneratorPlan.from_json(obj["plan"])
    if pp is not None and (plan.out_size != pp.image_size or plan.out_channels != pp.channels):
        raise UsageError(
            f"decoder {path!r} makes {plan.out_channels}x{plan.out_size}x{plan.out_size} images; "
            f"the classifier takes {pp.channels}x{pp.image_size}x{pp.image_size}"
        )
    tensors = obj["tensors"]
    expected = {**plan.param_shapes(), **plan.buffer_shapes()}
    for name, shape in expected.items():
        got = tuple(tensors[name].shape) if name in tensors else None
        if got != shape:
            raise UsageError(
                f"decoder {path!r} does not fit its generator: tensor {name!r} has shape "
                f"{got}, the generator needs {shape}"
            )
    return plan, tensors, obj.get("training", {})


def load_images(folder: str, pp: Preprocessing, what: str = "image folder") -> np.ndarray:
    """Every image under `folder`, center-cropped square and resized: uint8 [N, H, W, C]."""
    from PIL import Image

    if not os.path.isdir(folder):
        raise UsageError(f"{what} {folder!r} is not a folder")
    files = sorted(
        os.path.join(d, f)
        for d, _, fs in os.walk(folder)
        for f in fs
        if f.lower().endswith((".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"))
    )
    if not files:
        raise UsageError(f"{what} {folder!r} holds no PNG/JPEG/BMP/GIF/WebP images")
    for path in files:  # a link could point anywhere, and a FIFO or device would block or never end
        if os.path.islink(path) or not stat.S_ISREG(os.lstat(path).st_mode):
            raise UsageError(f"{what}: {path!r} is a link or not a plain file; move it out of {folder!r}")
    out = np.empty((len(files), pp.image_size, pp.image_size, pp.channels), np.uint8)
    for i, path in enumerate(progress.bar(iterable=files, desc="loading images", unit="img", leave=False)):
        try:
            with Image.open(path) as img:
                img = img.convert("L" if pp.channels == 1 else "RGB")
                w, h = img.size
                s = min(w, h)
                img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
                arr = np.asarray(img.resize((pp.image_size, pp.image_size), Image.BILINEAR))
        except (OSError, Image.DecompressionBombError) as e:  # Pillow's pixel limit: a bomb is refused
            raise UsageError(f"cannot read image {path!r}: {str(e)[:200]}") from None
        out[i] = arr[..., None] if pp.channels == 1 else arr
    return out


def train_decoder(
    images: np.ndarray,
    pp: Preprocessing,
    out: str,
    *,
    epochs: int,
    batch: int = 24,
    width: float = 1.0,
    noise_sigma: float = 0.1,
    val_fraction: float = 0.1,
    seed: int = 0,
    threads: int | None = None,
    log=print,
) -> dict:
    """Train the denoising autoencoder; a checkpoint per epoch (`out`.ckpt) makes it resumable."""
    if threads:
        torch.set_num_threads(threads)
    plan = generator_plan("decoder", pp.image_size, pp.channels, width)
    config = {
        "plan": plan.to_json(),
        "preprocessing": pp.to_json(),
        "batch": batch,
        "width": width,
        "noise_sigma": noise_sigma,
        "val_fraction": val_fraction,
        "seed": seed,
        "images": len(images),
    }
    order = np.random.default_rng(seed).permutation(len(images))
    n_val = int(round(len(images) * val_fraction)) if len(images) > 1 else 0
    val_idx, train_idx = order[:n_val], order[n_val:]
    torch.manual_seed(seed)
    model = Autoencoder(plan, width)
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0, rho=0.95, eps=1e-8)
    gen = torch.Generator().manual_seed(seed)
    ckpt_path, start, history = out + ".ckpt", 0, []
    if os.path.exists(ckpt_path):
        ckpt = read_torch_file(ckpt_path, "checkpoint")
        if ckpt.get("config") != config:
            raise UsageError(
                f"{ckpt_path!r} belongs to a training with other settings; delete it or choose another {setting('out')}"
            )
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["generator"])
        start, history = ckpt["epoch"], ckpt["history"]
        log(f"resuming {out!r} after epoch {start} of {epochs}")
    noise_scale = torch.tensor([noise_sigma / s for s in pp.std]).view(1, -1, 1, 1)

    def as_model(idx) -> torch.Tensor:
        return torch.from_numpy(pp.to_model(images[idx]))

    def mse(idx) -> float | None:
        if len(idx) == 0:
            return None
        model.eval()
        total = 0.0
        with torch.no_grad():
            for i in range(0, len(idx), 256):
                x = as_model(idx[i : i + 256])
                total += F.mse_loss(model(x), x, reduction="sum").item()
        return total / (len(idx) * math.prod(images.shape[1:]))

    for epoch in range(start, epochs):
        model.train()
        perm = train_idx[torch.randperm(len(train_idx), generator=gen).numpy()]
        running, seen = 0.0, 0
        bar = progress.bar(
            iterable=range(0, len(perm), batch), desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False
        )
        for i in bar:
            idx = np.sort(perm[i : i + batch])
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            x = as_model(idx)
            noisy = x + noise_scale * torch.randn(x.shape, generator=gen)
            loss = F.mse_loss(model(noisy), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running, seen = running + loss.item() * len(idx), seen + len(idx)
            bar.set_postfix(mse=f"{running / seen:.4f}")
        history.append({"epoch": epoch + 1, "train_mse": running / max(seen, 1), "val_mse": mse(val_idx)})
        val = history[-1]["val_mse"]
        log(
            f"epoch {epoch + 1}/{epochs}: train MSE {history[-1]['train_mse']:.5f}"
            + (f", held-out MSE {val:.5f}" if val is not None else "")
        )
        training = {
            "epochs": epoch + 1,
            "history": history,
            "train_images": len(train_idx),
            "heldout_images": len(val_idx),
            "optimizer": "Adadelta(lr=1, rho=0.95)",
            "batch": batch,
            "noise_sigma": noise_sigma,
            "seed": seed,
        }
        save_decoder(out, model.decoder, pp, training)
        save_atomic(
            {
                "config": config,
                "epoch": epoch + 1,
                "history": history,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "generator": gen.get_state(),
            },
            ckpt_path,
        )
    return {"epochs": epochs, "history": history}
