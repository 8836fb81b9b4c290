"""Loading ``torch.save`` files without letting them run code.

A pickle can name any importable callable and have it called while it is read, so a crafted
checkpoint executes code the moment ``torch.load(..., weights_only=False)`` opens it.
:func:`safe_load` always reads with ``weights_only=True`` and admits, on top of torch's own
allowlist (tensors, containers, numbers, strings), only the extra types a caller names for its
format. A file that needs anything else is refused with :class:`UnsafeCheckpointError`; the
caller may opt in with ``trust=True`` for a file whose source it trusts.
"""

from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:  # numpy >= 2 moved the array reconstructor under numpy._core
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct

__all__ = [
    "FAIRSEQ_TYPES",
    "NUMPY_ARRAY_TYPES",
    "UnsafeCheckpointError",
    "safe_load",
]

#: What a pickled ``numpy.ndarray`` (e.g. ``np.random.get_state()``'s key array) needs.
NUMPY_ARRAY_TYPES: tuple[Any, ...] = (
    _np_reconstruct,
    np.ndarray,
    np.dtype,
    *(type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"),
)

#: fairseq and Lightning checkpoints keep their command-line arguments as a ``Namespace``.
FAIRSEQ_TYPES: tuple[type, ...] = (argparse.Namespace,)

_TRUST_HINT = "If you trust where this file came from, pass trust=True to load it anyway"
_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


class UnsafeCheckpointError(ValueError):
    """A checkpoint needs a type outside the allowlist, so loading it could run code."""


def _offending(path: Path, message: str) -> str:
    found = _GLOBAL.search(message)
    if found:
        return found.group(1)
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - only used to improve the message
        names = []
    return ", ".join(names) if names else "an unsupported pickle instruction"


def safe_load(
    path: str | Path,
    *,
    allow: tuple[Any, ...] = (),
    trust: bool = False,
    map_location: Any = "cpu",
    trust_hint: str = _TRUST_HINT,
) -> Any:
    """Read the ``torch.save`` file ``path`` without executing code from it.

    ``allow`` lists the types/functions beyond torch's defaults that this format legitimately
    stores (say ``argparse.Namespace``). With ``trust=True`` the file is read with
    ``weights_only=False``: only for files from a source you trust. ``trust_hint`` ends the error
    message, telling the user how to opt in (say, the calling loader's own keyword).

    Raises :class:`UnsafeCheckpointError` naming the file and the refused type.
    """
    path = Path(path).expanduser()
    if trust:
        return torch.load(path, map_location=map_location, weights_only=False)
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        offending = _offending(path, str(err))
        raise UnsafeCheckpointError(
            f"{path}: refusing to load, the file's pickle needs {offending}, which is not on "
            f"the allowlist of this format (loading it could run arbitrary code). {trust_hint}."
        ) from err
