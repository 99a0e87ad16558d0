"""``/v1/galleries/{name}/groups``: a gallery's unlabelled faces grouped into people, and the
corrections people make (name, merge, split, move, not this person).

The faces and their groups live next to the gallery, in its folder's ``groups.db``
(:class:`npcface.cluster.FaceGroups`); naming a group enrols its faces into the gallery as
that identity, exactly once. Every correction is kept and honoured by later updates and
reclustering. The review page is ``/static/groups.html?gallery=NAME``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from ...cluster import FaceGroups
from ...cluster.photos import FaceRows
from ...errors import GroupNotFoundError, NoFaceError, NpcfaceError
from .. import deps, schemas
from ..inputs import rename

router = APIRouter(prefix="/v1/galleries/{name}/groups", tags=["groups"])


class MergeIn(BaseModel):
    other: int = Field(description="the group merged into this one")


class SplitIn(BaseModel):
    faces: list[int] = Field(min_length=1, description="faces that become a new group")


class NameIn(BaseModel):
    name: str = Field(min_length=1, max_length=512, description="the person's name")


class GroupIn(BaseModel):
    group: int = Field(description="a group id")


@contextmanager
def _groups(request: Request, name: str) -> Iterator[FaceGroups]:
    """The gallery's face collection (created on first use with the service's model)."""
    manager = request.app.state.galleries
    manager.require(name)
    rec = request.app.state.recognizer
    dim = rec.info.embedding_size if rec is not None else None
    model = rec.info.name if rec is not None else None
    with FaceGroups.open(
        manager.path(name), dim=dim, model=model, min_quality=_min_quality(rec)
    ) as fg:
        yield fg


def _min_quality(rec: Any) -> float | None:
    return None if rec is None else float(rec.config.enroll_quality)


def _summary(fg: FaceGroups, result: Any) -> dict[str, Any]:
    s = result.summary()
    return {
        "faces": s["faces"],
        "groups": s["groups"],
        "grouped": s["grouped"],
        "ungrouped": s["noise"],
        "low_quality": s["low_quality"],
    }


@router.post(
    "/faces",
    status_code=201,
    response_model=None,
    responses={201: {"model": schemas.GroupFacesAddedOut}},
    dependencies=[Depends(deps.can_write)],
)
def add_faces(
    request: Request, name: deps.GalleryName, payload: deps.Images, rec: deps.Recognizer
) -> dict[str, Any]:
    """Every face of each image joins the collection (an image sent again adds nothing);
    the new faces are placed into groups without regrouping the others."""
    uploads = payload.images("images")
    if not uploads:
        raise deps.bad("images", "send one or more images")
    rows = FaceRows()
    per_image = []
    for up in uploads:
        try:
            img = rec.load(up.data)
            embs, faces = rec.represent_all(img)
        except NpcfaceError as exc:
            raise rename(exc, up) from None
        if not faces:
            raise rename(NoFaceError(f"{up.label}: no face found"), up)
        per_image.append(len(faces))
        rows.add_photo(img, embs, faces, hashlib.sha256(up.data).hexdigest(), up.label)
    with _groups(request, name) as fg:
        ids = rows.add_to(fg)
        result = fg.update()
        faces = [fg.face(i).to_dict() for i in ids]
        return {"faces": faces, "per_image": per_image, "summary": _summary(fg, result)}


@router.post(
    "/recluster",
    response_model=None,
    responses={200: {"model": schemas.ReclusterOut}},
    dependencies=[Depends(deps.can_write)],
)
def recluster(request: Request, name: deps.GalleryName) -> dict[str, Any]:
    """Group every face again, honouring every correction."""
    with _groups(request, name) as fg:
        return {"summary": _summary(fg, fg.recluster())}


@router.get(
    "",
    response_model=None,
    responses={200: {"model": schemas.GroupListOut}},
    dependencies=[Depends(deps.can_read)],
)
def list_groups(request: Request, name: deps.GalleryName) -> dict[str, Any]:
    """Every group, largest first, and the faces in no group."""
    with _groups(request, name) as fg:
        return {
            "groups": [g.to_dict() for g in fg.groups()],
            "ungrouped": [f.to_dict() for f in fg.faces(None)],
        }


@router.get("/faces/{face}/thumbnail", dependencies=[Depends(deps.can_read)])
def thumbnail(request: Request, name: deps.GalleryName, face: int) -> Response:
    """The face's thumbnail (JPEG); 404 ``group_not_found`` when it has none."""
    with _groups(request, name) as fg:
        data = fg.thumbnail(face)
    if not data:
        raise GroupNotFoundError(f"face {face} has no thumbnail", input="face")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})


@router.post(
    "/faces/{face}/move",
    response_model=None,
    responses={200: {"model": schemas.GroupFaceOut}},
    dependencies=[Depends(deps.can_write)],
)
def move(request: Request, name: deps.GalleryName, face: int, body: GroupIn) -> dict[str, Any]:
    """Move a face to a group (it stays there in later runs)."""
    with _groups(request, name) as fg:
        fg.move(face, body.group)
        return fg.face(face).to_dict()


@router.post(
    "/faces/{face}/not",
    response_model=None,
    responses={200: {"model": schemas.GroupFaceOut}},
    dependencies=[Depends(deps.can_write)],
)
def not_person(
    request: Request, name: deps.GalleryName, face: int, body: GroupIn
) -> dict[str, Any]:
    """The face is not the person of the group: it leaves it and never joins it again."""
    with _groups(request, name) as fg:
        fg.not_person(face, body.group)
        return fg.face(face).to_dict()


@router.get(
    "/{group}",
    response_model=None,
    responses={200: {"model": schemas.GroupDetailOut}},
    dependencies=[Depends(deps.can_read)],
)
def one_group(request: Request, name: deps.GalleryName, group: int) -> dict[str, Any]:
    """A group and its faces, most typical first."""
    with _groups(request, name) as fg:
        info = fg.group(group)
        return {**info.to_dict(), "faces": [f.to_dict() for f in fg.faces(group)]}


@router.post(
    "/{group}/merge",
    response_model=None,
    responses={200: {"model": schemas.GroupOut}},
    dependencies=[Depends(deps.can_write)],
)
def merge(request: Request, name: deps.GalleryName, group: int, body: MergeIn) -> dict[str, Any]:
    """Merge group ``other`` into this one: one person from now on."""
    with _groups(request, name) as fg:
        return fg.group(fg.merge(group, body.other)).to_dict()


@router.post(
    "/{group}/split",
    status_code=201,
    response_model=None,
    responses={201: {"model": schemas.GroupSplitOut}},
    dependencies=[Depends(deps.can_write)],
)
def split(request: Request, name: deps.GalleryName, group: int, body: SplitIn) -> dict[str, Any]:
    """The given faces become a new group: two people from now on."""
    with _groups(request, name) as fg:
        new = fg.split(group, body.faces)
        return {"group": fg.group(group).to_dict(), "new": fg.group(new).to_dict()}


@router.post(
    "/{group}/name",
    response_model=None,
    responses={200: {"model": schemas.GroupNamedOut}},
    dependencies=[Depends(deps.can_write)],
)
def name_group(
    request: Request, name: deps.GalleryName, group: int, body: NameIn
) -> dict[str, Any]:
    """Name the group: its faces are enrolled into the gallery as that identity (exactly
    once; naming it again enrols only faces that joined since)."""
    with _groups(request, name) as fg, request.app.state.galleries.writer(name) as g:
        templates = fg.name(group, body.name, g)
        return {**fg.group(group).to_dict(), "templates": templates}
