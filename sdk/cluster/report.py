"""A face collection's groups written out for people: a CSV per face, a folder of links per
group, and an HTML contact sheet (one row of thumbnails per group, sortable by size).

Works from a :class:`~npcface.cluster.FaceGroups` alone (thumbnails are the bytes stored
with each face), so it knows nothing of images.
"""

from __future__ import annotations

import csv
import html
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidArgumentError
from .store import FaceGroups, FaceInfo

log = logging.getLogger(__name__)

UNGROUPED = "ungrouped"
"""Folder (under ``groups/``) of the faces in no group."""


@dataclass(frozen=True)
class Report:
    """What :func:`write_report` wrote.

    Attributes:
        csv: ``faces.csv``: one row per face.
        html: ``index.html``: the contact sheet.
        folders: ``groups/``: a folder of links to the photos per group (and
            :data:`UNGROUPED`).
        groups: groups written; faces: faces written; ungrouped: faces in no group.
    """

    csv: Path
    html: Path
    folders: Path
    groups: int
    faces: int
    ungrouped: int


def group_label(group_id: int, name: str | None) -> str:
    """The folder of a group: its name (characters other than letters, digits, ``-``,
    ``_`` and ``.`` as ``_``) and id, else ``group_<id>``."""
    if not name:
        return f"group_{group_id:05d}"
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name).lstrip('.')}_{group_id}"


def write_report(groups: FaceGroups, out: str | Path, links: bool = True) -> Report:
    """Write ``faces.csv``, ``index.html`` (with ``thumbs/``) and ``groups/`` into ``out``.

    ``groups/`` and ``thumbs/`` are rewritten from scratch (only links and files this
    function makes are removed).

    Args:
        groups: the collection.
        out: the folder (created).
        links: write ``groups/`` (symbolic links to each face's photo, its ``source``).

    Returns:
        A :class:`Report`.

    Raises:
        InvalidArgumentError: ``out`` exists and is not a folder.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(f"{out} is not a folder", input="out")
    out.mkdir(parents=True, exist_ok=True)
    infos = groups.groups()
    members = {g.id: groups.faces(g.id) for g in infos}
    loose = groups.faces(None)
    thumbs = out / "thumbs"
    _clear(thumbs)
    thumbs.mkdir()
    has_thumb: set[int] = set()
    for face in [f for fs in members.values() for f in fs] + loose:
        data = groups.thumbnail(face.id)
        if data:
            (thumbs / f"{face.id}.jpg").write_bytes(data)
            has_thumb.add(face.id)
    csv_path = out / "faces.csv"
    tmp = csv_path.with_name(f".{csv_path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["face", "group", "name", "confidence", "quality", "photo", "x1", "y1", "x2", "y2"]
        )
        names = {g.id: g.name for g in infos}
        for face in sorted([f for fs in members.values() for f in fs] + loose, key=_id):
            box = face.box or ("", "", "", "")
            w.writerow(
                [
                    face.id,
                    "" if face.group is None else face.group,
                    (names.get(face.group) or "") if face.group is not None else "",
                    "" if face.confidence is None else f"{face.confidence:.4f}",
                    "" if face.quality is None else f"{face.quality:.3f}",
                    face.source or "",
                    *(f"{v:.1f}" if v != "" else "" for v in box),
                ]
            )
    os.replace(tmp, csv_path)
    folders = out / "groups"
    if links:
        _clear(folders)
        folders.mkdir()
        for g in infos:
            _links(folders / group_label(g.id, g.name), members[g.id])
        _links(folders / UNGROUPED, loose)
    html_path = out / "index.html"
    html_path.write_text(_sheet(infos, members, loose, has_thumb), encoding="utf-8")
    n_faces = sum(len(v) for v in members.values()) + len(loose)
    log.info("report of %d groups, %d faces in %s", len(infos), n_faces, out)
    return Report(csv_path, html_path, folders, len(infos), n_faces, len(loose))


def _id(face: FaceInfo) -> int:
    return face.id


def _clear(folder: Path) -> None:
    """Remove a folder this module wrote: links, thumbnails and empty folders only."""
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_symlink() or not folder.is_dir():
        raise InvalidArgumentError(f"{folder} is not a folder npcface wrote", input="out")
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_symlink() or (path.is_file() and path.suffix == ".jpg"):
            path.unlink()
        elif path.is_dir():
            path.rmdir()
        else:
            raise InvalidArgumentError(f"{path}: not written by npcface; not removed", input="out")
    folder.rmdir()


def _links(folder: Path, faces: list[FaceInfo]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for face in faces:
        if not face.source:
            continue
        src = Path(face.source).resolve()
        link = folder / f"{face.id:06d}_{src.name}"
        if not link.is_symlink():
            link.symlink_to(src)


def _sheet(infos, members, loose, has_thumb) -> str:
    def thumb(f: FaceInfo) -> str:
        title = html.escape(f"face {f.id}: {f.source or ''}", quote=True)
        if f.id in has_thumb:
            return f'<img src="thumbs/{f.id}.jpg" title="{title}" alt="face {f.id}">'
        return f'<span class="nothumb" title="{title}">{f.id}</span>'

    rows = []
    for g in infos:
        label = html.escape(g.name or f"group {g.id}")
        state = " (confirmed)" if g.confirmed else ""
        faces = "".join(thumb(f) for f in members[g.id])
        rows.append(
            f'<div class="group" data-size="{g.size}" data-id="{g.id}">'
            f"<h2>{label} &middot; {g.size} faces{state}</h2>"
            f'<div class="faces">{faces}</div></div>'
        )
    ungrouped = "".join(thumb(f) for f in loose)
    return _PAGE.format(
        n_groups=len(infos),
        n_faces=sum(g.size for g in infos) + len(loose),
        n_loose=len(loose),
        rows="\n".join(rows),
        ungrouped=ungrouped or "<p>none</p>",
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>npcface: face groups</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
.group {{ border-bottom: 1px solid #ccc; padding: 4px 0; }}
.group h2 {{ font-size: 1em; margin: 4px 0; }}
.faces {{ display: flex; flex-wrap: wrap; gap: 3px; }}
.faces img, .nothumb {{ width: 72px; height: 72px; object-fit: cover; background: #eee; }}
</style></head><body>
<h1>{n_groups} groups, {n_faces} faces ({n_loose} in no group)</h1>
<p>Sort: <button id="by-size-desc">largest first</button>
<button id="by-size-asc">smallest first</button>
<button id="by-id">by id</button></p>
<div id="groups">
{rows}
</div>
<h2>In no group</h2><div class="faces" id="ungrouped">{ungrouped}</div>
<script>
function sortGroups(key, dir) {{
  const box = document.getElementById("groups");
  const rows = Array.from(box.children);
  rows.sort((a, b) => dir * (Number(a.dataset[key]) - Number(b.dataset[key]))
                      || Number(a.dataset.id) - Number(b.dataset.id));
  rows.forEach((r) => box.appendChild(r));
}}
document.getElementById("by-size-desc").onclick = () => sortGroups("size", -1);
document.getElementById("by-size-asc").onclick = () => sortGroups("size", 1);
document.getElementById("by-id").onclick = () => sortGroups("id", 1);
</script>
</body></html>
"""

__all__ = ["Report", "UNGROUPED", "group_label", "write_report"]
