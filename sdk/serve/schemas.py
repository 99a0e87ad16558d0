"""Request and response bodies. Fields mirror the library's result types (units as there:
pixels, cosine similarity in [-1, 1], unit-norm float32 embeddings)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorOut(BaseModel):
    """Every 4xx and 5xx body."""

    error: str = Field(description="stable error code, e.g. no_face, image_error, unauthorized")
    message: str = Field(description="what went wrong, naming the input and the fix")
    input: str | None = Field(None, description="the offending input, e.g. images[1]")


class QualityOut(BaseModel):
    """:class:`npcface.quality.FaceQuality`: head pose, sharpness, size, score, overall."""

    yaw: float = Field(description="degrees")
    pitch: float = Field(description="degrees")
    roll: float = Field(description="degrees")
    sharpness: float = Field(description="variance of the Laplacian of the aligned crop")
    size: float = Field(description="short side of the face box, pixels")
    score: float = Field(description="detector confidence in [0, 1]")
    overall: float = Field(description="in [0, 1]; see npcface.quality.FaceQuality")


class FaceOut(BaseModel):
    """:class:`npcface.Face`."""

    box: list[float] = Field(description="x1, y1, x2, y2 in pixels")
    landmarks: list[list[float]] = Field(
        description="5 x (x, y) pixels: left eye, right eye, nose, left mouth, right mouth"
    )
    score: float = Field(description="detector confidence in [0, 1]")
    quality: QualityOut | None = Field(None, description="face quality (pose, sharpness, size)")


class DetectImage(BaseModel):
    input: str
    faces: list[FaceOut] = Field(description="best score first")


class DetectOut(BaseModel):
    images: list[DetectImage]


class EmbedFace(BaseModel):
    face: FaceOut
    embedding: list[float] = Field(description="(d,) unit-norm float32")


class EmbedItem(BaseModel):
    """One image: the face chosen by the face policy (or all faces) with embeddings, or
    the error that stopped it (other images are still answered)."""

    input: str
    ok: bool
    faces: list[EmbedFace]
    error: ErrorOut | None = None


class EmbedOut(BaseModel):
    model: str
    images: list[EmbedItem]


class VerifyOut(BaseModel):
    """:class:`npcface.VerifyResult` plus the FAR the threshold was calibrated at."""

    verified: bool
    similarity: float
    threshold: float
    far: float | None = Field(description="FAR the threshold was calibrated at; null if custom")
    face1: FaceOut | None
    face2: FaceOut | None
    model: str


class MatchOut(BaseModel):
    """:class:`npcface.Match`."""

    identity: str
    similarity: float
    template_id: int
    metadata: dict[str, Any] | None = None


class IdentifyFace(BaseModel):
    face: FaceOut
    matches: list[MatchOut] = Field(description="most similar first")


class IdentifyOut(BaseModel):
    threshold: float | None = Field(description="open set: matches below it are left out")
    far: float | None
    faces: list[IdentifyFace]


class SearchIn(BaseModel):
    embeddings: list[list[float]] = Field(description="(n, d) query embeddings")
    k: int = 5
    threshold: float | None = None
    far: float | None = None


class SearchOut(BaseModel):
    threshold: float | None
    far: float | None
    matches: list[list[MatchOut]]


class GalleryIn(BaseModel):
    name: str = Field(description="1-64 letters, digits, '.', '_', '-'")
    index: str = Field("auto", description="auto or a FAISS factory string")
    dtype: str = Field("float32", description="float32 or float16 storage")
    metric: str = Field("cosine", description="cosine or ip")
    model: str | None = Field(None, description="default: the server's recogniser")
    dim: int | None = Field(None, description="default: the server's embedding size")


class GalleryOut(BaseModel):
    """:class:`npcface.gallery.GalleryInfo` and the gallery's name."""

    name: str
    dim: int
    metric: str
    dtype: str
    index_spec: str
    factory: str
    search_params: dict[str, int]
    identities: int
    templates: int
    index_vectors: int
    tombstones: int
    removable: bool
    device: str
    device_reason: str
    model: str | None
    index_saved: bool
    schema_version: int
    disk_bytes: int
    created: float


class GalleryList(BaseModel):
    galleries: list[str]


class IdentityOut(BaseModel):
    identity: str
    templates: int
    template_ids: list[int] | None = None
    metadata: dict[str, Any] | None = None


class IdentityPage(BaseModel):
    total: int
    offset: int
    limit: int
    identities: list[IdentityOut]


class EnrollIn(BaseModel):
    """JSON form of an enrolment (multipart: files ``images`` and form fields)."""

    images: list[str] | None = Field(None, description="base64 images")
    embeddings: list[list[float]] | None = Field(None, description="(n, d) embeddings")
    metadata: dict[str, Any] | None = None


class EnrollOut(BaseModel):
    identity: str = Field(description="the name as stored (Unicode NFC)")
    template_ids: list[int] = Field(
        description="one per image or embedding, in order: stored now, or the identity's "
        "template of the same content; durable when this answer arrives"
    )
    added: int = Field(description="how many templates were stored")
    existing: int = Field(description="how many inputs the identity held already (skipped)")
    replayed: bool = Field(
        description="true when this is the stored answer to an earlier request with the "
        "same Idempotency-Key (nothing was written now)"
    )


class DeletedOut(BaseModel):
    deleted: str
    templates: int | None = None


class ModelOut(BaseModel):
    """:class:`npcface.RecognizerInfo` (the parts a client needs)."""

    name: str
    input_size: int
    embedding_size: int
    thresholds: dict[str, float]
    face_policy: str
    max_images: int
    max_pixels: int
    max_body_bytes: int


