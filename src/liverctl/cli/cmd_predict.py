"""`liverctl predict`: liver masks from CT scans with pretrained weights."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from liverctl.cli import app
from liverctl.cli._common import cli_command, err, progress_bar


@app.command("predict")
@cli_command
def predict(
    inputs: list[str] = typer.Argument(
        ..., help="Scan files, folders of scans, DICOM series folders, or '-' to read paths from stdin (one a line)."
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Mask file (one scan) or folder. Default: ./<name>_liver.nii.gz."
    ),
    model: list[str] | None = typer.Option(
        None, "--model", "-m", help="Registry model name (see `liverctl weights list`); repeat for an ensemble."
    ),
    weights: list[Path] | None = typer.Option(
        None, "--weights", help="Local weights file instead of a download; repeat for an ensemble."
    ),
    arch: str | None = typer.Option(
        None, "--arch", help="Architecture of --weights files that have no .toml beside them."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="auto (fp16 on CUDA, bf16 on a CPU with native bf16, else fp32), fp32, fp16 or bf16.",
    ),
    tta: bool = typer.Option(False, "--tta", help="Mirror test-time augmentation (8 passes; slower)."),
    overlap: float | None = typer.Option(None, "--overlap", help="Sliding-window overlap (default: the model's)."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Windows per forward pass (default: 4 on a GPU, 1 on the CPU)."
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
        help="Every MONAI window (air windows too), in fp32 unless --precision: MONAI's result to rounding.",
    ),
    fast: bool = typer.Option(
        False,
        "--fast",
        help="Also crop to the body and shrink windows (~2-4x less compute; masks may differ from MONAI's).",
    ),
    dataset: str | None = typer.Option(None, "--dataset", help="Dataset branch of a dataset-wise (DCM) model."),
    series: str | None = typer.Option(None, "--series", help="SeriesInstanceUID to read from a DICOM folder."),
    shard: str | None = typer.Option(None, "--shard", help="I/N: segment only shard I (0-based) of N of the inputs."),
    summary: Path | None = typer.Option(None, "--summary", help="Summary CSV path (default: OUTPUT/summary.csv)."),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads for torch."),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Skip scans whose mask and report an earlier run wrote with the same model and options.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the per-scan reports as a JSON list instead of paths."),
) -> None:
    """Segment the liver in CT scans; write masks aligned to each scan, a JSON report beside each, and a summary CSV.

    Weights come from the Hugging Face Hub (pinned in weights.toml, sha256-verified, cached);
    HF_HUB_OFFLINE=1 uses the cache only. Each written mask path is printed on stdout.
    """
    from liverctl.predict import PredictOptions, parse_paths, parse_shard
    from liverctl.predict import predict as run_predict

    items: list[str] = []
    for item in inputs:
        items.extend(parse_paths(sys.stdin.read()) if item == "-" else [item])
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
    )

    def written(case) -> None:  # each mask path as soon as it is written, so pipelines stream
        if case.skipped:
            err(f"liverctl: note: {Path(case.input).name}: kept the earlier result ({case.mask})")
        for message in (case.report or {}).get("qc", {}).get("messages", []) if not case.skipped else []:
            err(f"liverctl: note: {Path(case.input).name}: {message}")
        if case.ok and not as_json:
            typer.echo(str(case.mask))
            sys.stdout.flush()

    with progress_bar() as progress:
        result = run_predict(
            items,
            output,
            model=model or None,
            weights=[str(w) for w in weights] if weights else None,
            arch=arch,
            options=options,
            series_uid=series,
            shard=parse_shard(shard) if shard else None,
            summary=summary,
            resume=resume,
            progress=progress,
            on_case=written,
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
