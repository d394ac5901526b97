"""Export for the training-API backend: G + D as onnxruntime training artifacts.

The forward model (G then D: trainables, noise, hyper -> class logits, taps, image) is traced like
the step graph, its trainables turned into initializers (the training API differentiates only
parameters, never graph inputs), and the objective added on top as an onnxblock loss whose target
weights and penalty are extra graph inputs. `generate_artifacts` then builds the gradient graph
(onnxruntime's own autodiff, independent of torch's) and the checkpoint of the trainables. The
optimiser stays outside: AdaMax and Nesterov are applied by the engine (its optimisers are only
AdamW and SGD).

Traps of onnxruntime-training 1.19.2 this relies on being avoided (each has a test): opset <= 21
and IR <= 10; no CPU gradient for Resize (G upsamples with expand); ConvGrad ignores auto_pad (G's
"same" padding is explicit: exact, even when asymmetric); no gradient w.r.t. a graph input (the
trainables are initializers); BatchNormalization in training mode breaks the eval model (G's
BatchNorm is plain arithmetic and the eval model is not used); every BatchNormalization becomes its
batch-statistics form (D's unfolded ones are rewritten as arithmetic); a frozen initializer shared by
two LayerNorms or BatchNorms gets its gradient defined twice (copies); LayerNormalization needs its
optional outputs (named).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from contextlib import contextmanager

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from ..errors import UsageError, setting
from ..spec import HYPER, Hyper
from ..state import state_shapes, trainable_shapes
from ..targets import OUTPUT
from .coupled import CoupledStep
from .tracing import trace_onnx

MAX_IR = 10  # what onnxruntime-training 1.19.2 loads (and opset <= 21: the export writes 20)


def training_api():
    """onnxruntime.training, or one line saying how to get it."""
    try:
        import onnxruntime
        from onnxruntime.training import artifacts, onnxblock
    except ImportError:
        raise UsageError(
            f"{setting('backend', 'training-api')} needs onnxruntime-training: in its own virtual environment, "
            "pip install 'dgn-engine[training-api,export]'"
        ) from None
    if tuple(int(x) for x in onnx.__version__.split(".")[:2]) > (1, 17):
        raise UsageError(
            f"onnx {onnx.__version__} writes models onnxruntime-training 1.19 cannot load; "
            "pip install onnx==1.17.0 in the training-api environment"
        )
    onnxruntime.set_default_logger_severity(3)
    return artifacts, onnxblock


@contextmanager
def native_log_kept_unless_failure():
    """The gradient builder logs every graph transformer at INFO level to the process's stderr,
    whatever severity Python sets; keep that out of sight unless the export fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            log.seek(0)
            lines = log.read().decode(errors="replace").splitlines()
            sys.stderr.write("\n".join(line for line in lines if "[I:" not in line)[-4000:] + "\n")
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def forward_model(coupled: CoupledStep, args: list[torch.Tensor]) -> onnx.ModelProto:
    """G then D for the example step inputs `args` (state, noise, weights, penalty, hyper) of k
    targets, with the trainables as initializers named as in the state."""
    trainables = list(trainable_shapes(coupled.mode, coupled.plan))
    n = len(trainables)
    params, noise, hyper = args[:n], args[len(state_shapes(coupled.mode, coupled.plan, coupled.optimizer))], args[-1]

    def forward(*a):
        image = coupled.generate(dict(zip(trainables, a[:n])), a[n], Hyper.entry(a[n + 1], "sigma"))
        return (*coupled.logits(image).values(), image)  # in the layout's order

    model = trace_onnx(forward, [*params, noise, hyper], [*trainables, "noise", "hyper"], [*coupled.layout, "image"])
    inputs = {v.name: v for v in model.graph.input}
    for name, value in zip(trainables, params):
        model.graph.input.remove(inputs[name])
        model.graph.initializer.append(numpy_helper.from_array(value.numpy(), name))
    model.ir_version = min(model.ir_version, MAX_IR)
    _batch_norms_as_arithmetic(model)
    _prepare_for_gradient_builder(model, trainables)
    return model


