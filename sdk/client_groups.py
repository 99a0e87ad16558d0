"""The client side of ``/v1/galleries/{name}/groups``: a gallery's unlabelled faces grouped
into people and the corrections people make, with :class:`npcface.cluster.FaceGroups`'s
calls and result types (:class:`~npcface.cluster.store.GroupInfo`,
:class:`~npcface.cluster.store.FaceInfo`).

    >>> groups = Client(url).gallery("family").groups
    >>> groups.add(["party1.jpg", "party2.jpg"])          # every face of each photo
    >>> for g in groups.groups(): print(g.id, g.size)
    >>> groups.merge(3, 7); groups.name(3, "Grandma")      # enrols her faces into the gallery
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the result types only; nothing of the cluster package loads with this
    from .cluster.store import FaceInfo, GroupInfo
    from .image import ImageInput


class RemoteGroups:
    """The face groups of one gallery of the service (see the module's notes).

    Errors are the library's: ``GroupNotFoundError`` (404) for an unknown group or face,
    ``InvalidArgumentError`` for a bad correction, ``NoFaceError`` for a photo without a face.
    """

    def __init__(
        self,
        request: Callable[..., Any],
        file_part: Callable[[str, Any], Any],
        gallery_path: str,
    ) -> None:
        """Internal: use :attr:`npcface.client.RemoteGallery.groups`. ``request`` is the
        client's :meth:`~npcface.client.Client.request`, ``file_part`` its multipart file
        encoder."""
        self._request = request
        self._file = file_part
        self._path = f"{gallery_path}/groups"

    def add(self, images: Sequence[ImageInput] | ImageInput) -> list[FaceInfo]:
        """Every face of each image joins the collection and is placed into a group (or
        left alone); an image sent again adds nothing. The faces, in input order."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        files = [self._file("images", img) for img in images]
        out = self._request("POST", f"{self._path}/faces", files=files)
        return [_face(f) for f in out["faces"]]

    def groups(self) -> list[GroupInfo]:
        """Every group, largest first."""
        return [_group(g) for g in self._request("GET", self._path)["groups"]]

    def ungrouped(self) -> list[FaceInfo]:
        """The faces in no group (noise, singletons)."""
        return [_face(f) for f in self._request("GET", self._path)["ungrouped"]]

    def group(self, group: int) -> tuple[GroupInfo, list[FaceInfo]]:
        """A group and its faces, most typical first."""
        out = self._request("GET", f"{self._path}/{int(group)}")
        return _group(out), [_face(f) for f in out["faces"]]

    def merge(self, group: int, other: int) -> GroupInfo:
        """Group ``other`` joins ``group``: one person from now on."""
        out = self._request("POST", f"{self._path}/{int(group)}/merge", json={"other": int(other)})
        return _group(out)

    def split(self, group: int, faces: Sequence[int]) -> tuple[GroupInfo, GroupInfo]:
        """``faces`` leave ``group`` as a new group: (what is left, the new group)."""
        out = self._request(
            "POST", f"{self._path}/{int(group)}/split", json={"faces": [int(f) for f in faces]}
        )
        return _group(out["group"]), _group(out["new"])

    def move(self, face: int, group: int) -> FaceInfo:
        """The face belongs to ``group`` (and stays there in later runs)."""
        out = self._request(
            "POST", f"{self._path}/faces/{int(face)}/move", json={"group": int(group)}
        )
        return _face(out)

    def not_person(self, face: int, group: int) -> FaceInfo:
        """The face is not the person of ``group``: it leaves it and never joins it again."""
        out = self._request(
            "POST", f"{self._path}/faces/{int(face)}/not", json={"group": int(group)}
        )
        return _face(out)

    def name(self, group: int, name: str) -> tuple[GroupInfo, list[int]]:
        """Name the group: its faces are enrolled into the gallery as ``name``, exactly once
        (naming it again enrols only faces that joined since). (group, template ids)."""
        out = self._request("POST", f"{self._path}/{int(group)}/name", json={"name": name})
        return _group(out), [int(t) for t in out["templates"]]

    def recluster(self) -> dict[str, int]:
        """Group every face again, honouring every correction: counts of faces, groups,
        grouped, ungrouped and low_quality faces."""
        return dict(self._request("POST", f"{self._path}/recluster")["summary"])


def _group(d: dict[str, Any]) -> GroupInfo:
    from .cluster.store import GroupInfo

    return GroupInfo(
        id=int(d["id"]),
        size=int(d["size"]),
        name=d.get("name"),
        confirmed=bool(d["confirmed"]),
        representative=d.get("representative"),
    )


def _face(d: dict[str, Any]) -> FaceInfo:
    from .cluster.store import FaceInfo

    box = d.get("box")
    return FaceInfo(
        id=int(d["id"]),
        group=d.get("group"),
        source=d.get("source"),
        box=tuple(float(v) for v in box) if box is not None else None,  # type: ignore[arg-type]
        quality=d.get("quality"),
        confidence=d.get("confidence"),
        pinned=bool(d["pinned"]),
    )
