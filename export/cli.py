"""``npcface export onnx | quantize | tensorrt``.

Torch, onnx and TensorRT are imported inside the handlers, never at module level, so the
``npcface`` command works without the ``export`` extra; a handler that needs torch raises
:class:`~npcface.errors.MissingExtraError` naming it.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from npcface.errors import NpcfaceError


def register(sub: Any) -> None:
    """Add the ``export`` command group to the ``npcface`` parser."""
    p = sub.add_parser(
        "export",
        help="export checkpoints to ONNX, quantise, build TensorRT engines",
        description="Turn trained checkpoints and third-party ONNX recognisers into "
        "self-describing artefacts the SDK runs directly, with a parity check.",
    )
    ex = p.add_subparsers(dest="target", metavar="TARGET")
    ex.required = True

    o = ex.add_parser(
        "onnx",
        help="checkpoint (or third-party .onnx) -> dynamic-batch ONNX with metadata",
        description="Export a checkpoint from 'npcface train' (or prepare a third-party ONNX "
        "recogniser) to ONNX with a dynamic batch axis and npcface metadata, then check "
        "parity with the source on real aligned crops through the SDK's embedder. The "
        "output is written only when parity holds.",
    )
    o.add_argument(
        "source",
        help="checkpoint from 'npcface train' (model.pt, a rank file, a step or run folder) "
        "or a third-party .onnx file",
    )
    o.add_argument("-o", "--output", required=True, help="output .onnx file")
    o.add_argument("--backbone", help="backbone name when the checkpoint does not say")
    o.add_argument("--input-size", type=int, help="override the input size")
    o.add_argument("--embedding-size", type=int, help="override the embedding size")
    o.add_argument("--name", help="model name written into the metadata")
    _info_args(o)
    o.add_argument("--opset", type=int, default=None, help="ONNX opset, 17 to 20 (default 18)")
    o.add_argument("--no-simplify", action="store_true", help="skip onnxslim simplification")
    _crop_args(o, "parity", 32)
    o.add_argument("--no-parity", action="store_true", help="skip the parity check (not advised)")
    o.add_argument("--min-cosine", type=float, default=None, help="parity threshold (0.9999)")
    o.add_argument(
        "--lfw",
        metavar="DIR",
        help="also verify LFW pairs through FaceRecognizer(recognizer=OUTPUT) and the torch "
        "model through the same evaluation, and print both accuracies",
    )
    o.add_argument(
        "--calibrate",
        metavar="DIR",
        help="calibrate the verification thresholds on the photos of DIR/<identity>/ (not "
        "your evaluation set) and store them in the output, so that it verifies at once "
        "(as 'npcface calibrate')",
    )
    o.add_argument(
        "--calibrate-limit", type=int, default=None, help="a random sample of at most N photos"
    )
    o.add_argument("--json", action="store_true", help="print the result as JSON")
    o.add_argument("--no-progress", action="store_true", help="no progress bars")
    o.set_defaults(func=_onnx)

    q = ex.add_parser(
        "quantize",
        help="fp16 / INT8 variants of an ONNX model, optionally with an LFW/speed report",
        description="Make an fp16 copy (--fp16) and/or an ONNX Runtime static INT8 copy "
        "calibrated on aligned crops (--int8 --calib DIR). With --report, compare fp32 and "
        "the variants side by side: LFW 10-fold accuracy and CPU ms/face at batch 1 and 32.",
    )
    q.add_argument("model", help="fp32 .onnx file")
    q.add_argument("--fp16", action="store_true", help="write <model>.fp16.onnx")
    q.add_argument("--int8", action="store_true", help="write <model>.int8-<format>-<pc|pt>.onnx")
    q.add_argument("-o", "--output-dir", help="folder for the variants (default: next to MODEL)")
    q.add_argument("--format", choices=("qdq", "qoperator"), default="qdq", help="INT8 layout")
    q.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor")
    q.add_argument("--calibration", choices=("minmax", "entropy", "percentile"), default="minmax")
    _crop_args(q, "calib", 256)
    _info_args(q)
    q.add_argument("--report", action="store_true", help="compare fp32 and the variants")
    q.add_argument("--lfw", metavar="DIR", help="LFW folder for --report (default: shared data)")
    q.add_argument(
        "--pairs-per-fold",
        type=int,
        default=None,
        help="evaluate only this many genuine and impostor pairs per fold (faster)",
    )
    q.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads for timing")
    q.add_argument("--json", action="store_true")
    q.add_argument("--no-progress", action="store_true", help="no progress bars")
    q.set_defaults(func=_quantize)

    t = ex.add_parser(
        "tensorrt",
        help="ONNX -> TensorRT engine keyed on TensorRT version, GPU, precision, profile",
        description="Build a TensorRT engine (explicit batch, one optimisation profile, "
        "timing cache). The engine's key file records the TensorRT version, GPU compute "
        "capability, precision, batch profile and the ONNX file's hash; a matching engine "
        "is reused, a mismatched one rebuilt. Needs 'npcface[tensorrt]' and a CUDA GPU.",
    )
    t.add_argument("model", help=".onnx file")
    t.add_argument("-o", "--output", help=".engine file or folder (default: keyed name)")
    t.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp16")
    t.add_argument(
        "--profile", default="1,32,64", help="MIN,OPT,MAX batch (OPT = typical batch; 1,32,64)"
    )
    _crop_args(t, "calib", 512)
    _info_args(t)
    t.add_argument("--workspace-mb", type=int, default=2048)
    t.add_argument("--timing-cache", help="timing cache file (default: per TensorRT/GPU in cache)")
    t.add_argument("--rebuild", action="store_true", help="build even if a matching engine exists")
    t.add_argument("--device", type=int, default=0, help="CUDA device")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.set_defaults(func=_tensorrt)


def _bar(args: argparse.Namespace) -> bool:
    return not getattr(args, "no_progress", False)


def _info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--info",
        metavar="NAME|FILE|JSON",
        help="model facts for a file without npcface metadata: a registry name (e.g. sface), "
        "a JSON file, or inline JSON of RecognizerInfo fields",
    )


def _crop_args(p: argparse.ArgumentParser, what: str, default: int) -> None:
    p.add_argument(
        "--preset",
        default="accurate",
        help="the pipeline that makes the crops (default: accurate, the inference default)",
    )
    p.add_argument("--detector", default=None, help="its detector (default: the preset's)")
    p.add_argument("--policy", default=None, help="its face policy (default: the preset's)")
    if what == "parity":
        p.add_argument(
            "--crops",
            metavar="DIR",
            help="face images (or aligned crops) for the parity check "
            "(default: $NPCFACE_DATA/lfw/images or ../shared/data/lfw/images)",
        )
        p.add_argument("--num-crops", type=int, default=default, help="crops to compare")
    else:
        p.add_argument(
            "--calib",
            metavar="DIR",
            help="face images (or aligned crops) for INT8 calibration; use faces that are "
            "not in your evaluation set",
        )
        p.add_argument("--num-calib", type=int, default=default, help="calibration crops")


def _calibration_crops(args: argparse.Namespace, size: int) -> Any:
    """INT8 calibration crops of ``--calib`` (``--num-calib`` of them, in the pipeline of
    the crop options)."""
    from .crops import crops_from_folder

    return crops_from_folder(
        args.calib, size, limit=args.num_calib, config=_config(args), progress=_bar(args)
    )


def _config(args: argparse.Namespace) -> Any:
    """The pipeline of the crop options (:func:`_crop_args`)."""
    from npcface.config import RecognizerConfig

    return RecognizerConfig(preset=args.preset, detector=args.detector, face_policy=args.policy)


def parse_info(text: str | None) -> Any:
    """``--info``: a registry name, a JSON file or inline JSON -> RecognizerInfo (or None)."""
    from npcface.modelinfo import RecognizerInfo

    if not text:
        return None
    if text.lstrip().startswith("{"):
        doc = text
    elif Path(text).is_file():
        doc = Path(text).read_text()
    else:
        from npcface.models import get_model_spec

        info = get_model_spec(text).info
        if info is None:
            raise NpcfaceError(f"registry model {text!r} is not a recogniser (it has no facts)")
        return info
    try:
        return RecognizerInfo.from_json(doc)
    except (ValueError, TypeError, KeyError) as exc:
        raise NpcfaceError(f"--info: not valid RecognizerInfo JSON: {exc}") from exc


def _crop_folder(arg: str | None, required_for: str) -> Path:
    from .crops import default_face_folder

    folder = Path(arg) if arg else default_face_folder()
    if folder is None:
        raise NpcfaceError(
            f"{required_for} needs face images: pass a folder, or set NPCFACE_DATA to the "
            "shared data folder (with lfw/images)"
        )
    return folder


def _onnx(args: argparse.Namespace) -> int:
    try:
        return _onnx_checked(args)
    except ValueError as exc:  # arguments the export refuses: one line, not a traceback
        raise NpcfaceError(str(exc)) from None


def _onnx_checked(args: argparse.Namespace) -> int:
    from .crops import crops_from_folder
    from .onnx import check_opset, export_checked, import_torch

    check_opset(args.opset)  # before the checkpoint is read
    source = Path(args.source)
    if not source.exists():
        raise NpcfaceError(f"{source} does not exist")
    third_party = source.is_file() and source.suffix.lower() == ".onnx"
    given = parse_info(args.info)
    model: Any
    if third_party:
        if given is None:
            raise NpcfaceError(
                f"{source} is a third-party ONNX file: give its facts with --info (a registry "
                "name such as 'sface', a JSON file, or inline JSON)"
            )
        from dataclasses import replace

        info = replace(given, name=args.name) if args.name else given
        model, reference, size = str(source), info, info.input_size
    else:
        import_torch()
        from .checkpoint import load_checkpoint

        loaded = load_checkpoint(
            source,
            backbone=args.backbone,
            input_size=args.input_size,
            embedding_size=args.embedding_size,
            name=args.name,
            info=given,
        )
        info = loaded.info
        model, reference, size = loaded.model, loaded.reference_info, loaded.info.input_size
    crops = None
    if not args.no_parity:
        folder = _crop_folder(args.crops, "the parity check")
        crops = crops_from_folder(
            folder, size, limit=args.num_crops, config=_config(args), progress=_bar(args)
        )
    kwargs = {"min_cosine": args.min_cosine} if args.min_cosine is not None else {}
    result = export_checked(
        model,
        args.output,
        crops,
        info=info,
        input_size=size,
        reference_info=reference,
        simplify=not args.no_simplify,
        opset=args.opset,
        **kwargs,
    )
    out: dict[str, Any] = {
        "output": str(result.path),
        "info": json.loads(result.info.to_json()),
        "parity": asdict(result.parity) if result.parity else None,
    }
    if args.calibrate:
        out["calibration"] = _calibrate_output(result.path, args)
    if args.lfw:
        if third_party:
            raise NpcfaceError("--lfw compares with a torch model; use 'npcface eval lfw' here")
        from .report import compare_torch_and_onnx

        lfw = compare_torch_and_onnx(
            model,
            result.path,
            args.lfw,
            reference_info=reference,
            config=_config(args),
            progress=_bar(args),
        )
        out["lfw"] = {
            "torch_accuracy": lfw["torch"]["accuracy_mean"],
            "onnx_accuracy": lfw["onnx"]["accuracy_mean"],
            "accuracy_delta": lfw["accuracy_delta"],
            "failed_detections": lfw["onnx"]["failed_detections"],
        }
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    else:
        print(f"wrote {result.path}")
        print(result.parity.summary() if result.parity else "parity check skipped")
        if "lfw" in out:
            r = out["lfw"]
            print(
                f"LFW 10-fold: torch {100 * r['torch_accuracy']:.2f}%, "
                f"FaceRecognizer(recognizer={result.path.name}) {100 * r['onnx_accuracy']:.2f}% "
                f"(delta {100 * r['accuracy_delta']:+.2f} points)"
            )
    return 0


def _calibrate_output(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Thresholds of the exported file, calibrated on ``--calibrate`` in the pipeline of the
    crop options and written into its metadata (:func:`npcface.eval.calibrate.calibrate`)."""
    from dataclasses import replace

    from npcface.eval.calibrate import calibrate, write_thresholds
    from npcface.recognizer import FaceRecognizer

    rec = FaceRecognizer.from_config(replace(_config(args), recognizer=str(path)))
    result = calibrate(rec, args.calibrate, progress=_bar(args), limit=args.calibrate_limit)
    write_thresholds(path, result)
    return {
        "thresholds": dict(result.thresholds),
        "unsupported": dict(result.unsupported),
        "source": result.source,
    }


