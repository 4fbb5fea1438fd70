"""`liverctl predict`: liver masks from CT scans with pretrained weights."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from liverctl.cli._common import (
    cli_command,
    err,
    note,
    progress_option,
    quiet_option,
    reporter,
    verbose_option,
)
from liverctl.cli.app import app

OUTPUT_FORMATS = "nii.gz|nrrd|mha|dicom-seg|rtstruct"
BACKEND_OPTION = typer.Option(
    "auto",
    "--backend",
    metavar="auto|torch|openvino|onnxruntime",
    help="What runs the network on the CPU: auto (of torch and the installed runtimes that pass the "
    'exactness test, the one measured fastest here), torch, openvino or onnxruntime (pip install "liverctl[cpu]"). --exact: torch.',
)


def _citation(net: Any) -> str | None:
    """One line naming the model(s) and what to cite, for each run with pretrained weights."""
    parts = []
    for item in net.resolved:
        entry = item.entry
        if entry.citation and f"{entry.name}: {entry.citation}" not in parts:  # nnU-Net folds share one entry
            parts.append(f"{entry.name}: {entry.citation}")
    if not parts:
        return None
    return "model " + "; ".join(parts) if len(parts) == 1 else "models " + " | ".join(parts)


def _items(inputs: list[str] | None, input_option: list[str] | None) -> list[str]:
    from liverctl.errors import ConfigError
    from liverctl.predict import parse_paths

    items: list[str] = []
    for item in [*(input_option or []), *(inputs or [])]:
        items.extend(parse_paths(sys.stdin.read()) if item == "-" else [item])
    if not items and not (inputs or input_option):
        raise ConfigError("give the scans to segment: liverctl predict SCAN... (or -i SCAN)")
    return items


def _callbacks(as_json: bool) -> tuple[Any, Any]:
    """``(on_model, on_case)`` of a predict run: the citation is noted with the first result (so
    that an input error comes alone), each mask path is printed as soon as it is written."""
    citation: list[str] = []

    def loaded(net: Any) -> None:
        line = _citation(net)
        if line:
            citation.append(f"{line} (please cite it when you publish results)")

    def written(case: Any) -> None:  # each mask path as soon as it is written, so pipelines stream
        if case.ok and citation:
            note(citation.pop())
        if case.skipped:
            note(f"{Path(case.input).name}: kept the earlier result ({case.mask})")
        for message in (case.report or {}).get("qc", {}).get("messages", []) if not case.skipped else []:
            note(f"{Path(case.input).name}: {message}")
        if case.ok and not as_json:
            typer.echo(str(case.mask))
            sys.stdout.flush()

    return loaded, written


# Long by its signature: each of the ~30 Typer options is declared with its help text (issue 9);
# the body only parses and calls liverctl.predict.predict.
@app.command("predict")
@cli_command
def predict(
    inputs: list[str] | None = typer.Argument(
        None,
        metavar="SCAN...",
        help="Scan files, folders of scans, DICOM series folders, zipped DICOM series, single DICOM files "
        "(their series), or '-' to read paths from stdin (one a line).",
    ),
    input_option: list[str] | None = typer.Option(
        None, "-i", "--input", metavar="SCAN", help="A scan, as TotalSegmentator's -i (repeatable; SCAN... works too)."
    ),
    output: Path | None = typer.Option(
        None,
        "-o",
        "--output",
        metavar="PATH",
        help="Mask file (one scan) or folder. Default: ./<name>_liver.<format>.",
    ),
    output_format: str | None = typer.Option(
        None,
        "--output-format",
        metavar=OUTPUT_FORMATS,
        help="Mask format. Default: the input's (NIfTI, NRRD, MetaImage); NIfTI for DICOM input. dicom-seg: a "
        "DICOM Segmentation referencing the source series; rtstruct: an RT Structure Set of liver (and tumour) "
        "contours for radiotherapy planning systems (both: DICOM input; pip install 'liverctl\\[dicom]').",
    ),
    recursive: bool = typer.Option(
        False, "-r", "--recursive", help="Also segment the scans in every folder below each input folder."
    ),
    preview: bool = typer.Option(
        False, "--preview", help="Also write <name>_preview.png: three planes through the liver, mask outlined."
    ),
    model: list[str] | None = typer.Option(
        None,
        "--model",
        "-m",
        metavar="NAME",
        help="Registry model name (see `liverctl weights list`); repeat for an ensemble.",
    ),
    weights: list[Path] | None = typer.Option(
        None,
        "--weights",
        metavar="FILE",
        help="Local weights file instead of a download (repeat for an ensemble), or an nnU-Net v2 results folder "
        "(holding plans.json; its folds are the ensemble).",
    ),
    arch: str | None = typer.Option(
        None, "--arch", metavar="NAME", help="Architecture of --weights files that have no .toml beside them."
    ),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps."),
    precision: str = typer.Option(
        "auto",
        "--precision",
        metavar="PRECISION",
        help="auto (fp16 on CUDA, fp32 on the CPU), fp32, fp16 or bf16 (2.5x faster on CPUs with native bf16; "
        "flips thin decisions).",
    ),
    backend: str = BACKEND_OPTION,
    tta: bool = typer.Option(False, "--tta", help="Mirror test-time augmentation (8 passes; slower)."),
    ensemble: str = typer.Option(
        "mean",
        "--ensemble",
        metavar="mean|vote",
        help="Several --weights/--model: mean of probabilities, or majority vote (PIPO-FAN's 5 folds).",
    ),
    overlap: float | None = typer.Option(
        None, "--overlap", metavar="F", help="Sliding-window overlap in [0, 1) (default: the model's)."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", metavar="N", help="Windows per forward pass (default: 4 on a GPU, 1 on the CPU)."
    ),
    save_probabilities: bool = typer.Option(
        False, "--save-probabilities", help="Also write <name>_probabilities.nii.gz (liver probability, float32)."
    ),
    no_postprocess: bool = typer.Option(
        False, "--no-postprocess", help="Keep the raw mask (no largest-component filtering, no hole filling)."
    ),
    no_shortcuts: bool = typer.Option(
        False,
        "--no-shortcuts",
        "--exact",
        help="The MONAI bundle's arithmetic: its Spacingd/Invertd steps bit for bit, every window, fp32 "
        "(an nnU-Net folder: nnUNetPredictor's labels).",
    ),
    fast: bool = typer.Option(
        False,
        "--fast",
        help="Also crop to the body and shrink windows (~2-4x less compute; masks may differ from MONAI's).",
    ),
    dataset: str | None = typer.Option(
        None, "--dataset", metavar="NAME", help="Dataset branch of a dataset-wise (DCM) model."
    ),
    series: str | None = typer.Option(
        None, "--series", metavar="UID", help="SeriesInstanceUID to read from a DICOM folder."
    ),
    shard: str | None = typer.Option(
        None,
        "--shard",
        metavar="I/N|slurm",
        help="Segment only shard I (0-based) of N of the inputs; slurm: I and N from the Slurm job array "
        "(SLURM_ARRAY_TASK_ID...). Each shard writes summary.shard-I-of-N.csv; `liverctl gather` joins them.",
    ),
    summary: Path | None = typer.Option(
        None, "--summary", metavar="FILE", help="Summary CSV path (default: OUTPUT/summary.csv)."
    ),
    threads: int | None = typer.Option(None, "--threads", metavar="N", help="CPU threads for torch."),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Skip scans whose mask and report an earlier run wrote with the same model and options.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the per-scan reports as a JSON list instead of paths."),
    progress: bool | None = progress_option(),
    quiet: bool = quiet_option(),
    verbose: bool = verbose_option(),
) -> None:
    """Segment the liver in CT scans; write masks aligned to each scan, a JSON report beside each, and a summary CSV.

    Weights come from the Hugging Face Hub (pinned in weights.toml, sha256-verified, cached);
    HF_HUB_OFFLINE=1 uses the cache only. Each written mask path is printed on stdout.
    """
    from liverctl.predict import PredictOptions
    from liverctl.predict.cohort import predict_cohort

    items = _items(inputs, input_option)
    options = PredictOptions(
        device=device,
        precision=precision,
        tta=tta,
        overlap=overlap,
        batch_size=batch_size,
        shortcuts=not no_shortcuts,
        fast=fast,
        postprocess=not no_postprocess,
        save_probabilities=save_probabilities,
        dataset=dataset,
        threads=threads,
        output_format=output_format,
        preview=preview,
        ensemble=ensemble,
        backend=backend,
    )

    loaded, written = _callbacks(as_json)
    with reporter(progress, quiet, verbose) as callback:
        result = predict_cohort(
            items,
            output,
            model=model or None,
            weights=[str(w) for w in weights] if weights else None,
            arch=arch,
            options=options,
            series_uid=series,
            shard=shard,
            summary=summary,
            resume=resume,
            progress=callback,
            on_case=written,
            recursive=recursive,
            on_model=loaded,
        )
    if as_json:
        reports = [c.report if c.ok else {"input": c.input, "error": c.error} for c in result.cases]
        typer.echo(json.dumps(reports, indent=2))
    for case in result.failures:  # the scan's path once, at the start of its line
        error = case.error or ""
        err(f"liverctl: error: {error if error.startswith(case.input) else f'{case.input}: {error}'}")
    if len(result.cases) > 1 and result.failures:
        err(f"liverctl: {len(result.failures)} of {len(result.cases)} scan(s) failed")
    if result.failures:
        raise typer.Exit(1)
