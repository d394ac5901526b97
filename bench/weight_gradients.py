"""Which form of a convolution's weight gradient is faster on this device: each as a one-node graph in
onnxruntime, beside torch's own backward-filter kernel, on G's layer shapes (and two D-like layers).

    python bench/weight_gradients.py [--device cpu|cuda] [--repeats 5] [--json FILE]

The exporter picks the form by channels per group and work (dgn_engine/kernels/decompositions.py);
this table is what that rule rests on, per device. Each form's result is checked against float64.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time

# (N, C, H, W) input, Cout, kernel, groups, stride, padding: a 224 px quarter-width G's layers at K=1
# and K=4 targets (targets are groups), the paper's G's widest layer at K=32, an RGB stem, a D layer,
# then the default G from 224 px (3/16 width; here at 240 px, EfficientNet-Lite1's size) at K=4.
SHAPES = [
    ((1, 128, 116, 116), 128, 4, 1, 1, 0),
    ((1, 128, 60, 60), 256, 3, 1, 1, 0),
    ((1, 256, 32, 32), 256, 3, 1, 1, 0),
    ((1, 512, 10, 10), 128, 2, 1, 1, 0),
    ((1, 128, 226, 226), 3, 3, 1, 1, 0),
    ((1, 512, 116, 116), 512, 4, 4, 1, 0),
    ((1, 512, 60, 60), 1024, 3, 4, 1, 0),
    ((1, 1024, 32, 32), 1024, 3, 4, 1, 0),
    ((1, 512, 226, 226), 12, 3, 4, 1, 0),
    ((1, 32 * 32, 116, 116), 32 * 32, 4, 32, 1, 0),
    ((4, 3, 224, 224), 64, 7, 1, 2, 3),
    ((4, 64, 56, 56), 64, 3, 1, 1, 1),
    ((1, 384, 20, 20), 192, 4, 4, 1, 0),
    ((1, 192, 34, 34), 192, 3, 4, 1, 0),
    ((1, 192, 64, 64), 96, 3, 4, 1, 0),
    ((1, 96, 62, 62), 96, 3, 4, 1, 1),
    ((1, 96, 124, 124), 96, 4, 4, 1, 0),
    ((1, 96, 242, 242), 12, 3, 4, 1, 0),
]


def _call(form, layer, x, g):
    return form(x, g, *layer)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)

    import numpy as np
    import onnxruntime as ort
    import torch
    import torch.nn.functional as F

    from dgn_engine.engine.backends.onnx_session import providers
    from dgn_engine.exporter.tracing import trace_onnx
    from dgn_engine.kernels import decompositions as dec

    provider_list, device = providers(args.device, "float32")
    rows = []
    forms = {"conv": dec.weight_grad_conv, "products": dec.weight_grad_matmul, "shifted": dec.weight_grad_shifted}
    header = "".join(f"{f + ' ms':>12s}" for f in forms)
    print(f"{'input':>22s} {'Cout':>5s} {'k':>2s} {'groups':>6s}{header} torch ms")
    for shape, cout, k, groups, stride, pad in SHAPES:
        torch.manual_seed(0)
        x = torch.randn(*shape)
        w = torch.randn(cout, shape[1] // groups, k, k)
        g = torch.randn_like(F.conv2d(x, w, None, stride, pad, 1, groups))
        exact = torch.nn.grad.conv2d_weight(x.double(), w.shape, g.double(), stride, pad, 1, groups).numpy()
        row = {"input": list(shape), "cout": cout, "kernel": k, "groups": groups, "stride": stride}
        for name, form in forms.items():
            if name == "shifted" and stride != 1:  # stride-1 convolutions only
                continue
            layer = ((k, k), (stride, stride), (pad, pad), (1, 1), groups)
            model = trace_onnx(functools.partial(_call, form, layer), [x, g], ["x", "g"], ["w"])
            sess = ort.InferenceSession(model.SerializeToString(), providers=provider_list)
            binding = sess.io_binding()  # inputs on the device, as in the engine: no copies in the timing
            for arg, value in (("x", x), ("g", g)):
                binding.bind_ortvalue_input(arg, ort.OrtValue.ortvalue_from_numpy(value.numpy(), device, 0))
            binding.bind_output("w", device)
            times = []
            for _ in range(args.repeats + 1):
                t0 = time.perf_counter()
                sess.run_with_iobinding(binding)
                times.append(time.perf_counter() - t0)
            got = binding.copy_outputs_to_cpu()[0]
            row[f"{name}_error"] = float(np.abs(got - exact).max() / np.abs(exact).max())
            row[f"{name}_ms"] = 1000 * min(times[1:])
        xd, gd = x.to(device), g.to(device)
        times = []
        for _ in range(args.repeats + 1):
            t0 = time.perf_counter()
            torch.nn.grad.conv2d_weight(xd, w.shape, gd, stride, pad, 1, groups)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        row["torch_ms"] = 1000 * min(times[1:])
        rows.append(row)
        times = "".join(f"{row[f + '_ms']:12.1f}" if f + "_ms" in row else f"{'-':>12s}" for f in forms)
        errors = [row[f + "_error"] for f in forms if f + "_error" in row]
        print(
            f"{str(tuple(shape)):>22s} {cout:5d} {k:2d} {groups:6d}{times} {row['torch_ms']:8.1f}"
            + ("  (error over 1e-4!)" if max(errors) > 1e-4 else ""),
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": args.device, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