def _quantize(args: argparse.Namespace) -> int:
    from .quantize import Int8Options, convert_fp16, model_info, quantize_int8, variant_path

    if not (args.fp16 or args.int8):
        raise NpcfaceError("say what to make: --fp16, --int8 (with --calib DIR), or both")
    src = Path(args.model)
    if not src.is_file():
        raise NpcfaceError(f"{src} does not exist")
    info = model_info(src, parse_info(args.info))

    def out(suffix: str) -> Path:
        p = variant_path(src, suffix)
        return Path(args.output_dir) / p.name if args.output_dir else p

    variants: dict[str, Path] = {"fp32": src}
    if args.fp16:
        variants["fp16"] = convert_fp16(src, out("fp16"), info=info)
    if args.int8:
        if not args.calib:
            raise NpcfaceError("--int8 needs --calib DIR: face images for calibration")
        options = Int8Options(
            quant_format=args.format,
            per_channel=not args.per_tensor,
            calibration=args.calibration,
        )
        calib = _calibration_crops(args, info.input_size)
        variants[options.tag] = quantize_int8(
            src, out(options.tag), calib, info=info, options=options
        )
    for name, path in variants.items():
        if name != "fp32":
            print(f"wrote {path}")
    if args.report:
        from .report import compare_variants, lfw_crops

        lfw = _crop_folder(args.lfw, "--report").resolve()
        lfw = lfw.parent if lfw.name == "images" else lfw
        size = info.input_size
        data = lfw_crops(
            lfw, [size], per_fold=args.pairs_per_fold, config=_config(args), progress=_bar(args)
        )[size]
        report = compare_variants(
            variants, data, info=info, threads=args.threads, progress=_bar(args)
        )
        print(json.dumps(report.to_dict(), indent=2) if args.json else report.markdown())
    return 0


def _tensorrt(args: argparse.Namespace) -> int:
    from .tensorrt import TensorRTBuildConfig, build_engine, parse_profile

    try:
        lo, opt, hi = parse_profile(args.profile)
        config = TensorRTBuildConfig(
            precision=args.precision,
            min_batch=lo,
            opt_batch=opt,
            max_batch=hi,
            workspace_mb=args.workspace_mb,
            timing_cache=Path(args.timing_cache) if args.timing_cache else None,
        )
    except ValueError as exc:
        raise NpcfaceError(str(exc)) from None
    info = parse_info(args.info)
    crops = None
    if args.precision == "int8" and args.calib:
        from .quantize import model_info

        info = model_info(args.model, info)
        crops = _calibration_crops(args, info.input_size)
    try:
        path = build_engine(
            args.model,
            args.output,
            config,
            calib_crops=crops,
            info=info,
            rebuild=args.rebuild,
            device=args.device,
        )
    except ValueError as exc:
        raise NpcfaceError(str(exc)) from None
    print(f"engine {path} (key file {os.path.basename(path)}.json)")
    return 0