def _batch_norms_as_arithmetic(model: onnx.ModelProto) -> None:
    """D's eval-mode BatchNormalization as x * scale + shift with the running statistics folded in:
    onnxruntime-training turns every BatchNormalization into its training form (BatchNormInternal),
    which normalises with the statistics of the batch and so computes another D. (Nets whose BN
    follows a conv have it folded into the conv by the exporter; pre-activation nets keep it.)"""
    initializers = {t.name: t for t in model.graph.initializer}
    ranks = {
        v.name: len(v.type.tensor_type.shape.dim) for v in onnx.shape_inference.infer_shapes(model).graph.value_info
    }
    ranks.update({v.name: len(v.type.tensor_type.shape.dim) for v in model.graph.input})
    nodes = []
    for node in model.graph.node:
        training = any(a.name == "training_mode" and a.i for a in node.attribute)
        if node.op_type != "BatchNormalization" or training or not all(n in initializers for n in node.input[1:5]):
            nodes.append(node)
            continue
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (numpy_helper.to_array(initializers[n]).astype(np.float64) for n in node.input[1:5])
        scale = gamma / np.sqrt(var + eps)
        shape = [-1] + [1] * (ranks.get(node.input[0], 4) - 2)
        names = [f"{node.output[0]}.bn_scale", f"{node.output[0]}.bn_shift"]
        for name, value in zip(names, (scale, beta - mean * scale)):
            model.graph.initializer.append(numpy_helper.from_array(value.reshape(shape).astype(np.float32), name))
        scaled = f"{node.output[0]}.bn_scaled"
        nodes += [
            helper.make_node("Mul", [node.input[0], names[0]], [scaled], name=scaled),
            helper.make_node("Add", [scaled, names[1]], [node.output[0]], name=f"{node.output[0]}.bn"),
        ]
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _prepare_for_gradient_builder(model: onnx.ModelProto, trainables: list[str]) -> None:
    """Two traps of onnxruntime-training's gradient builder. Some gradient builders (LayerNormalization,
    BatchNormalization) name the gradient of each weight input after the input, even a frozen one, so
    that two nodes sharing one initializer (equal freshly initialised weights, deduplicated by the
    tracer) define it twice: each consumer gets its own copy of a shared frozen initializer.
    LayerNormalization's builder also reads the node's optional Mean and InvStdDev outputs, which
    torch.onnx leaves out: they are named (the forward values are unchanged)."""
    initializers = {t.name: t for t in model.graph.initializer}
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if node.op_type == "LayerNormalization" and node.domain in ("", "ai.onnx") and len(node.output) == 1:
            node.output.extend([f"{node.output[0]}.mean", f"{node.output[0]}.inv_std_dev"])
        for j, name in enumerate(node.input):
            if name not in initializers or name in trainables:
                continue
            if name in seen:
                copy = onnx.TensorProto()
                copy.CopyFrom(initializers[name])
                copy.name = f"{name}.copy{i}_{j}"
                model.graph.initializer.append(copy)
                node.input[j] = copy.name
            seen.add(name)


