"""A client of ``npcface serve`` whose calls mirror :class:`~npcface.FaceRecognizer` and
:class:`~npcface.Gallery` (extra ``serve``: httpx).

>>> from npcface.client import Client
>>> c = Client("http://127.0.0.1:8000")                        # doctest: +SKIP
>>> c.verify("a.jpg", "b.jpg").verified                         # doctest: +SKIP
>>> c.gallery("staff").identify("door.jpg", threshold=0.42)     # doctest: +SKIP

Calls return the library's result types (:class:`~npcface.Face`,
:class:`~npcface.VerifyResult`, :class:`~npcface.Match`, ...) and raise the library's
exceptions (:class:`~npcface.NoFaceError`, :class:`~npcface.ImageError`,
:class:`~npcface.GalleryError`, ...), rebuilt from the service's JSON errors; the HTTP
status is on the exception as ``status`` and the API's code as ``code``. Failures of the
service itself (unreachable, timeout, bad key) raise
a :class:`~npcface.errors.ServiceError` subclass (``RequestTimeoutError``,
``NotReadyError``, ``UnauthorizedError``...), also an :class:`~npcface.NpcfaceError`.

A :class:`Client` is safe to share between threads (httpx's connection pool is).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import wire
from .errors import (
    ImageError,
    InvalidArgumentError,
    MissingExtraError,
    NoFaceError,
    NotReadyError,
    NpcfaceError,
    RequestTimeoutError,
)
from .image import ImageInput, describe, load_image
from .results import EmbedResult, Face, Match, VerifyResult

if TYPE_CHECKING:
    from .client_groups import RemoteGroups


class Client:
    """Speaks to an ``npcface serve`` service.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000``.
        api_key: sent as ``Authorization: Bearer KEY`` when given.
        timeout: seconds per request.
        http: an ``httpx.Client`` to use instead of a new one (its base URL is ignored).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        http: Any = None,
    ) -> None:
        try:
            import httpx
        except ImportError:
            raise MissingExtraError("npcface.client", "serve", "httpx") from None
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._httpx = httpx
        self._http = http or httpx.Client(timeout=timeout)
        self._headers = headers
        self._model: dict[str, Any] | None = None

    # ---------------------------------------------------------------- plumbing
    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request; the decoded JSON answer.

        Raises:
            NpcfaceError: the library exception the service's error stands for.
            RequestTimeoutError, NotReadyError: the service timed out or is unreachable.
        """
        url = f"{self.base_url}{path}"
        headers = {**self._headers, **kwargs.pop("headers", {})}
        try:
            try:
                r = self._http.request(method, url, headers=headers, **kwargs)
            except self._httpx.RemoteProtocolError:
                # A kept-alive connection the server closed as the request went out: the
                # request was not served. Calls without side effects, and writes that carry
                # an Idempotency-Key (the server commits them once), are sent once more.
                if not (_read_only(method, path) or "Idempotency-Key" in headers):
                    raise
                r = self._http.request(method, url, headers=headers, **kwargs)
        except self._httpx.TimeoutException as exc:
            raise RequestTimeoutError(f"{method} {url}: timed out ({exc})") from None
        except self._httpx.TransportError as exc:
            raise NotReadyError(f"{method} {url}: cannot reach it ({exc})") from None
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = {"error": "", "message": f"HTTP {r.status_code}: {r.text[:200]}"}
            if not isinstance(body, dict):
                body = {"error": "", "message": f"HTTP {r.status_code}"}
            raise wire.exception_from(body, r.status_code)
        return r.json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- service
    def ready(self) -> bool:
        """Whether the service has its models loaded and its galleries usable."""
        try:
            r = self._http.get(f"{self.base_url}/readyz")
        except self._httpx.TransportError:
            return False
        return r.status_code == 200

    @property
    def model(self) -> dict[str, Any]:
        """The service's recogniser (name, input and embedding size, thresholds) and limits."""
        if self._model is None:
            self._model = self.request("GET", "/v1/model")
        return self._model

    def default_threshold(self, far: float | None = None) -> float:
        """The calibrated threshold: the model's default, or the one for ``far``.

        Raises:
            NpcfaceError: no threshold calibrated for that FAR.
        """
        thresholds = self.model["thresholds"]
        key = "default" if far is None else f"far={far:g}"
        if key not in thresholds:
            known = ", ".join(sorted(k for k in thresholds if k.startswith("far="))) or "none"
            raise NpcfaceError(
                f"{self.model['name']} has no threshold calibrated for "
                f"{'a default' if far is None else f'FAR {far:g}'}; calibrated: {known}"
            )
        return float(thresholds[key])

    # ---------------------------------------------------------------- FaceRecognizer
    def detect(self, image: ImageInput) -> list[Face]:
        """All faces in an image, best score first (:meth:`FaceRecognizer.detect`)."""
        out = self.request("POST", "/v1/detect", **_raw(image))
        return [wire.face_from_json(f) for f in out["images"][0]["faces"]]

    def represent(self, image: ImageInput) -> tuple[np.ndarray, Face]:
        """Embedding (d,) and face of the face chosen by the service's face policy.

        Raises:
            NoFaceError, MultipleFacesError, ImageError: as the library.
        """
        item = self.embed_many([image])[0]
        if item.error is not None:
            raise item.error
        return item.embedding, item.face

    def embed(self, image: ImageInput) -> np.ndarray:
        """Embedding (d,) of the face chosen by the face policy (:meth:`FaceRecognizer.embed`)."""
        return self.represent(image)[0]

    def embed_many(self, images: Sequence[ImageInput]) -> list[EmbedResult]:
        """One result per image, in order, embedded as one batch by the service; failures
        are values (``error``), not exceptions (:meth:`FaceRecognizer.embed_many`)."""
        files = [_file("images", img) for img in images]
        out = self.request("POST", "/v1/embed", files=files)
        results = []
        for i, item in enumerate(out["images"]):
            name = describe(images[i])
            if item["ok"]:
                first = item["faces"][0]
                results.append(
                    _embed_result(
                        i,
                        name,
                        wire.face_from_json(first["face"]),
                        np.asarray(first["embedding"], np.float32),
                        None,
                    )
                )
            else:
                err = wire.exception_from(item["error"], 422)
                results.append(_embed_result(i, name, None, None, err))
        return results

    def represent_all(self, image: ImageInput) -> tuple[np.ndarray, list[Face]]:
        """Embeddings (N, d) of every face and the faces (:meth:`FaceRecognizer.represent_all`)."""
        out = self.request("POST", "/v1/embed", **_raw(image, {"all_faces": "true"}))
        item = out["images"][0]
        if not item["ok"]:
            err = wire.exception_from(item["error"], 422)
            if isinstance(err, NoFaceError):
                return np.zeros((0, self.model["embedding_size"]), np.float32), []
            raise err
        faces = [wire.face_from_json(f["face"]) for f in item["faces"]]
        embs = np.asarray([f["embedding"] for f in item["faces"]], np.float32)
        return embs, faces

    def verify(
        self,
        img1: ImageInput,
        img2: ImageInput,
        threshold: float | None = None,
        far: float | None = None,
    ) -> VerifyResult:
        """Are the faces in two images (or an image and an embedding) the same person?
        (:meth:`FaceRecognizer.verify`)."""
        files, fields = [], {}
        for n, img in ((1, img1), (2, img2)):
            if isinstance(img, np.ndarray) and img.ndim == 1:
                fields[f"embedding{n}"] = wire.embedding_to_json(img)
            else:
                files.append(_file(f"image{n}", img))
        if threshold is not None:
            fields["threshold"] = float(threshold)
        if far is not None:
            fields["far"] = float(far)
        if files:
            data = {k: _json(v) for k, v in fields.items()}
            out = self.request("POST", "/v1/verify", files=files, data=data)
        else:
            out = self.request("POST", "/v1/verify", json=fields)
        return wire.verify_from_json(out)

    # ---------------------------------------------------------------- galleries
    def galleries(self) -> list[str]:
        """Names of the service's galleries."""
        return list(self.request("GET", "/v1/galleries")["galleries"])

    def create_gallery(
        self,
        name: str,
        *,
        index: str = "auto",
        dtype: str = "float32",
        metric: str = "cosine",
        model: str | None = None,
        dim: int | None = None,
    ) -> RemoteGallery:
        """Create a gallery (for the service's recogniser unless ``dim``/``model`` say else).

        Raises:
            GalleryError: the name is taken (``code`` ``gallery_exists``) or a bad setting.
        """
        body = {"name": name, "index": index, "dtype": dtype, "metric": metric}
        if model is not None:
            body["model"] = model
        if dim is not None:
            body["dim"] = dim
        self.request("POST", "/v1/galleries", json=body)
        return RemoteGallery(self, name)

    def gallery(self, name: str) -> RemoteGallery:
        """A handle on gallery ``name`` (no request is made until it is used)."""
        return RemoteGallery(self, name)

    def delete_gallery(self, name: str) -> None:
        """Delete a gallery and its files. Raises GalleryError if there is none."""
        self.request("DELETE", f"/v1/galleries/{_q(name)}")


