"""A record read back from the store, with its recipe data typed and its artifacts at hand.

>>> record = client.record(record_id)            # doctest: +SKIP
>>> record.method.potential                      # 'eam/alloy: Cu_mishin1.eam.alloy'
>>> record.eos.volumes_A3, record.eos.B0_GPa      # E(V) points and B0 (GPa)
>>> record.phonon.band_frequencies_THz           # (n_q, n_branches) THz
>>> record.phonopy()                             # phonopy.Phonopy with the stored force constants

Nothing here reads a run directory: documents come from the store, artifacts from its
content-addressed object store (copied to a temporary directory when a reader needs a file).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matdx.store.records import CalculationRecord
from matdx.store.result_models import (
    BandsData,
    ElasticData,
    EOSData,
    MDAnalysisData,
    PhononData,
)

__all__ = ["StoredRecord"]


@dataclass
class StoredRecord:
    """A validated record and a way to fetch its artifacts.

    Attributes
    ----------
    record
        The record (current schema).
    fetch
        ``fetch(name, destination) -> Path`` copies the record's artifact ``name`` (access
        rules applied by the client).
    """

    record: CalculationRecord
    fetch: Callable[[str, Path], Path]

    @property
    def record_id(self) -> str:
        return self.record.record_id

    @property
    def method(self) -> Any:
        return self.record.method

    @property
    def results(self) -> Any:
        return self.record.results

    def _data(self, kind: type) -> Any:
        data = self.record.results.data
        if not isinstance(data, kind):
            found = getattr(data, "kind", None)
            raise LookupError(f"record {self.record_id} holds {found or 'no'} recipe data, "
                              f"not {kind.model_fields['kind'].default}")
        return data

    @property
    def eos(self) -> EOSData:
        """E(V) points and fit (LookupError for another kind of record)."""
        return self._data(EOSData)

    @property
    def elastic(self) -> ElasticData:
        return self._data(ElasticData)

    @property
    def phonon(self) -> PhononData:
        return self._data(PhononData)

    @property
    def bands(self) -> BandsData:
        return self._data(BandsData)

    @property
    def md(self) -> MDAnalysisData:
        return self._data(MDAnalysisData)

    def artifact(self, name: str, destination: str | Path) -> Path:
        """Copy the record's artifact ``name`` to ``destination`` (a file path)."""
        return self.fetch(name, Path(destination))

    def phonopy(self) -> Any:
        """A ``phonopy.Phonopy`` with the stored force constants (phonon records)."""
        import phonopy

        name = self.phonon.force_constants_artifact
        with tempfile.TemporaryDirectory() as directory:
            path = self.artifact(name, Path(directory) / name)
            return phonopy.load(str(path), produce_fc=False, log_level=0)
