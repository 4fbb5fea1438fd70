"""`liverctl demo`: every step of liverctl on synthetic phantoms, offline, in minutes on a CPU."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from liverctl.cli._common import cli_command, progress_option, quiet_option, reporter, verbose_option
from liverctl.cli.app import app


@app.command("demo")
@cli_command
def demo(
    output: Path = typer.Option(
        Path("liverctl-demo"), "-o", "--output", metavar="DIR", help="Output folder (new, empty or an earlier demo)."
    ),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Phantom and training seed."),
    quick: bool = typer.Option(False, "--quick", help="Smoke test: few phantoms and iterations (low Dice)."),
    device: str = typer.Option("cpu", "--device", metavar="DEVICE", help="cpu (the measured setting), auto, cuda..."),
    threads: int = typer.Option(1, "--threads", metavar="N", help="CPU threads for torch (1: the measured setting)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON instead of a table."),
    progress: bool | None = progress_option(),
    quiet: bool = quiet_option(),
    verbose: bool = verbose_option(),
) -> None:
    """Make phantoms, preprocess, train a small 3D U-Net, predict held-out phantoms,
    post-process, evaluate: print the held-out metrics and write an overlay PNG.

    Needs no network and no data. The real job is `liverctl predict scan.nii.gz`; the demo
    shows every step working.
    """
    from liverctl.demo import demo as run_demo

    with reporter(progress, quiet, verbose) as callback:
        result = run_demo(output, seed=seed, quick=quick, device=device, threads=threads, progress=callback)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    header = f"{'case':<24}{'Dice':>8}{'Dice raw':>10}{'Jaccard':>9}{'ASSD mm':>9}{'HD95 mm':>9}{'RVD':>8}{'Pred mL':>9}{'Ref mL':>9}"
    typer.echo("held-out liver metrics (post-processed prediction vs reference):")
    typer.echo(header)
    for r in result.rows:
        typer.echo(
            f"{r['case']:<24}{r['dice']:>8.4f}{r['dice_raw']:>10.4f}{r['jaccard']:>9.4f}{r['assd']:>9.2f}"
            f"{r['hd95']:>9.2f}{r['rvd']:>8.3f}{r['pred_ml']:>9.1f}{r['ref_ml']:>9.1f}"
        )
    typer.echo(f"{'mean':<24}{result.mean_dice:>8.4f}")
    t = result.timings
    steps = ", ".join(f"{k} {v['wall']:.0f}s" for k, v in t.items() if k != "total")
    typer.echo(f"time: {t['total']['wall']:.0f} s wall, {t['total']['cpu']:.0f} s CPU ({steps})")
    typer.echo(f"overlay: {result.overlay}")
    typer.echo(f"model: {result.model} (try: liverctl predict SCAN --weights {result.model})")