class RemoteGallery:
    """A gallery of the service, with :class:`~npcface.Gallery`'s calls (and the recogniser's
    ``enroll``/``identify`` for images)."""

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = name
        self._path = f"/v1/galleries/{_q(name)}"

    def __repr__(self) -> str:
        return f"RemoteGallery({self.client.base_url!r}, {self.name!r})"

    @property
    def groups(self) -> RemoteGroups:
        """The gallery's unlabelled faces grouped into people, with the corrections people
        make (:class:`npcface.client_groups.RemoteGroups`)."""
        from .client_groups import RemoteGroups

        return RemoteGroups(self.client.request, _file, self._path)

    def info(self) -> Any:
        """:class:`~npcface.gallery.GalleryInfo` of the gallery (``path`` is its URL; the
        server does not tell where its files are)."""
        from dataclasses import fields

        from .gallery import GalleryInfo

        d = self.client.request("GET", self._path)
        d["path"] = f"{self.client.base_url}{self._path}"
        return GalleryInfo(**{f.name: d[f.name] for f in fields(GalleryInfo) if f.name in d})

    def __len__(self) -> int:
        return int(self.client.request("GET", f"{self._path}/identities?limit=1")["total"])

    def __contains__(self, identity: object) -> bool:
        if not isinstance(identity, str):
            return False
        try:
            self.client.request("GET", f"{self._path}/identities/{_q(identity)}")
        except NpcfaceError as exc:
            if getattr(exc, "code", None) == "identity_not_found":
                return False
            raise
        return True

    def add(
        self,
        identity: str,
        embeddings: np.ndarray,
        metadata: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> list[int]:
        """Enroll (d,) or (n, d) embeddings under ``identity`` (:meth:`Gallery.add_once`):
        one template id per row (a row the identity holds already keeps its template),
        durable when this returns. Sent with an ``Idempotency-Key`` (``idempotency_key``,
        or a fresh one), so a retry after a dropped connection writes nothing twice."""
        arr = np.asarray(embeddings, np.float32)
        rows = arr[None] if arr.ndim == 1 else arr
        body = {
            "embeddings": rows.astype(np.float64).tolist(),
            "metadata": dict(metadata) if metadata else None,
        }
        out = self.client.request(
            "POST",
            f"{self._path}/identities/{_q(identity)}",
            json=body,
            headers=_idempotent(idempotency_key),
        )
        return [int(i) for i in out["template_ids"]]

    def enroll(
        self,
        identity: str,
        images: Sequence[ImageInput] | ImageInput,
        metadata: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> list[int]:
        """Enroll the face of each image under ``identity``, all or none
        (:meth:`FaceRecognizer.enroll`): one template id per image (an image the identity
        holds already keeps its template), durable when this returns; exactly once, as
        :meth:`add`."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        files = [_file("images", img) for img in images]
        data = {"metadata": _json(dict(metadata))} if metadata else {}
        out = self.client.request(
            "POST",
            f"{self._path}/identities/{_q(identity)}",
            files=files,
            data=data,
            headers=_idempotent(idempotency_key),
        )
        return [int(i) for i in out["template_ids"]]

    def remove(self, identity: str) -> int:
        """Delete an identity; the number of templates deleted. GalleryError if unknown."""
        out = self.client.request("DELETE", f"{self._path}/identities/{_q(identity)}")
        return int(out["templates"])

    def template_counts(self, page: int = 1000) -> dict[str, int]:
        """Templates of every identity, in enrolment order (fetched a page at a time)."""
        return dict(self._pages(page))

    def identities(self) -> list[str]:
        """Every identity's name, in enrolment order."""
        return [name for name, _ in self._pages(1000)]

    def _pages(self, page: int) -> Iterator[tuple[str, int]]:
        offset = 0
        while True:
            out = self.client.request(
                "GET", f"{self._path}/identities", params={"offset": offset, "limit": page}
            )
            for row in out["identities"]:
                yield row["identity"], int(row["templates"])
            offset += len(out["identities"])
            if not out["identities"] or offset >= out["total"]:
                return

    def _identity(self, identity: str) -> dict[str, Any] | None:
        """``GET`` of one identity (``None`` if it is not enrolled)."""
        try:
            return self.client.request("GET", f"{self._path}/identities/{_q(identity)}")
        except NpcfaceError as exc:
            if getattr(exc, "code", None) == "identity_not_found":
                return None
            raise

    def templates(self, identity: str) -> list[int]:
        """Template ids of an identity ([] if unknown)."""
        out = self._identity(identity)
        return [] if out is None else [int(i) for i in out["template_ids"]]

    def metadata(self, identity: str) -> dict[str, Any] | None:
        """The identity's metadata ({} when none was given; None if it is not enrolled)
        (:meth:`Gallery.metadata`)."""
        out = self._identity(identity)
        return None if out is None else dict(out.get("metadata") or {})

    def search(self, queries: np.ndarray, k: int = 5) -> list[list[Match]]:
        """The ``k`` most similar identities for each query embedding (:meth:`Gallery.search`)."""
        q = np.asarray(queries, np.float32)
        rows = q[None] if q.ndim == 1 else q
        out = self.client.request(
            "POST",
            f"{self._path}/search",
            json={"embeddings": rows.astype(np.float64).tolist(), "k": k},
        )
        return wire.matches_from_json(out["matches"])

    def identify(
        self,
        image: ImageInput,
        k: int = 5,
        threshold: float | None = None,
        far: float | None = None,
    ) -> list[Match]:
        """The ``k`` most similar identities to the face chosen in ``image`` (or to a (d,)
        embedding) at or above the threshold: ``threshold``, or the one calibrated for
        ``far``, or the model's default; the contract of :meth:`FaceRecognizer.identify`.

        Raises:
            InvalidArgumentError: both ``threshold`` and ``far``; as the service answers.
        """
        if threshold is not None and far is not None:
            raise InvalidArgumentError("give threshold or far, not both", input="far")
        if isinstance(image, np.ndarray) and image.ndim == 1:
            if threshold is None:
                threshold = self.client.default_threshold(far)
            body = {"embeddings": [wire.embedding_to_json(image)], "k": k, "threshold": threshold}
            out = self.client.request("POST", f"{self._path}/search", json=body)
            return wire.matches_from_json(out["matches"])[0]
        return self.identify_faces(image, k, threshold, far, all_faces=False)[0][1]

    def identify_faces(
        self,
        image: ImageInput,
        k: int = 5,
        threshold: float | None = None,
        far: float | None = None,
        all_faces: bool = True,
    ) -> list[tuple[Face, list[Match]]]:
        """Every face of ``image`` (or the chosen one) with its ``k`` best matches."""
        data: dict[str, str] = {"k": str(int(k)), "all_faces": "true" if all_faces else "false"}
        if threshold is not None:
            data["threshold"] = repr(float(threshold))
        if far is not None:
            data["far"] = repr(float(far))
        out = self.client.request("POST", f"{self._path}/identify", **_raw(image, data))
        return [
            (wire.face_from_json(f["face"]), [wire.match_from_json(m) for m in f["matches"]])
            for f in out["faces"]
        ]


# ------------------------------------------------------------------ helpers
_READ_ONLY_POSTS = ("/v1/detect", "/v1/embed", "/v1/verify")


def _read_only(method: str, path: str) -> bool:
    """Whether a request has no side effects (safe to send again)."""
    if method in ("GET", "HEAD"):
        return True
    return method == "POST" and (
        path in _READ_ONLY_POSTS or path.endswith("/search") or path.endswith("/identify")
    )


def _file(field: str, image: ImageInput) -> tuple[str, tuple[str, bytes, str]]:
    """A multipart file for an image input, as the library reads it (paths and bytes are
    sent as they are; arrays and PIL images as lossless PNG).

    Raises:
        ImageError: a missing file or an array the library would refuse.
    """
    name = describe(image)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        try:
            return field, (path.name, path.read_bytes(), "application/octet-stream")
        except FileNotFoundError:
            raise ImageError(f"{name}: no such file") from None
        except IsADirectoryError:
            raise ImageError(f"{name}: is a directory, not an image") from None
        except OSError as exc:
            raise ImageError(f"{name}: cannot read: {exc.strerror or exc}") from exc
    if isinstance(image, (bytes, bytearray, memoryview)):
        return field, ("image", bytes(image), "application/octet-stream")
    import cv2

    arr = load_image(image)  # the library's checks and conversions (BGR uint8)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:  # pragma: no cover - PNG encodes any BGR uint8 image
        raise ImageError(f"{name}: could not encode as PNG")
    return field, ("image.png", buf.tobytes(), "image/png")


def _raw(image: ImageInput, fields: dict[str, str] | None = None) -> dict[str, Any]:
    """Request arguments that send one image as the whole body (its name in
    ``Content-Disposition``) and ``fields`` in the query string: no multipart to build or
    for the service to parse (0.3 ms less per request there, measured in-process).

    Raises:
        ImageError: as :func:`_file`.
    """
    from urllib.parse import quote

    _, (filename, data, ctype) = _file("image", image)
    return {
        "content": data,
        "params": fields or {},
        "headers": {
            "content-type": ctype,
            "content-disposition": f"inline; filename*=UTF-8''{quote(filename, safe='')}",
        },
    }


def _q(part: str) -> str:
    """A name as one path segment that reaches no other resource: every reserved character
    percent-encoded (``/``, ``%``, ``?``, ``#``, line breaks...) and the dots too, since
    ``.`` and ``..`` segments are removed by HTTP clients and proxies."""
    from urllib.parse import quote

    return quote(part, safe="").replace(".", "%2E")


def _idempotent(key: str | None) -> dict[str, str]:
    import uuid

    return {"Idempotency-Key": key if key is not None else uuid.uuid4().hex}


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


def _embed_result(
    index: int, name: str, face: Face | None, emb: np.ndarray | None, err: NpcfaceError | None
) -> EmbedResult:
    return EmbedResult(index=index, name=name, face=face, embedding=emb, error=err)
