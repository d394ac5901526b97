"""Export: the coupled step, G and D traced into standard-ONNX graphs plus a manifest.

The step is `CoupledStep.step`, the very function the torch reference runs, traced with make_fx
(core ATen decompositions plus ours for the two backward ops that ONNX lacks) and translated by
torch.onnx's dynamo exporter. Batch K is static: the engine pads a short last batch.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
import warnings

import numpy as np
import onnx
import torch
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils.flop_counter import FlopCounterMode

from .. import __version__, demo
from ..artifacts import BACKEND_FILES, FORMAT_VERSION, MANIFEST, load_artifacts
from ..digests import sha256_file
from ..engine.outputs import write_json
from ..errors import UsageError
from ..kernels.decompositions import decomposition_table
from ..spec import HYPER, Hyper, RunSpec
from ..state import initial_state, state_shapes, trainable_shapes
from ..targets import OUTPUT, Target, Term, objective_weights
from .coupled import CoupledStep, Sources, build_coupled
from .op_origin import forward_op, layer_calling

BACKENDS = tuple(BACKEND_FILES)
OPSET = 20
WEIGHTS_FILE = "weights.bin"
EXTERNAL_MIN_BYTES = 1024  # smaller constants stay inside the graph files
ALIGN = 4096


class UntranslatableOp(Exception):
    """An ATen op of the traced step that torch.onnx cannot write as ONNX."""

    def __init__(self, op: str, detail: str):
        super().__init__(op)
        self.op, self.detail = op, detail


_MISSING = re.compile(r"No ONNX function found for <OpOverload\(op='([\w.]+)', overload='(\w+)'\)")


def trace_onnx(fn, args: list[torch.Tensor], inputs: list[str], outputs: list[str]) -> onnx.ModelProto:
    # Shapes are static, so a size a traced TorchScript archive turns into a tensor and back (int(...))
    # is a constant here: let make_fx read it instead of refusing it as data-dependent.
    gm = make_fx(fn, decomposition_table=decomposition_table(), _error_on_data_dependent_ops=False)(*args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        try:
            program = torch.onnx.export(gm.eval(), tuple(args), dynamo=True, opset_version=OPSET,
                                        input_names=inputs, output_names=outputs, verbose=False, optimize=True)
        except torch.onnx.OnnxExporterError as e:
            missing = _MISSING.search(str(e))
            summary = next((l for l in str(e).splitlines() if "Error" in l and ":" in l), str(e).splitlines()[0])
            raise UntranslatableOp(".".join(missing.groups()) if missing else "", summary[:200]) from None
    model = program.model_proto
    bad = {n.domain for n in model.graph.node if n.domain not in ("", "ai.onnx")}
    if bad:
        raise RuntimeError(f"exported graph uses non-standard ONNX domains: {sorted(bad)}")
    return model


def _example_targets(k: int, n_classes: int) -> list[Target]:
    return [Target((Term("class", i % n_classes),)) for i in range(k)]


def example_inputs(coupled: CoupledStep, spec: RunSpec, k: int) -> list[torch.Tensor]:
    """Step inputs for k example targets: state, noise, weights per layout entry, penalty, hyper."""
    layout = coupled.layout
    targets = _example_targets(k, layout[OUTPUT][0])
    state = [torch.from_numpy(v) for v in initial_state(coupled.mode, coupled.plan, coupled.optimizer,
                                                        spec.seed, targets).values()]
    weights, penalty = objective_weights(targets, layout, spec.lam)
    noise = torch.from_numpy(np.random.default_rng(0).standard_normal((k, coupled.plan.features)).astype(np.float32))
    return [*state, noise, *(torch.from_numpy(weights[n]) for n in layout), torch.from_numpy(penalty),
            torch.tensor(spec.hyper(), dtype=torch.float32)]


def trace_graphs(coupled: CoupledStep, spec: RunSpec, k: int, backends=("step-graph",)
                 ) -> tuple[dict[str, onnx.ModelProto], dict, dict[str, bytes]]:
    """The graphs for batch k (the step graph and/or the training-API backend's training model, and G
    and D alone), their input/output names and shapes for the manifest, and other files to write."""
    state_names = list(state_shapes(coupled.mode, coupled.plan, coupled.optimizer))
    trainables = list(trainable_shapes(coupled.mode, coupled.plan))
    layout = coupled.layout
    weight_names = [f"weight.{n}" for n in layout]
    n_state, n_w = len(state_names), len(layout)

    def step(*args):
        st = dict(zip(state_names, args[:n_state]))
        w = dict(zip(layout, args[n_state + 1:n_state + 1 + n_w]))
        new, loss, act, image = coupled.step(st, args[n_state], w, args[-2], args[-1])
        return (*new.values(), loss, act, image)

    def render(*args):
        params = dict(zip(trainables, args[:len(trainables)]))
        return coupled.generate(params, args[-2], Hyper.entry(args[-1], "sigma"))

    def classify(image):
        return tuple(coupled.classify(image).values())

    step_in = [*state_names, "noise", *weight_names, "penalty", "hyper"]
    step_out = [*(f"new.{n}" for n in state_names), "loss", "activation", "image"]
    step_args = example_inputs(coupled, spec, k)
    render_args = [*step_args[:len(trainables)], step_args[n_state], step_args[-1]]
    with torch.no_grad():
        image = render(*render_args)
    classify_out = [OUTPUT, *(n for n in layout if n != OUTPUT)]
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
        models["render"] = trace_onnx(render, render_args, [*trainables, "noise", "hyper"], ["image"])
        models["classifier"] = trace_onnx(classify, [image], ["image"], classify_out)
    except UntranslatableOp as e:
        raise UsageError(_untranslatable(coupled, image, e)) from None
    io = {"step_flops": k * counter.get_total_flops()}
    for name, model in models.items():
        inputs, outputs = model.graph.input, model.graph.output
        if name == "training":  # what the engine feeds and reads, not the parameters and gradient buffers
            inputs = [v for v in inputs if v.name in ("noise", *weight_names, "penalty", "hyper")]
            outputs = [v for v in outputs if not v.name.endswith(".accumulation.out")]
        io[name] = {"file": f"{name}.onnx", "inputs": [_describe(v) for v in inputs],
                    "outputs": [_describe(v) for v in outputs]}
    return models, io, files


def _untranslatable(coupled: CoupledStep, image: torch.Tensor, e: UntranslatableOp) -> str:
    if not e.op:
        return f"the step of classifier {coupled.classifier.name!r} cannot be written as ONNX: {e.detail}"
    where = layer_calling(coupled.classifier.module, image, e.op)
    role = "the gradient of " if forward_op(e.op) != e.op.rsplit(".", 1)[0] else ""
    layer = f"D's layer {where[0]!r} ({where[1]})" if where else f"classifier {coupled.classifier.name!r}"
    return (f"{layer} uses {forward_op(e.op)}, and {role}that op has no ONNX translation in dgn-engine or "
            f"torch {torch.__version__}; write that layer with other operations (or leave it out of D), or report "
            f"the op to dgn-engine")


def _describe(value: onnx.ValueInfoProto) -> dict:
    t = value.type.tensor_type
    return {"name": value.name, "shape": [d.dim_value for d in t.shape.dim],
            "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name}


def save_with_shared_weights(models: dict[str, onnx.ModelProto], folder: str) -> None:
    """Write every large constant once into weights.bin (aligned) and point each graph at it."""
    placed: dict[tuple, tuple[int, int]] = {}
    with open(os.path.join(folder, WEIGHTS_FILE), "wb") as blob:
        for name in sorted(models):
            for init in models[name].graph.initializer:
                data = onnx.numpy_helper.to_array(init).tobytes()
                if len(data) < EXTERNAL_MIN_BYTES:
                    continue
                key = (init.data_type, hashlib.sha256(data).digest())
                if key not in placed:
                    offset = -blob.tell() % ALIGN + blob.tell()
                    blob.seek(offset)
                    blob.write(data)
                    placed[key] = (offset, len(data))
                offset, length = placed[key]
                init.ClearField("raw_data")
                for field in ("float_data", "int64_data", "int32_data", "double_data"):
                    init.ClearField(field)
                init.data_location = onnx.TensorProto.EXTERNAL
                del init.external_data[:]
                for k, v in (("location", WEIGHTS_FILE), ("offset", str(offset)), ("length", str(length))):
                    entry = init.external_data.add()
                    entry.key, entry.value = k, v
            onnx.save(models[name], os.path.join(folder, f"{name}.onnx"))


def _versions() -> dict:
    try:
        import onnxruntime
        ort = onnxruntime.__version__
    except ImportError:
        ort = None
    return {"dgn_engine": __version__, "torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort}


def prepare_out(out: str, force: bool) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out!r} is a file; give a folder")
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.isfile(os.path.join(out, MANIFEST)) and not force:
            raise UsageError(f"--out {out!r} is not empty and holds no artifacts; choose an empty folder")
        if not force:
            raise UsageError(f"--out {out!r} already holds artifacts; use --force to replace them")


def export_artifacts(coupled: CoupledStep, spec: RunSpec, sources: Sources, k: int, out: str,
                     force: bool = False, log=print, backends=("step-graph",)):
    """Trace, write into a temporary folder beside `out`, then move in (manifest last)."""
    if k < 1:
        raise UsageError(f"--batch must be at least 1, got {k}")
    prepare_out(out, force)
    started = time.perf_counter()
    backends = [b for b in BACKENDS if b in backends]
    models, io, files = trace_graphs(coupled, spec, k, backends)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        save_with_shared_weights(models, tmp)
        for name, data in files.items():
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(data)
        layout = coupled.layout
        clf = coupled.classifier
        written = {f: {"size": os.path.getsize(os.path.join(tmp, f)), "sha256": sha256_file(os.path.join(tmp, f))}
                   for f in sorted(os.listdir(tmp))}
        manifest = {
            "format_version": FORMAT_VERSION, "backends": backends, "mode": coupled.mode, "batch": k,
            "spec": {**spec.to_json(), "targets": []}, "hyper": list(HYPER), "plan": coupled.plan.to_json(),
            "preprocessing": clf.preprocessing.to_json(), "num_classes": layout[OUTPUT][0],
            "labels": clf.labels, "taps": coupled.taps, "layout": {n: list(s) for n, s in layout.items()},
            "trainable_per_target": coupled.plan.trainable_count() if coupled.mode == "untrained"
            else coupled.plan.features,
            "state": [{"name": n, "shape": list(s)}
                      for n, s in state_shapes(coupled.mode, coupled.plan, coupled.optimizer).items()],
            "step_flops": io.pop("step_flops"), "graphs": io, "sources": sources.absolute().to_json(),
            "sha256": clf.sources, "files": written,
            "versions": _versions(), "opset": OPSET, "export_seconds": round(time.perf_counter() - started, 2),
        }
        write_json(os.path.join(tmp, MANIFEST + ".part"), manifest)
        os.makedirs(out, exist_ok=True)
        if os.path.exists(os.path.join(out, MANIFEST)):
            os.unlink(os.path.join(out, MANIFEST))
        for f in sorted(os.listdir(tmp)):
            if not f.endswith(".part"):
                os.replace(os.path.join(tmp, f), os.path.join(out, f))
        os.replace(os.path.join(tmp, MANIFEST + ".part"), os.path.join(out, MANIFEST))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    log(f"exported {coupled.mode} mode for {' and '.join(backends)}, batch {k}, to {out!r} in {time.perf_counter() - started:.1f} s "
        f"({size / 2**20:.1f} MiB)")
    return load_artifacts(out)




def export_demo(mode: str, out: str, log=print, backends=("step-graph",)):
    """The embedded demo's artifacts: what the package ships and what `run` caches."""
    spec, sources = demo.spec(mode), Sources(mode, demo.NAME)
    coupled = build_coupled(sources, spec, list(demo.TAPS))
    return export_artifacts(coupled, spec, sources, demo.BATCH, out, force=True, log=log, backends=backends)
