"""Export of the step: the coupled step, G and D traced into the graphs an artifacts folder holds.

The step is `CoupledStep.step`, the very function the torch reference runs (tracing.py writes it as
ONNX). Batch K is static: the engine pads a short last batch.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from torch.utils.flop_counter import FlopCounterMode

from ..errors import UsageError, setting
from ..generators import generator
from ..spec import Hyper, RunSpec
from ..state import initial_state, state_shapes, trainable_shapes
from ..targets import OUTPUT, PROBABILITY, Target, Term, objective_weights
from ..transforms import parameters
from .coupled import CoupledStep
from .tracing import UntranslatableOp, trace_onnx, untranslatable


def _example_targets(k: int, n_classes: int) -> list[Target]:
    return [Target((Term("class", i % n_classes),)) for i in range(k)]


def example_inputs(coupled: CoupledStep, spec: RunSpec, k: int) -> list[torch.Tensor]:
    """Step inputs for k example targets: state, noise (where G has a feature vector), the transforms'
    parameters (where the spec has transforms), weights per layout entry, penalty, hyper."""
    layout = coupled.layout
    targets = _example_targets(k, layout[OUTPUT][0])
    state = [
        torch.from_numpy(v)
        for v in initial_state(coupled.mode, coupled.plan, coupled.optimizer, spec.seed, targets).values()
    ]
    weights, penalty = objective_weights(targets, layout, spec.lam)
    rng = np.random.default_rng(0)
    noise = [torch.from_numpy(rng.standard_normal((k, coupled.plan.features)).astype(np.float32))]
    noise *= coupled.plan.features > 0
    size = coupled.classifier.preprocessing.image_size
    transform = [torch.from_numpy(parameters(rng.random((k, 4)), spec.transforms, size, size))] * coupled.transforms
    return [
        *state,
        *noise,
        *transform,
        *(torch.from_numpy(weights[n]) for n in layout),
        torch.from_numpy(penalty),
        torch.tensor(spec.hyper(), dtype=torch.float32),
    ]


def check_backends(spec: RunSpec, backends) -> None:
    if "training-api" in backends and not generator(spec.mode).training_api:
        raise UsageError(f"the training-api backend has no {spec.mode} mode; use the step-graph backend")
    if "training-api" in backends and spec.transforms.enabled:
        raise UsageError(
            f"{setting('transforms')}: the training-api backend has no transforms; export it with "
            f"{setting('transforms', 'none')}, "
            "or use the step-graph backend"
        )


def trace_graphs(
    coupled: CoupledStep, spec: RunSpec, k: int, backends=("step-graph",)
) -> tuple[dict[str, onnx.ModelProto], dict, dict[str, bytes]]:
    """The graphs for batch k (the step graph and/or the training-API backend's training model, and G
    and D alone), their input/output names and shapes for the manifest, and other files to write."""
    check_backends(spec, backends)
    state_names = list(state_shapes(coupled.mode, coupled.plan, coupled.optimizer))
    trainables = list(trainable_shapes(coupled.mode, coupled.plan))
    layout = coupled.layout
    weight_names = [f"weight.{n}" for n in layout]
    n_state, n_w = len(state_names), len(layout)
    n_noise, n_t = int(coupled.plan.features > 0), int(coupled.transforms)  # pixel mode has no noise

    def step(*args):
        st = dict(zip(state_names, args[:n_state]))
        noise = args[n_state] if n_noise else None
        transform = args[n_state + n_noise] if n_t else None
        first_w = n_state + n_noise + n_t
        w = dict(zip(layout, args[first_w : first_w + n_w]))
        new, loss, act, image = coupled.step(st, noise, w, args[-2], args[-1], transform)
        return (*new.values(), loss, act, image)

    def render(*args):
        params = dict(zip(trainables, args[: len(trainables)]))
        if not n_noise:
            return coupled.generate(params, None, None)
        return coupled.generate(params, args[-2], Hyper.entry(args[-1], "sigma"))

    def classify(image):
        return tuple(coupled.classify(image).values())

    step_in = [*state_names, *["noise"] * n_noise, *["transform"] * n_t, *weight_names, "penalty", "hyper"]
    step_out = [*(f"new.{n}" for n in state_names), "loss", "activation", "image"]
    step_args = example_inputs(coupled, spec, k)
    render_in = [*trainables, *["noise", "hyper"] * n_noise]
    render_args = [*step_args[: len(trainables)], *[step_args[n_state], step_args[-1]] * n_noise]
    with torch.no_grad():
        image = render(*render_args)
    classify_out = [OUTPUT, *(n for n in layout if n != OUTPUT), *[PROBABILITY] * bool(coupled.classifier.stripped)]
    with FlopCounterMode(display=False) as counter:  # convolutions and matrix products of one target's step
        step(*example_inputs(coupled, spec, 1))
    files: dict[str, bytes] = {}
    models = {}
    try:
        if "step-graph" in backends:
            models["step"] = trace_onnx(step, step_args, step_in, step_out)
        if "training-api" in backends:
            from .training_api import training_graphs

            models["training"], files["checkpoint"] = training_graphs(coupled, step_args)
        models["render"] = trace_onnx(render, render_args, render_in, ["image"])
        models["classifier"] = trace_onnx(classify, [image], ["image"], classify_out)
    except UntranslatableOp as e:
        raise UsageError(untranslatable(coupled, image, e)) from None
    io = {"step_flops": k * counter.get_total_flops()}
    for name, model in models.items():
        inputs, outputs = model.graph.input, model.graph.output
        if name == "training":  # what the engine feeds and reads, not the parameters and gradient buffers
            inputs = [v for v in inputs if v.name in ("noise", *weight_names, "penalty", "hyper")]
            outputs = [v for v in outputs if not v.name.endswith(".accumulation.out")]
        io[name] = {
            "file": f"{name}.onnx",
            "inputs": [_describe(v) for v in inputs],
            "outputs": [_describe(v) for v in outputs],
        }
    return models, io, files


def _describe(value: onnx.ValueInfoProto) -> dict:
    t = value.type.tensor_type
    return {
        "name": value.name,
        "shape": [d.dim_value for d in t.shape.dim],
        "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
    }
