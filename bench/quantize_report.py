"""fp32 vs fp16 vs INT8 side by side: LFW 10-fold accuracy and CPU ms/face at batch 1 and 32.

Builds the variants of one fp32 ONNX model (fp16; ONNX Runtime static INT8 in the layouts
asked for: QDQ or QOperator, per-channel or per-tensor), calibrates INT8 on aligned crops of
faces that are not in LFW (default: the shared celeba-subset), then evaluates every variant
on the same LFW crops and times them interleaved, round by round, on this CPU.

Examples::

    # the deployed default (SFace), with the shipped int8bq file for comparison
    python bench/quantize_report.py --model sface --shipped --pairs-per-fold 100
    # an exported npcface model
    python bench/quantize_report.py --model runs/mbf/model.onnx --int8 qdq-pc,qoperator-pc

The same comparison is ``npcface export quantize MODEL --fp16 --int8 --calib DIR --report``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(os.environ.get("NPCFACE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
LAYOUTS = {
    "qdq-pc": ("qdq", True),
    "qdq-pt": ("qdq", False),
    "qoperator-pc": ("qoperator", True),
    "qoperator-pt": ("qoperator", False),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="sface", help="registry name or fp32 .onnx (default sface)")
    p.add_argument("--info", help="model facts for a file without metadata (registry name/JSON)")
    p.add_argument("--no-fp16", action="store_true", help="skip the fp16 variant")
    p.add_argument(
        "--int8",
        default="qdq-pc,qdq-pt,qoperator-pc,qoperator-pt",
        help=f"INT8 layouts, comma separated, from {', '.join(LAYOUTS)} ('' for none)",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=FILE",
        help="add an already built variant (repeatable)",
    )
    p.add_argument("--calibration", default="minmax", choices=("minmax", "entropy", "percentile"))
    p.add_argument("--calib", default=str(DATA / "celeba-subset"), help="calibration images")
    p.add_argument("--num-calib", type=int, default=256)
    p.add_argument("--lfw", default=str(DATA / "lfw"))
    p.add_argument("--pairs-per-fold", type=int, default=None, help="subset for speed")
    p.add_argument(
        "--shipped",
        action="store_true",
        help="also run a registry model's original file as shipped (only unused inputs dropped)",
    )
    p.add_argument("--opencv", action="store_true", help="also time fp32 and shipped on OpenCV DNN")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (all cores)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--out-dir", help="where variants are written (default: a temp folder)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )

    import onnx

    from npcface.export.cli import parse_info
    from npcface.export.crops import crops_from_folder
    from npcface.export.quantize import Int8Options, convert_fp16, model_info, quantize_int8
    from npcface.export.report import compare_variants, lfw_crops
    from npcface.modelprep import drop_dangling_inputs
    from npcface.models import find_model_spec, get_model_spec, original_file, resolve_model_file

    spec = find_model_spec(args.model)
    src = resolve_model_file(args.model)
    info = model_info(src, parse_info(args.info) or (spec.info if spec else None))
    out_dir = Path(args.out_dir or tempfile.mkdtemp(prefix="npcface-quant-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = spec.name if spec else src.stem
    notes = []

    variants: dict[str, object] = {"fp32": src}
    if args.opencv:
        variants["fp32 (opencv)"] = (src, "opencv")
    if args.shipped:
        if spec is None:
            p.error("--shipped needs a registry model name")
        shipped = original_file(get_model_spec(args.model))
        proto = onnx.load(str(shipped))
        dropped = drop_dangling_inputs(proto)
        clean = out_dir / f"{stem}.shipped.onnx"
        onnx.save(proto, str(clean))
        variants["shipped"] = clean
        if args.opencv:
            variants["shipped (opencv)"] = (clean, "opencv")
        notes.append(
            f"shipped = {shipped.name} as distributed (fixed batch 1, block-quantised weights "
            f"dequantised at run time), {dropped} unused graph inputs dropped so it loads"
        )
    for item in args.variant:
        label, sep, file = item.partition("=")
        if not sep or not Path(file).is_file():
            p.error(f"--variant wants LABEL=FILE of an existing file, not {item!r}")
        variants[label] = Path(file)
    t0 = time.perf_counter()
    if not args.no_fp16:
        variants["fp16"] = convert_fp16(src, out_dir / f"{stem}.fp16.onnx", info=info)
    layouts = [x for x in args.int8.split(",") if x]
    if layouts:
        calib = crops_from_folder(args.calib, info.input_size, limit=args.num_calib)
        notes.append(
            f"INT8 calibrated ({args.calibration}) on {len(calib)} crops from {args.calib}"
        )
        for layout in layouts:
            if layout not in LAYOUTS:
                p.error(f"unknown INT8 layout {layout!r}; use {', '.join(LAYOUTS)}")
            fmt, per_channel = LAYOUTS[layout]
            opts = Int8Options(
                quant_format=fmt, per_channel=per_channel, calibration=args.calibration
            )
            variants[opts.tag] = quantize_int8(
                src, out_dir / f"{stem}.{opts.tag}.onnx", calib, info=info, options=opts
            )
    print(f"variants built in {time.perf_counter() - t0:.0f} s in {out_dir}", file=sys.stderr)

    data = lfw_crops(args.lfw, [info.input_size], per_fold=args.pairs_per_fold)[info.input_size]
    report = compare_variants(
        variants, data, info=info, threads=args.threads, rounds=args.rounds, notes=notes
    )
    print(report.markdown())
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
