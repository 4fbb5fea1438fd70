"""`liverctl evaluate`: segmentation metrics of predictions against references."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import typer

from liverctl.cli import app
from liverctl.cli._common import cli_command, progress_bar

_HEADERS = {
    "dice": "Dice",
    "jaccard": "Jaccard",
    "voe": "VOE",
    "rvd": "RVD",
    "assd": "ASSD mm",
    "rmsd": "RMSD mm",
    "hd": "HD mm",
    "hd95": "HD95 mm",
    "sensitivity": "Sens",
    "specificity": "Spec",
    "precision": "Prec",
    "accuracy": "Acc",
    "pred_ml": "Pred mL",
    "ref_ml": "Ref mL",
}
_DECIMALS = {"assd": 2, "rmsd": 2, "hd": 2, "hd95": 2, "pred_ml": 1, "ref_ml": 1}


def _num(metric: str, value: Any) -> str:
    if value is None:
        return "n/a"
    value = float(value)
    if value != value:  # NaN
        return "n/a"
    if metric == "p":
        return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"
    return f"{value:.{_DECIMALS.get(metric, 4)}f}"


def _render(result: Any) -> None:
    """Tables on stdout: per case, summary per label, comparison; plain text in a pipe."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from liverctl.metrics import METRIC_NAMES

    console = Console(highlight=False)
    terminal = console.is_terminal
    if not terminal:  # a pipe or a file: plain text, no wrapping, no trailing blanks
        console = Console(highlight=False, width=1000, no_color=True, file=io.StringIO())
    style = box.SIMPLE_HEAVY if terminal else box.MARKDOWN
    conv = result.conventions()

    def table(title: str, first: list[str]) -> Table:
        t = Table(title=title, box=style, title_justify="left", pad_edge=True)
        for name in first:
            t.add_column(name, no_wrap=True)
        for name in METRIC_NAMES:
            t.add_column(_HEADERS[name], justify="right", no_wrap=True)
        return t

    cases = table(f"Per case ({len(result.cases)} case(s))", ["case", "label"])
    for row in result.rows:
        note = f" ({row.metrics.empty} empty)" if row.metrics.empty else ""
        values = row.metrics.values()
        cases.add_row(row.case + note, str(row.label), *(_num(m, values[m]) for m in METRIC_NAMES))
    console.print(cases)

    summary = result.summary()
    summ = table("Summary (std = sample standard deviation)", ["label", "statistic"])
    for label in result.labels:
        stats = summary[label]
        summ.add_row(
            str(label),
            f"mean ± std (n={int(stats['n']['dice'])})",
            *(f"{_num(m, stats['mean'][m])} ± {_num(m, stats['std'][m])}" for m in METRIC_NAMES),
        )
        for stat in ("median", "min", "max"):
            summ.add_row(str(label), stat, *(_num(m, stats[stat][m]) for m in METRIC_NAMES))
        summ.add_row(str(label), "dice global", _num("dice", result.dice_global(label)), *([""] * 13))
    console.print(summ)

    if result.comparison:
        comp = Table(
            title=f"Paired comparison: {result.method} vs {result.other}",
            box=style,
            title_justify="left",
            pad_edge=True,
        )
        for name in ("label", "metric", "n", "mean method", "mean other", "diff", "t-test p", "Wilcoxon p", "better"):
            comp.add_column(name, justify="left" if name in ("metric", "better") else "right", no_wrap=True)
        for c in result.comparison:
            comp.add_row(
                str(c.label),
                c.metric,
                str(c.n),
                _num(c.metric, c.mean_method),
                _num(c.metric, c.mean_other),
                _num(c.metric, c.mean_diff),
                _num("p", c.t_pvalue),
                _num("p", c.wilcoxon_pvalue),
                c.better,
            )
        console.print(comp)

    for label in result.labels:
        empty = result.empty_counts(label)
        if any(empty.values()):
            console.print(
                f"label {label}: empty prediction in {empty['pred']}, empty reference in {empty['ref']}, "
                f"both empty in {empty['both']} case(s); " + conv["empty"]
            )
    for item in result.missing:
        console.print(f"missing: {item}")
    console.print(f"surface {conv['surface']}; HD95 {conv['hd95']}; RVD {conv['rvd']}")
    if not terminal:
        text = console.file.getvalue()  # type: ignore[attr-defined]
        typer.echo("\n".join(line.rstrip() for line in text.splitlines()))


