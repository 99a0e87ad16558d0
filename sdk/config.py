"""One description of the pipeline: :class:`RecognizerConfig`.

What the pipeline is (preset, detector and its options, recogniser, face policy, flip
fusion, engine and providers, threads, the pixel limit, the enrolment gate) is one frozen
value, checked when it is made: names against the registries, numbers against their
ranges. Every producer of crops or embeddings builds its recogniser from one (the CLI
through :func:`npcface.cli_sdk.config_from_args`, the service's settings, both enrolment
engines, ``npcface bench``, training's ``prepare`` and export's parity crops and report),
so a model is trained on the crops the default inference pipeline makes, unless asked
otherwise. It travels as JSON (:meth:`RecognizerConfig.to_dict`) to worker processes and
Ray actors, and is written into reports so they name the pipeline that made them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .choose import FACE_POLICIES
from .errors import InvalidArgumentError
from .presets import DEFAULT_PRESET, PRESETS, get_preset
from .quality import DEFAULT_ENROLL_QUALITY

BACKENDS = ("auto", "onnxruntime", "openvino", "opencv", "tensorrt")
"""Recogniser engines (see :func:`npcface.runtime.load_runner`)."""


@dataclass(frozen=True)
class RecognizerConfig:
    """The pipeline of a :class:`~npcface.FaceRecognizer`, checked and frozen.

    ``None`` fields take the preset's value (:meth:`resolved` fills them in).

    Attributes:
        preset: ``accurate`` (default) or ``fast`` (:mod:`npcface.presets`).
        detector: detector registry name (``retinaface``, ``yunet``).
        detector_options: keyword arguments of the detector (``score_threshold``,
            ``min_side``, ...), merged over the preset's.
        recognizer: recogniser registry name (``sface``, ``sface-int8``) or a model file
            exported by npcface.
        face_policy: ``center``, ``largest``, ``best_score`` or ``single``.
        flip: fuse each embedding with its mirror image's.
        providers: ONNX Runtime providers (``cpu``, ``cuda``, ``tensorrt``, or a list);
            ``None`` picks the best that works.
        backend: recogniser engine: ``auto`` or one of :data:`BACKENDS`.
        threads: CPU threads per model (``None``: all cores).
        max_pixels: largest image accepted, in pixels (``None``: 64 M).
        enroll_quality: enrolment refuses faces of a lower overall quality, in [0, 1].

    Raises:
        InvalidArgumentError: (``UnknownNameError`` for names) any field it cannot use,
            naming the field and the valid values.
    """

    preset: str = DEFAULT_PRESET
    detector: str | None = None
    detector_options: Mapping[str, Any] = field(default_factory=dict)
    recognizer: str | None = None
    face_policy: str | None = None
    flip: bool | None = None
    providers: str | tuple[str, ...] | None = None
    backend: str = "auto"
    threads: int | None = None
    max_pixels: int | None = None
    enroll_quality: float = DEFAULT_ENROLL_QUALITY

    def __post_init__(self) -> None:
        if not isinstance(self.preset, str) or self.preset not in PRESETS:
            raise InvalidArgumentError(
                f"unknown preset {self.preset!r}; use one of {', '.join(sorted(PRESETS))}",
                input="preset",
            )
        if self.detector is not None:
            from .detect import DETECTORS

            if not isinstance(self.detector, str):
                raise InvalidArgumentError(
                    f"detector must be a registry name, got {type(self.detector).__name__} "
                    "(a detector object goes to FaceRecognizer(detector=...))",
                    input="detector",
                )
            DETECTORS.get(self.detector)  # raises UnknownModelError listing the names
        if not isinstance(self.detector_options, Mapping):
            raise InvalidArgumentError(
                "detector_options must be a mapping", input="detector_options"
            )
        object.__setattr__(self, "detector_options", MappingProxyType(dict(self.detector_options)))
        if self.recognizer is not None:
            object.__setattr__(self, "recognizer", _check_recognizer(self.recognizer))
        if self.face_policy is not None and self.face_policy not in FACE_POLICIES:
            raise InvalidArgumentError(
                f"unknown face policy {self.face_policy!r}; use one of {', '.join(FACE_POLICIES)}",
                input="face_policy",
            )
        if self.flip is not None and not isinstance(self.flip, bool):
            raise InvalidArgumentError(
                f"flip must be True, False or None, got {self.flip!r}", input="flip"
            )
        if isinstance(self.providers, list):
            object.__setattr__(self, "providers", tuple(self.providers))
        if self.backend not in BACKENDS:
            raise InvalidArgumentError(
                f"unknown backend {self.backend!r}; use one of {', '.join(BACKENDS)}",
                input="backend",
            )
        _positive_int(self.threads, "threads")
        _positive_int(self.max_pixels, "max_pixels")
        quality = self.enroll_quality
        if (
            isinstance(quality, bool)
            or not isinstance(quality, (int, float))
            or not math.isfinite(quality)
            or not 0.0 <= float(quality) <= 1.0
        ):
            raise InvalidArgumentError(
                f"enroll_quality must be a number in [0, 1], got {quality!r}",
                input="enroll_quality",
            )
        object.__setattr__(self, "enroll_quality", float(quality))

    # ------------------------------------------------------------ derived
    def resolved(self) -> RecognizerConfig:
        """This configuration with the preset's values in the fields left ``None``, and the
        detector's options merged over the preset's when the detector is the preset's."""
        p = get_preset(self.preset)
        options = dict(self.detector_options)
        if self.detector is None or self.detector == p.detector:
            options = {**p.detector_options, **options}
        return replace(
            self,
            detector=self.detector if self.detector is not None else p.detector,
            detector_options=options,
            recognizer=self.recognizer if self.recognizer is not None else p.recognizer,
            face_policy=self.face_policy if self.face_policy is not None else p.face_policy,
            flip=self.flip if self.flip is not None else p.flip,
        )

    def describe(self) -> str:
        """One line naming the pipeline, for reports and logs."""
        r = self.resolved()
        options = ", ".join(f"{k}={v}" for k, v in sorted(r.detector_options.items()))
        return (
            f"{r.preset}: detector {r.detector}{f' ({options})' if options else ''}, "
            f"recogniser {r.recognizer}, face policy {r.face_policy}, "
            f"flip {'on' if r.flip else 'off'}, backend {r.backend}"
        )

    # ------------------------------------------------------------ as data
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (for worker processes, Ray actors and reports)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["detector_options"] = dict(self.detector_options)
        if isinstance(self.providers, tuple):
            d["providers"] = list(self.providers)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecognizerConfig:
        """The configuration :meth:`to_dict` gave.

        Raises:
            InvalidArgumentError: an unknown key, or any field the constructor refuses.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidArgumentError(
                f"unknown recogniser settings {', '.join(unknown)}; known: {', '.join(sorted(known))}",
                input=unknown[0],
            )
        return cls(**dict(data))


def _check_recognizer(name: str | os.PathLike[str]) -> str:
    from .models import find_model_spec, list_models

    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str) or not name.strip():
        raise InvalidArgumentError(
            f"recognizer must be a registry name or a model file, got {name!r}", input="recognizer"
        )
    spec = find_model_spec(name)
    if (spec is not None and spec.kind == "recognizer") or Path(name).is_file():
        return name
    raise InvalidArgumentError(
        f"unknown recognizer {name!r}: neither a registered recogniser "
        f"({', '.join(list_models(kind='recognizer'))}) nor a model file",
        input="recognizer",
    )


def _positive_int(value: Any, what: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{what} must be a positive integer, got {value!r}", input=what)


def providers_tuple(providers: str | Sequence[str] | None) -> str | tuple[str, ...] | None:
    """Providers as a config holds them (a list becomes a tuple)."""
    return tuple(providers) if isinstance(providers, (list, tuple)) else providers
