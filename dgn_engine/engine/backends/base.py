"""What the engine's backends over an artifacts folder share (no torch)."""

from __future__ import annotations

import numpy as np

from ...artifacts import Artifacts
from ...errors import UsageError, setting
from ...spec import ENGINE_PRECISIONS, RunSpec
from ...targets import Target
from .onnx_session import check_io, classify_in_batches, providers, session


class ArtifactsBackend:
    """The manifest's facts, the graphs' static batch K that a short batch is padded to, and D as
    classifier.onnx. Subclasses set `name` and run the steps."""

    name: str

    def __init__(self, art: Artifacts, device: str = "auto", threads: int | None = None, precision: str = "float32"):
        if precision not in ENGINE_PRECISIONS:
            raise UsageError(
                f"{setting('precision', precision)}: the {self.name} backend runs "
                f"{' or '.join(ENGINE_PRECISIONS)}; {precision} is the torch backend's ({setting('backend', 'torch')})"
            )
        art.require(self.name)
        self.art, self.threads = art, threads
        self.mode, self.k = art.mode, art.batch
        self.preprocessing, self.layout, self.labels = art.preprocessing, art.layout, art.labels
        self.plan = art.plan
        self.features = self.plan.features
        self.transforms = art.spec.transforms.enabled
        self.providers, self.device_type = providers(device, precision)
        self.precision = precision if self.device_type == "cuda" else "float32"  # what really runs
        # every graph is checked against its digest and loaded before the first step, while an export
        # into the folder waits: all of a run's outputs come from one export
        with art.reading():
            art.check_files()  # a flipped byte in weights.bin would otherwise run as another D
            self._classifier = session(
                art.graph("classifier"), self.providers, threads, weights_bytes=art.weights_bytes
            )
            check_io(self._classifier, art.manifest["graphs"]["classifier"], art.graph("classifier"))
            if self._classifier.get_inputs()[0].shape[0] != art.batch:
                raise UsageError(
                    f"the artifacts in {art.path!r} hold graphs of batch {self._classifier.get_inputs()[0].shape[0]}, "
                    f"their manifest says {art.batch}: it was changed; export the artifacts again"
                )
            self.load()

    def load(self) -> None:
        """The subclass's own graphs, loaded under the artifacts' lock (see __init__)."""

    def padded(self, targets: list[Target], spec: RunSpec) -> list[Target]:
        """The batch's targets repeated up to K (rows are independent; the extras are dropped)."""
        if len(targets) > self.k:
            raise ValueError(f"{len(targets)} targets for a graph of batch {self.k}")
        self.art.check_spec(spec)
        self.n = len(targets)
        return targets + [targets[-1]] * (self.k - len(targets))

    def provenance(self) -> dict:
        """What the results depend on: every graph file's digest, the digests of the files they were
        exported from, and the manifest's facts, but not its timing, tool versions or source paths,
        so that the same model exported again (another cache, another day) gives the same key."""
        return {
            "backend": self.name,
            "precision": self.precision,
            "artifacts_sha256": self.art.results_digest,
            "files_sha256": {f: e["sha256"] for f, e in sorted(self.art.manifest["files"].items())},
            "source_files_sha256": sorted(set(self.art.manifest["sha256"].values())),  # D's, the decoder's
        }

    def classify(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return classify_in_batches(self._classifier, images, self.k)
