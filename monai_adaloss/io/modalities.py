"""The ``--modalities`` rule, one for ``monai-adaloss infer`` (the DICOM reader) and ``serve`` (the SCP).

A file is inferred when its (0008,0060) Modality, trimmed and upper-cased, is one of the listed
codes; no list (``None`` or empty) lets every file pass. A missing Modality is the empty code.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

__all__ = ["modality_allowed", "modality_code", "parse_modalities"]


def parse_modalities(text: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """``"XA,rf"`` or ``["XA", "RF,CR"]`` -> ``("XA", "RF", ...)`` in the given order without repeats;
    ``None`` or no code at all -> ``None`` (every modality)."""
    if text is None:
        return None
    items = [text] if isinstance(text, str) else [str(item) for item in text]
    codes = [part.strip().upper() for item in items for part in item.split(",") if part.strip()]
    return tuple(dict.fromkeys(codes)) or None


def modality_code(value: object) -> str:
    """A Modality value as compared: trimmed, upper case; ``""`` when absent."""
    return str(value or "").strip().upper()


def modality_allowed(value: object, allowed: Collection[str] | None) -> bool:
    """Whether a file of Modality ``value`` passes ``allowed`` (codes as :func:`parse_modalities` returns)."""
    return not allowed or modality_code(value) in allowed