def objective_block(onnxblock, layout: dict[str, tuple[int, ...]], k: int, reg_kind: str, final_gamma: str | None):
    """The objective as an onnxblock loss: per target -sum w*read + penalty * sum_{w=0} relu(logit) + R,
    summed over the K targets (one scalar to differentiate), with the per-target loss and activation
    kept as outputs. Written in ONNX ops, independently of the torch objective it must equal."""

    class Objective(onnxblock.Block):
        def build(self, *forward_outputs):
            g = self.base.graph
            nodes: list[onnx.NodeProto] = []

            def op(kind, inputs, name, **attrs):
                nodes.append(helper.make_node(kind, inputs, [name], name=name, **attrs))
                return name

            def total(inputs, name):  # a chain of Add: onnxruntime has no gradient for Sum
                if len(inputs) == 1:
                    return op("Identity", inputs, name)
                acc = inputs[0]
                for i, x in enumerate(inputs[1:], 1):
                    acc = op("Add", [acc, x], name if i == len(inputs) - 1 else f"{name}.{i}")
                return acc

            def const(name, array):
                g.initializer.append(numpy_helper.from_array(np.asarray(array), name))
                return name

            for layer, shape in layout.items():
                g.input.append(helper.make_tensor_value_info(f"weight.{layer}", TensorProto.FLOAT, [k, *shape]))
            g.input.append(helper.make_tensor_value_info("penalty", TensorProto.FLOAT, [k]))
            axis1 = const("objective.axis1", np.array([1], np.int64))
            leak = op(
                "Gather", ["hyper", const("objective.i_leak", np.array(HYPER.index("target_leak")))], "objective.leak"
            )
            logits = OUTPUT
            relu = op("Relu", [logits], "objective.relu")
            below = op("Sub", [logits, relu], "objective.below")  # min(x, 0), exactly
            read = op("Add", [relu, op("Mul", [leak, below], "objective.leaked")], "objective.read")
            terms = []
            for layer in layout:
                x = read if layer == OUTPUT else layer
                weighted = op("Mul", [x, f"weight.{layer}"], f"objective.weighted.{layer}")
                flat = op("Flatten", [weighted], f"objective.flat.{layer}", axis=1)
                terms.append(op("ReduceSum", [flat, axis1], f"objective.term.{layer}", keepdims=0))
            activation = total(terms, "activation")
            zero = const("objective.zero", np.array(0, np.float32))
            others = op(
                "Cast",
                [op("Equal", [f"weight.{OUTPUT}", zero], "objective.untargeted")],
                "objective.others",
                to=TensorProto.FLOAT,
            )
            pen = op(
                "Mul",
                [
                    "penalty",
                    op(
                        "ReduceSum",
                        [op("Mul", [relu, others], "objective.other_reads"), axis1],
                        "objective.other_sum",
                        keepdims=0,
                    ),
                ],
                "objective.penalty",
            )
            parts = [pen, op("Neg", [activation], "objective.neg_activation")]
            if reg_kind != "none":
                weight = op(
                    "Gather",
                    ["hyper", const("objective.i_reg", np.array(HYPER.index("reg_weight")))],
                    "objective.reg_weight",
                )
                last = const("objective.axis_last", np.array([-1], np.int64))
                if reg_kind == "l1-final-gamma":
                    size = op(
                        "ReduceSum", [op("Abs", [final_gamma], "objective.abs_gamma"), last], "objective.l1", keepdims=0
                    )
                else:
                    size = op(
                        "ReduceSum",
                        [op("Mul", ["alpha", "alpha"], "objective.alpha_sq"), last],
                        "objective.l2sq",
                        keepdims=0,
                    )
                    if reg_kind == "l2-alpha":
                        size = op("Sqrt", [size], "objective.l2")
                parts.append(op("Mul", [weight, size], "objective.regularizer"))
            per_target = total(parts, "loss_per_target")
            op("ReduceSum", [per_target], "loss", keepdims=0)
            g.node.extend(nodes)
            return "loss", "loss_per_target", "activation"

    return Objective()


def _gradient_builder_failure(coupled: CoupledStep, message: str) -> str:
    """One line from onnxruntime-training's C++ failure: the op its gradient builder lacks, where it says."""
    missing = re.search(r"has not been registered: (\w+) for node (\S+)", message)
    detail = message.strip().splitlines()[-1].split("FAIL : ")[-1]  # past the C++ source location
    what = (
        f"has no gradient for the ONNX op {missing[1]} (node {missing[2]})"
        if missing
        else f"cannot build the gradient graph ({detail[-200:]})"
    )
    return (
        f"onnxruntime-training's gradient builder {what} of classifier {coupled.classifier.name!r}; "
        f"use the step-graph backend ({setting('backend', 'step-graph')}), which takes this classifier"
    )


def training_graphs(coupled: CoupledStep, args: list[torch.Tensor]) -> tuple[onnx.ModelProto, bytes]:
    """(the training model, the checkpoint's bytes) for the example step inputs of k targets."""
    artifacts, onnxblock = training_api()
    trainables = list(trainable_shapes(coupled.mode, coupled.plan))
    k = len(args[-2])  # the penalty has one value per target
    model = forward_model(coupled, args)
    gamma = f"{coupled.plan.last_bn()}.weight" if coupled.generator.trains_g else None
    loss = objective_block(onnxblock, coupled.layout, k, coupled.reg_kind, gamma)
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)  # onnxblock writes scratch files into the working directory
        try:
            with native_log_kept_unless_failure():
                artifacts.generate_artifacts(
                    model,
                    requires_grad=trainables,
                    frozen_params=[],
                    loss=loss,
                    artifact_directory=tmp,
                    additional_output_names=["image"],
                )
        except RuntimeError as e:
            raise UsageError(_gradient_builder_failure(coupled, str(e))) from None
        finally:
            os.chdir(cwd)
        training = onnx.load(os.path.join(tmp, "training_model.onnx"))
        with open(os.path.join(tmp, "checkpoint"), "rb") as f:
            checkpoint = f.read()
    return training, checkpoint
