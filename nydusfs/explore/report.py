"""Analysis and diff results as plain data (JSON-ready): what `explore --report/--json`,
`explore --ci` and `diff` print. Paths are shown as check shows them (os.fsdecode)."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..check.compare import show_path
from .analysis import MARKS, Analysis, Dedup
from .diff import DiffResult


def _dedup(d: Dedup | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {"bytes": d.total, "unique_bytes": d.unique, "ratio": round(d.ratio, 4)}


def analysis_doc(a: Analysis, top: int = 20, changes: bool = True) -> dict[str, Any]:
    layers = []
    for r in a.layers:
        doc: dict[str, Any] = {
            "index": r.index, "name": r.name, "created_by": r.created_by,
            "source_size": r.source_size, "nydus_size": r.nydus_size, "entries": r.entries,
            "file_bytes": r.file_bytes, "wasted_bytes": r.wasted_bytes, "counts": r.counts(),
            "file_dedup": _dedup(a.file_dedup_layers[r.index]),
            "chunk_dedup": _dedup(a.chunk_dedup_layers[r.index]) if a.chunk_dedup_layers else None,
        }
        if changes:
            doc["changes"] = [{"path": show_path(c.path), "mark": c.mark, "kind": c.kind, "size": c.size}
                              for c in r.changes]
        layers.append(doc)
    return {
        "layers": layers,
        "summary": {
            "entries": len(a.final),
            "shipped_bytes": a.shipped_bytes,
            "wasted_bytes": a.wasted_bytes,
            "wasted_percent": round(100.0 * a.wasted_bytes / a.shipped_bytes, 4) if a.shipped_bytes else 0.0,
            "efficiency": round(a.efficiency, 6),
            "file_dedup": _dedup(a.file_dedup),
            "chunk_dedup": _dedup(a.chunk_dedup),
        },
        "wasted": [{"layer": w.layer, "path": show_path(w.path), "size": w.size, "reason": w.reason}
                   for w in a.waste[:top]],
        "marks": list(MARKS),
    }


@dataclasses.dataclass(frozen=True, slots=True)
class Threshold:
    name: str           # as the option is spelled
    limit: float
    value: float
    passed: bool


def ci_rules(a: Analysis, lowest_efficiency: float | None, highest_wasted_bytes: int | None,
             highest_wasted_percent: float | None) -> list[Threshold]:
    """dive's CI rules: each given threshold passes or fails."""
    out = []
    if lowest_efficiency is not None:
        out.append(Threshold("lowest-efficiency", lowest_efficiency, a.efficiency,
                             a.efficiency >= lowest_efficiency))
    if highest_wasted_bytes is not None:
        out.append(Threshold("highest-wasted-bytes", highest_wasted_bytes, a.wasted_bytes,
                             a.wasted_bytes <= highest_wasted_bytes))
    if highest_wasted_percent is not None:
        share = a.wasted_bytes / a.shipped_bytes if a.shipped_bytes else 0.0
        out.append(Threshold("highest-wasted-percent", highest_wasted_percent, share,
                             share <= highest_wasted_percent))
    return out


def diff_doc(d: DiffResult) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "a": d.a, "b": d.b, "equal": d.equal, "counts": d.counts(),
        "changes": [{"path": show_path(c.path), "status": c.status, "kind": c.kind,
                     "fields": list(c.fields),
                     "differences": [x.to_json() for x in c.differences]} for c in d.changes],
    }
    if d.cost is not None:
        boot = d.bootstrap_cost
        parts: list[Any] = [*d.cost, *([boot] if boot is not None else [])]
        doc["update_cost"] = {
            "blobs": [{"blob": c.blob, "chunks": c.chunks, "bytes": c.bytes,
                       "present_bytes": c.present_bytes, "fetch_bytes": c.fetch_bytes,
                       "same_digest_bytes": c.same_digest_bytes} for c in d.cost],
            "bootstrap": None if boot is None else {
                "layer": boot.layer, "bytes": boot.bytes, "present_bytes": boot.present_bytes,
                "fetch_bytes": boot.fetch_bytes},
            "bytes": sum(c.bytes for c in parts),
            "present_bytes": sum(c.present_bytes for c in parts),
            "fetch_bytes": sum(c.fetch_bytes for c in parts),
            "same_digest_bytes": sum(c.same_digest_bytes for c in d.cost),
        }
    return doc