@app.command(
    "evaluate",
    help=(
        "Compare predicted masks with reference masks: Dice, Jaccard, VOE, RVD, ASSD, RMSD, HD, HD95, "
        "sensitivity, specificity, precision, accuracy and volumes (mL), per label. PRED and REF are two files "
        "or two folders (paired by file name). Prints tables; --csv / --json write machine-readable results "
        "('-' for stdout). Surface distances follow MedPy unless --surface / --hd95 say otherwise."
    ),
)
@cli_command
def evaluate(
    pred: Path = typer.Argument(..., help="Predicted mask/label map file, or a folder of them."),
    ref: Path = typer.Argument(..., help="Reference mask/label map file, or a folder of them."),
    labels: str | None = typer.Option(
        None, "--labels", help="Comma-separated labels to evaluate, e.g. '1,2' (default: every label present)."
    ),
    surface: str = typer.Option(
        "medpy", "--surface", help="Surface convention: 'medpy' (6-connected border) or 'lits' (18-connected)."
    ),
    hd95: str = typer.Option(
        "pooled",
        "--hd95",
        help="HD95 convention: 'pooled' (MedPy: 95th percentile of both directions pooled) or "
        "'directed-max' (MONAI: max of the two directed 95th percentiles).",
    ),
    csv_out: str | None = typer.Option(
        None, "--csv", help="Write per-case and summary rows as CSV to FILE ('-': stdout)."
    ),
    json_out: str | None = typer.Option(None, "--json", help="Write the full result as JSON to FILE ('-': stdout)."),
    compare: Path | None = typer.Option(
        None, "--compare", help="A second method's predictions (file/folder): paired t-test and Wilcoxon per metric."
    ),
    allow_missing: bool = typer.Option(
        False, "--allow-missing", help="Evaluate the complete pairs when some cases lack a partner (listed)."
    ),
    resample_pred: bool = typer.Option(
        False,
        "--resample-pred",
        help="Resample predictions onto the reference grid (nearest neighbour) if they differ.",
    ),
    workers: int = typer.Option(1, "--workers", "-j", help="Cases evaluated in parallel."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar on stderr."),
) -> None:
    from liverctl.errors import ConfigError
    from liverctl.evaluation import evaluate as run_evaluate
    from liverctl.io import atomic_path, check_not_input

    if csv_out == "-" and json_out == "-":
        raise ConfigError("only one of --csv and --json can write to stdout ('-')")
    inputs = [pred, ref] + ([compare] if compare is not None else [])
    for out in (csv_out, json_out):
        if out not in (None, "-"):
            if Path(out).is_dir():
                raise ConfigError(f"output {out} is a folder; give a file name")
            check_not_input(out, inputs)

    with progress_bar(not no_progress) as progress:
        result = run_evaluate(
            pred,
            ref,
            labels=labels,
            surface=surface,
            hd95=hd95,
            allow_missing=allow_missing,
            resample_pred=resample_pred,
            compare=compare,
            workers=workers,
            progress=progress,
        )

    texts = {}
    if csv_out is not None:
        texts[csv_out] = result.to_csv()
    if json_out is not None:
        texts[json_out] = result.to_json()
    files = {k: v for k, v in texts.items() if k != "-"}
    # Both files appear together or not at all: each goes to a temporary file first.
    if len(files) == 2:
        (p1, t1), (p2, t2) = files.items()
        with atomic_path(p1) as tmp1, atomic_path(p2) as tmp2:
            tmp1.write_text(t1, encoding="utf-8")
            tmp2.write_text(t2, encoding="utf-8")
    elif files:
        ((p1, t1),) = files.items()
        with atomic_path(p1) as tmp1:
            tmp1.write_text(t1, encoding="utf-8")
    if "-" in texts:
        typer.echo(texts["-"], nl=False)
    else:
        _render(result)
