"""What a run's G + D are made of, as digests (the export cache's key and the torch reference's
provenance). graph_sha256: what a classifier computes, as one digest: its forward (with the taps)
traced into ATen ops, each op with its arguments and every constant tensor it reads. Two modules of
one class with equal tensors but another layer (a Tanh for a ReLU, another stride) differ here, where
their class name and state_dict do not."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from .classifiers import Classifier, Tapped

if TYPE_CHECKING:
    from .coupled import CoupledStep


def graph_sha256(classifier: Classifier, taps: list[str] = ()) -> str:
    pp = classifier.preprocessing
    tapped = Tapped(classifier, list(taps))
    image = torch.zeros(1, pp.channels, pp.image_size, pp.image_size, dtype=classifier.dtype)
    with torch.no_grad():
        gm = make_fx(tapped, _error_on_data_dependent_ops=False)(image)
    h = hashlib.sha256()
    index: dict[torch.fx.Node, int] = {}
    for node in gm.graph.nodes:
        index[node] = len(index)
        if node.op == "get_attr":
            h.update(_tensor_bytes(getattr(gm, node.target)))
            h.update(b";")
            continue
        target = node.target if node.op in ("placeholder", "output") else str(node.target)
        h.update(repr((node.op, target, _plain(node.args, index), _plain(node.kwargs, index))).encode())
        h.update(b";")
    return h.hexdigest()


def _plain(value, index: dict):
    """An op's argument with nodes as their position in the graph, so that names play no part."""
    if isinstance(value, torch.fx.Node):
        return ("node", index[value])
    if isinstance(value, (list, tuple)):
        return type(value).__name__, [_plain(v, index) for v in value]
    if isinstance(value, dict):
        return "dict", [(k, _plain(v, index)) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))]
    if isinstance(value, float):
        return float.hex(value)
    return repr(value)


def _tensor_bytes(value) -> bytes:
    if not isinstance(value, torch.Tensor):
        return repr(value).encode()
    t = value.detach().cpu().contiguous()
    head = f"{t.dtype}:{tuple(t.shape)}:".encode()
    return head + hashlib.sha256(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"").digest()


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """One digest of named tensors (names, dtypes, shapes and values): the weights themselves, whatever
    file or factory they came from."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def made_of(coupled: "CoupledStep") -> dict:
    """What decides a torch backend's results besides the spec: what D computes (its traced graph), D's
    and G's tensors, G's plan, D's preprocessing and taps, and the files they were read from."""
    clf = coupled.classifier
    return {
        # a file's digest says what it is wherever it lies; a factory or in-memory module has only its name
        "classifier": None if clf.sources else clf.name,
        "source_files_sha256": sorted(set(clf.sources.values())),
        "classifier_graph_sha256": graph_sha256(clf, coupled.taps),
        "scores": clf.scores_record(),  # also where nothing was found: keep_softmax then changes the manifest
        "classifier_tensors_sha256": tensors_sha256(clf.module.state_dict()),
        "decoder_tensors_sha256": tensors_sha256(coupled.decoder) if coupled.decoder is not None else None,
        "plan": coupled.plan.to_json(),
        "preprocessing": clf.preprocessing.to_json(),
        "taps": coupled.taps,
    }
