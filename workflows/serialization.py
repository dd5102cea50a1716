"""JSON encoding of job inputs and outputs.

Job arguments and results cross process and machine boundaries as JSON files (``job.json``,
``result.json``) and live in the store as JSON columns, so everything a job takes or returns is
encoded into plain JSON values. Types JSON lacks are written as single-key tagged objects:

========================  ===========================================================
``{"@ndarray": ...}``     numpy array: dtype, shape and the flat data
``{"@atoms": ...}``       :class:`ase.Atoms`: numbers, positions (Å), cell (Å), pbc, extras
``{"@float": "nan"}``     a non-finite float (``nan``, ``inf``, ``-inf``); JSON has none
``{"@complex": [r, i]}``  a complex number
``{"@module": ...}``      any MSONable object (pymatgen ``Structure``, ...) via ``as_dict``
other ``@`` tags          registered by the job model: references, jobs, flows, files
========================  ===========================================================

The encoding is deterministic, so :func:`canonical_json` of encoded inputs is a stable basis for
the input hash that de-duplication compares.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from pathlib import PurePath
from typing import Any

import numpy as np

__all__ = [
    "SerializationError",
    "canonical_json",
    "decode",
    "encode",
    "register_tag",
    "sha256_json",
]

JSON = Any

_DECODERS: dict[str, Callable[[Any], Any]] = {}


class SerializationError(TypeError):
    """A value cannot be encoded to (or decoded from) matdx's JSON form."""


def register_tag(tag: str, decoder: Callable[[Any], Any]) -> None:
    """Register ``decoder`` for objects written as ``{tag: payload}``.

    Classes that encode themselves define ``__matdx_json__(self) -> dict`` returning
    ``{tag: payload}``; the payload must already be encoded JSON.
    """
    if not tag.startswith("@"):
        raise ValueError(f"tag: must start with '@', got {tag!r}")
    _DECODERS[tag] = decoder


