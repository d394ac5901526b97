"""What a classifier computes, as one digest: its forward (with the taps) traced into ATen ops, each op
with its arguments and every constant tensor it reads. Two modules of one class with equal tensors but
another layer (a Tanh for a ReLU, another stride) differ here, where their class name and state_dict
do not."""

from __future__ import annotations

import hashlib

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from .classifiers import Classifier, Tapped


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
