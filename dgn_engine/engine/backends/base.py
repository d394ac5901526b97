"""What the engine's backends over an artifacts folder share (no torch)."""

from __future__ import annotations

import numpy as np

from ...artifacts import Artifacts
from ...errors import UsageError
from ...spec import ENGINE_PRECISIONS, RunSpec
from ...targets import Target
from .onnx_session import classify_in_batches, providers, session


class ArtifactsBackend:
    """The manifest's facts, the graphs' static batch K that a short batch is padded to, and D as
    classifier.onnx. Subclasses set `name` and run the steps."""

    name: str

    def __init__(self, art: Artifacts, device: str = "auto", threads: int | None = None, precision: str = "float32"):
        if precision not in ENGINE_PRECISIONS:
            raise UsageError(
                f"--precision {precision}: the {self.name} backend runs "
                f"{' or '.join(ENGINE_PRECISIONS)}; {precision} is the torch backend's (--backend torch)"
            )
        art.require(self.name)
        art.check_files()  # a flipped byte in weights.bin would otherwise run as another D
        self.art, self.threads = art, threads
        self.mode, self.k = art.mode, art.batch
        self.preprocessing, self.layout, self.labels = art.preprocessing, art.layout, art.labels
        self.plan = art.plan
        self.features = self.plan.features
        self.transforms = art.spec.transforms.enabled
        self.providers, self.device_type = providers(device, precision)
        self.precision = precision if self.device_type == "cuda" else "float32"  # what really runs
        self._classifier = None

    def padded(self, targets: list[Target], spec: RunSpec) -> list[Target]:
        """The batch's targets repeated up to K (rows are independent; the extras are dropped)."""
        if len(targets) > self.k:
            raise ValueError(f"{len(targets)} targets for a graph of batch {self.k}")
        self.art.check_spec(spec)
        self.n = len(targets)
        return targets + [targets[-1]] * (self.k - len(targets))

    def provenance(self) -> dict:
        """The manifest's digest covers everything the graphs are made of: it records the sha256 of
        every file of the artifacts and of the sources they were exported from."""
        return {
            "backend": self.name,
            "precision": self.precision,
            "artifacts_manifest_sha256": self.art.manifest_sha256,
            "files_sha256": {f: e["sha256"] for f, e in sorted(self.art.manifest["files"].items())},
            "source_files_sha256": dict(self.art.manifest["sha256"]),
        }  # D's and the decoder's files

    def classify(self, images: np.ndarray) -> dict[str, np.ndarray]:
        if self._classifier is None:
            self._classifier = session(self.art.graph("classifier"), self.providers, self.threads)
        return classify_in_batches(self._classifier, images, self.k)