class StreamIn(BaseModel):
    """A stream for a monitor to watch (:mod:`npcface.serve.streams`)."""

    source: str = Field(description="stream URL (rtsp://, http://, ...), file or camera index")
    gallery: str | None = Field(None, description="identify tracks against this gallery")
    every: int = Field(1, ge=1, le=30, description="detect on every N-th frame")
    threshold: float | None = Field(None, ge=-1, le=1)
    far: float | None = Field(None, gt=0, lt=1)
    listen: bool = Field(False, description="receive a stream pushed to source (RTSP)")


class StreamOut(BaseModel):
    """A stream monitor and its figures."""

    id: str
    source: str
    gallery: str | None
    every: int
    state: str = Field(description="starting, running, reconnecting or stopped")
    restarts: int = Field(description="times the stream was opened again after it failed")
    last_error: str | None = Field(description="why the stream last failed or ended")
    frames: int
    dropped: int = Field(description="frames dropped because processing was behind")
    tracks: int
    identified: int
    started: float = Field(description="Unix time")
    events: int = Field(description="number of the latest event")


class StreamList(BaseModel):
    streams: list[StreamOut]


class StreamEventOut(BaseModel):
    """One event of :mod:`npcface.video.events` (its ``to_dict``) numbered by the monitor;
    fields beyond ``seq``, ``monitor``, ``event``, ``track`` and ``wall`` depend on
    ``event``: started (time, frame, box, resumed), identified (time, frame, identity,
    similarity, threshold, far, faces, previous), ended (start, end, first_frame,
    last_frame, detections, identity, similarity, best_quality)."""

    seq: int = Field(description="the monitor's event number (SSE id)")
    monitor: str
    event: str = Field(description="started, identified or ended")
    track: int
    wall: float = Field(description="Unix time the frame was decoded")
    time: float | None = Field(None, description="seconds into the stream")
    frame: int | None = None
    box: list[float] | None = Field(None, description="x1, y1, x2, y2 in pixels")
    resumed: bool | None = Field(None, description="started: an ended track found again")
    identity: str | None = None
    similarity: float | None = None
    threshold: float | None = None
    far: float | None = None
    faces: int | None = Field(None, description="faces the track's template was made of")
    previous: str | None = None
    start: float | None = Field(None, description="seconds into the stream")
    end: float | None = Field(None, description="seconds into the stream")
    first_frame: int | None = None
    last_frame: int | None = None
    detections: int | None = None
    best_quality: float | None = None


class StreamEvents(BaseModel):
    events: list[StreamEventOut] = Field(description="oldest first (a bounded list)")
    last: int = Field(description="number of the latest event")


class GroupOut(BaseModel):
    """:class:`npcface.cluster.GroupInfo`: a group of faces taken for one person."""

    id: int = Field(description="stable group id")
    size: int = Field(description="faces in the group")
    name: str | None = Field(None, description="the person's name, once named")
    confirmed: bool = Field(description="a correction (name, merge, split, move) touched it")
    representative: int | None = Field(None, description="the most typical face's id")


class GroupFaceOut(BaseModel):
    """:class:`npcface.cluster.FaceInfo`: one face of the collection."""

    id: int = Field(description="face id")
    group: int | None = Field(None, description="its group (None: noise or not grouped yet)")
    source: str | None = Field(None, description="where it came from, e.g. images[0]")
    box: list[float] | None = Field(None, description="[x1, y1, x2, y2], pixels")
    quality: float | None = Field(None, description="face quality in [0, 1]")
    confidence: float | None = Field(
        None, description="mean cosine similarity to the other faces of its group"
    )
    pinned: bool = Field(description="a correction put it in its group")


class GroupingSummaryOut(BaseModel):
    """What a grouping run left: counts of faces and groups."""

    faces: int
    groups: int
    grouped: int = Field(description="faces in a group")
    ungrouped: int = Field(description="faces in no group (noise, singletons)")
    low_quality: int = Field(description="faces below the quality gate, never grouped")


class GroupFacesAddedOut(BaseModel):
    """``POST .../groups/faces``: the faces added and where they went."""

    faces: list[GroupFaceOut]
    per_image: list[int] = Field(description="faces found per image, in input order")
    summary: GroupingSummaryOut


class ReclusterOut(BaseModel):
    summary: GroupingSummaryOut


class GroupListOut(BaseModel):
    """Every group, largest first, and the faces in no group."""

    groups: list[GroupOut]
    ungrouped: list[GroupFaceOut]


class GroupDetailOut(GroupOut):
    """A group and its faces, most typical first."""

    faces: list[GroupFaceOut]


class GroupSplitOut(BaseModel):
    group: GroupOut = Field(description="what is left of the group")
    new: GroupOut = Field(description="the new group")


class GroupNamedOut(GroupOut):
    """The named group and the gallery templates its faces became."""

    templates: list[int] = Field(description="template ids in the gallery")


def multipart_and_json(json_schema: dict[str, Any], files: dict[str, str]) -> dict[str, Any]:
    """``openapi_extra`` that documents a body taking multipart files, JSON, or one image as
    the whole body (for the first of ``files``)."""
    props = {
        name: (
            {"type": "array", "items": {"type": "string", "format": "binary"}}
            if many == "many"
            else {"type": "string", "format": "binary"}
        )
        for name, many in files.items()
    }
    first = next(iter(files))
    return {
        "requestBody": {
            "content": {
                "application/json": {"schema": json_schema},
                "multipart/form-data": {"schema": {"type": "object", "properties": props}},
                "image/*": {
                    "schema": {
                        "type": "string",
                        "format": "binary",
                        "description": f"one image as the whole body, for {first}; the "
                        "other fields in the query string",
                    }
                },
            }
        }
    }