def encode(obj: Any, *, path: str = "$") -> JSON:
    """Encode ``obj`` into plain JSON values.

    Parameters
    ----------
    obj
        JSON values, numpy arrays and scalars, ``ase.Atoms``, MSONable objects (pymatgen),
        objects defining ``__matdx_json__``, tuples (as lists), enums (their value) and paths
        (as strings), nested in dicts with string keys and lists.
    path
        Where ``obj`` sits in the enclosing document, for error messages.

    Raises
    ------
    SerializationError
        If a value (named by its path, e.g. ``$.kwargs.calc``) has no JSON form.
    """
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"@float": repr(obj)}
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise SerializationError(f"{path}: dict keys must be strings, got {key!r}")
            out[key] = encode(value, path=f"{path}.{key}")
        return out
    if isinstance(obj, list | tuple):
        return [encode(value, path=f"{path}[{i}]") for i, value in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return _encode_array(obj, path)
    if isinstance(obj, np.generic):
        return encode(obj.item(), path=path)
    if isinstance(obj, complex):
        return {"@complex": [encode(obj.real), encode(obj.imag)]}
    if hasattr(obj, "__matdx_json__"):
        return obj.__matdx_json__()
    if isinstance(obj, enum.Enum):
        return encode(obj.value, path=path)
    if isinstance(obj, PurePath):
        return str(obj)
    if _is_atoms(obj):
        return {"@atoms": _encode_atoms(obj, path)}
    if hasattr(obj, "as_dict") and hasattr(type(obj), "from_dict"):
        return encode(obj.as_dict(), path=path)
    raise SerializationError(
        f"{path}: cannot serialise a {type(obj).__module__}.{type(obj).__qualname__}; "
        "job arguments and outputs must be JSON values, numpy arrays, ase.Atoms or "
        "pymatgen objects"
    )


def decode(data: JSON) -> Any:
    """Invert :func:`encode`."""
    if isinstance(data, list):
        return [decode(value) for value in data]
    if not isinstance(data, dict):
        return data
    if len(data) == 1:
        ((tag, payload),) = data.items()
        if tag == "@ndarray":
            return _decode_array(payload)
        if tag == "@atoms":
            return _decode_atoms(payload)
        if tag == "@float":
            return float(payload)
        if tag == "@complex":
            return complex(payload[0], payload[1])
        if tag in _DECODERS:
            return _DECODERS[tag](payload)
    if "@module" in data and "@class" in data:
        from monty.json import MontyDecoder

        return MontyDecoder().process_decoded(data)
    return {key: decode(value) for key, value in data.items()}


def canonical_json(data: JSON) -> str:
    """Compact JSON with sorted keys: equal data gives equal text."""
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def sha256_json(data: JSON) -> str:
    """Hex sha256 of :func:`canonical_json` of ``data``."""
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()


def _encode_array(array: np.ndarray, path: str) -> JSON:
    if array.dtype.kind not in "biufc":
        raise SerializationError(f"{path}: numpy arrays of dtype {array.dtype} are not supported")
    flat = array.ravel()
    if array.dtype.kind == "c":
        data = [[encode(float(z.real)), encode(float(z.imag))] for z in flat]
    elif array.dtype.kind == "f" and not np.isfinite(flat).all():
        data = [encode(float(x)) for x in flat]
    else:
        data = flat.tolist()
    return {"@ndarray": {"dtype": array.dtype.str, "shape": list(array.shape), "data": data}}


def _decode_array(payload: Mapping[str, Any]) -> np.ndarray:
    dtype = np.dtype(payload["dtype"])
    data = payload["data"]
    if dtype.kind == "c":
        values = [complex(decode(r), decode(i)) for r, i in data]
    elif dtype.kind == "f":
        values = [decode(x) for x in data]
    else:
        values = data
    return np.asarray(values, dtype=dtype).reshape(payload["shape"])


def _is_atoms(obj: Any) -> bool:
    module = type(obj).__module__
    return module.startswith("ase.") and type(obj).__name__ == "Atoms"


_ATOMS_ARRAYS = {
    "momenta": "get_momenta",
    "initial_magmoms": "get_initial_magnetic_moments",
    "initial_charges": "get_initial_charges",
    "tags": "get_tags",
}


def _encode_atoms(atoms: Any, path: str) -> JSON:
    payload: dict[str, Any] = {
        "numbers": atoms.numbers.tolist(),
        "positions": atoms.positions.tolist(),
        "cell": atoms.cell.array.tolist(),
        "pbc": atoms.pbc.tolist(),
    }
    for key, getter in _ATOMS_ARRAYS.items():
        if atoms.has(key):
            values = getattr(atoms, getter)()
            if np.any(values):
                payload[key] = values.tolist()
    if atoms.has("masses"):
        payload["masses"] = atoms.get_masses().tolist()
    if atoms.constraints:
        payload["constraints"] = [
            encode(c.todict(), path=f"{path}.constraints") for c in atoms.constraints
        ]
    if atoms.info:
        payload["info"] = encode(atoms.info, path=f"{path}.info")
    return payload


def _decode_atoms(payload: Mapping[str, Any]) -> Any:
    from ase import Atoms
    from ase.constraints import dict2constraint

    atoms = Atoms(
        numbers=payload["numbers"],
        positions=payload["positions"],
        cell=payload["cell"],
        pbc=payload["pbc"],
    )
    if "momenta" in payload:
        atoms.set_momenta(payload["momenta"])
    if "initial_magmoms" in payload:
        atoms.set_initial_magnetic_moments(payload["initial_magmoms"])
    if "initial_charges" in payload:
        atoms.set_initial_charges(payload["initial_charges"])
    if "tags" in payload:
        atoms.set_tags(payload["tags"])
    if "masses" in payload:
        atoms.set_masses(payload["masses"])
    if "constraints" in payload:
        atoms.set_constraint([dict2constraint(decode(c)) for c in payload["constraints"]])
    if "info" in payload:
        atoms.info.update(decode(payload["info"]))
    return atoms
