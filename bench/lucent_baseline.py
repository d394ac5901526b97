"""The field's standard tool on the same work, for `bench --quality`'s table: lucent 0.1.8's render_vis
(FFT image, decorrelated colours, its standard transforms, Adam 0.05, 512 steps) on classifier D's
logits, for the classes `bench --quality --classes N` picks, each PNG scored by D and the judges as
dgn-engine's are, with seconds per target.

    pip install --no-deps torch-lucent==0.1.8 kornia==0.4.1 decorator
    python bench/lucent_baseline.py --classifier bench.imagenet_zoo:lite1 --judge bench.imagenet_zoo:lite0 \\
        --classes 16 --threads 2 --out /tmp/lucent

lucent imports one class from torchvision (Normalize, unused here: D's own preprocessing is applied);
where torchvision cannot be imported, this script supplies that name. D sees the image at its own input
size (lucent's fixed_image_size); the parameterised image is lucent's default 128 px unless --param-size.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _import_lucent():
    try:
        import torchvision.transforms  # noqa: F401
    except Exception:  # a build for another device fails to load with errors of its own
        import torch

        class Normalize(torch.nn.Module):
            def __init__(self, mean, std):
                super().__init__()
                self.mean, self.std = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]

            def forward(self, x):
                return (x - self.mean) / self.std

        package, transforms = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")
        transforms.Normalize, package.transforms = Normalize, transforms
        sys.modules.update({"torchvision": package, "torchvision.transforms": transforms})
    try:
        from lucent.optvis import param, render
    except ImportError as e:
        sys.exit(f"{e.name} is missing: pip install --no-deps torch-lucent==0.1.8 kornia==0.4.1 decorator")
    return param, render


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classifier", default="bench.imagenet_zoo:lite1")
    p.add_argument("--judge", action="append", default=None)
    p.add_argument("--classes", type=int, default=16)
    p.add_argument("--steps", type=int, default=512)
    p.add_argument("--param-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from dgn_engine.engine.outputs import png_bytes
    from dgn_engine.exporter.classifiers import load_classifier
    from dgn_engine.files import atomic_write
    from dgn_engine.quality import judge, load_judges, logits_count, sample_classes, table

    param, render = _import_lucent()
    if args.threads:
        torch.set_num_threads(args.threads)
    d = load_classifier(args.classifier)
    judges = load_judges(args.judge or ["bench.imagenet_zoo:lite0"], d)
    pp = d.preprocessing
    if pp.order == "L":
        sys.exit("lucent makes colour images: D takes grey ones")
    mean = torch.tensor(pp.mean)[None, :, None, None]
    std = torch.tensor(pp.std)[None, :, None, None]

    class Logits(torch.nn.Module):
        """D on 0..1 RGB images (its own preprocessing applied), its logits exposed to lucent's hooks as
        the layer "logits"."""

        def __init__(self):
            super().__init__()
            self.net, self.logits = d.module.eval(), torch.nn.Identity()

        def forward(self, x):
            x = x.flip(1) if pp.order == "BGR" else x
            return self.logits(self.net((x - mean) / std))

    model = Logits().eval()
    for w in model.parameters():
        w.requires_grad_(False)
    if os.path.islink(args.out):
        sys.exit(f"--out {args.out!r} is a symbolic link: name a folder")
    os.makedirs(args.out, exist_ok=True)
    chosen = sample_classes(logits_count(d), args.classes)
    paths, seconds = [], []
    for c in chosen:
        torch.manual_seed(args.seed)
        np.random.seed(args.seed)  # lucent draws its transforms' scales and angles from numpy
        start = time.perf_counter()
        images = render.render_vis(
            model,
            f"logits:{c}",
            param_f=lambda: param.image(args.param_size),
            thresholds=(args.steps,),
            preprocess=False,
            fixed_image_size=pp.image_size,
            show_image=False,
            progress=False,
        )
        seconds.append(time.perf_counter() - start)
        path = os.path.join(args.out, f"class-{c:04d}.png")
        atomic_write(path, png_bytes((np.clip(images[-1][0], 0, 1) * 255).round().astype(np.uint8)))
        paths.append(path)
        print(f"class {c}: {seconds[-1]:.1f} s", flush=True)
    row = {
        "mode": "lucent",
        "transforms": "lucent's",
        "steps": args.steps,
        "seeds": 1,
        "targets": len(chosen),
        **judge(paths, chosen, d, judges),
        "seconds_per_target": float(np.mean(seconds)),
    }
    print(table([row]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
