"""Where a job's batches run: here on one backend (LocalRunner), or on a Ray cluster
(ray_runner.RayRunner, imported only when asked for). The job keeps the target list and writes the files."""

from __future__ import annotations

from typing import Callable, Iterator, Protocol

from ..targets import Target
from .backends.protocol import Backend
from .loop import run_batch
from .target_files import ResultSettings, TargetFiles, target_files

Batches = Iterator[tuple[list[Target], list[TargetFiles]]]


class Runner(Protocol):
    name: str  # the backend's name
    labels: list[str] | None  # the artifacts' class names
    layout: dict[str, tuple[int, ...]]  # D's objective layout (Backend.layout)

    def provenance(self) -> dict:
        """What decides the results besides the spec (Backend.provenance of what runs the batches)."""

    def describe(self) -> dict:
        """What ran, for run.json."""

    def results(
        self,
        batches: list[list[Target]],
        settings: ResultSettings,
        on_step: Callable[[list[Target], int], None],
        should_stop: Callable[[], bool],
    ) -> Batches:
        """Each batch with its files, as batches finish (in any order). `on_step(batch, n)`: n more steps
        of that batch are done; raises loop.Interrupted once `should_stop()`."""


class LocalRunner:
    """The batches one after the other on one backend, in this process."""

    def __init__(self, backend: Backend):
        self.backend, self.name, self.labels, self.layout = backend, backend.name, backend.labels, backend.layout

    def provenance(self) -> dict:
        return self.backend.provenance()

    def describe(self) -> dict:
        return self.backend.describe()

    def results(self, batches, settings, on_step, should_stop) -> Batches:
        for batch in batches:
            outcomes = run_batch(
                self.backend, batch, settings.spec, on_step=lambda _, b=batch: on_step(b, 1), should_stop=should_stop
            )
            yield batch, target_files(self.backend, settings, outcomes)
