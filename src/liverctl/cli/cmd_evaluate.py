"""`liverctl evaluate`: segmentation metrics of predictions against references."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import typer

from liverctl.cli._common import cli_command, progress_option, quiet_option, reporter, verbose_option
from liverctl.cli.app import app

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
_LESION_HEADERS = {
    "lesions_ref": "Ref lesions",
    "lesions_pred": "Pred lesions",
    "lesions_tp": "TP",
    "lesions_fp": "FP",
    "lesions_fn": "FN",
    "lesion_recall": "Recall",
    "lesion_precision": "Precision",
    "lesion_f1": "F1",
    "burden_ref": "Burden ref",
    "burden_pred": "Burden pred",
    "burden_abs_diff": "|Δ burden|",
}
_DECIMALS = {"assd": 2, "rmsd": 2, "hd": 2, "hd95": 2, "pred_ml": 1, "ref_ml": 1}
_COUNTS = {"lesions_ref", "lesions_pred", "lesions_tp", "lesions_fp", "lesions_fn"}


def _header(metric: str) -> str:
    if metric.startswith("nsd_"):
        return f"NSD {metric[4:-2]} mm"
    return _HEADERS.get(metric) or _LESION_HEADERS.get(metric, metric)


def _num(metric: str, value: Any) -> str:
    if value is None:
        return "n/a"
    value = float(value)
    if value != value:  # NaN
        return "n/a"
    if metric == "p":
        return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"
    if metric in _COUNTS:
        return f"{value:.0f}"
    return f"{value:.{_DECIMALS.get(metric, 4)}f}"


def _surface_metrics(result: Any, region: str) -> list[str]:
    """The columns of the main tables: the standard metrics and the NSD ones."""
    return [m for m in result.metric_names(region) if m not in _LESION_HEADERS]


def _tables(result: Any, style: Any) -> list[Any]:
    """Per case and summary tables, one pair per set of metric columns (regions share them)."""
    from rich.table import Table

    out = []
    names = _surface_metrics(result, result.region_names[0]) if result.region_names else []

    def table(title: str, first: list[str]) -> Table:
        t = Table(title=title, box=style, title_justify="left", pad_edge=True)
        for name in first:
            t.add_column(name, no_wrap=True)
        for name in names:
            t.add_column(_header(name), justify="right", no_wrap=True)
        return t

    labels = {r.name: r.labels_text for r in result.regions}
    cases = table(f"Per case ({len(result.cases)} case(s))", ["case", "region", "labels"])
    for row in result.rows:
        note = f" ({row.metrics.empty} empty)" if row.metrics.empty else ""
        values = row.values()
        cases.add_row(row.case + note, row.region, labels.get(row.region, ""), *(_num(m, values[m]) for m in names))
    out.append(cases)

    summary = result.summary()
    summ = table("Summary (std = sample standard deviation)", ["region", "labels", "statistic"])
    for region in result.region_names:
        stats, lab = summary[region], labels.get(region, "")
        n = int(stats["n"]["dice"])
        std = {m: "n/a" if n < 2 else _num(m, stats["std"][m]) for m in names}  # no sample std of one case
        summ.add_row(
            region,
            lab,
            f"mean ± std (n={n})",
            *(f"{_num(m, stats['mean'][m])} ± {std[m]}" for m in names),
        )
        for stat in ("median", "min", "max"):
            summ.add_row(region, lab, stat, *(_num(m, stats[stat][m]) for m in names))
        summ.add_row(region, lab, "dice global", _num("dice", result.dice_global(region)), *([""] * (len(names) - 1)))
    out.append(summ)
    return out


def _lesion_tables(result: Any, style: Any) -> list[Any]:
    """Per case lesion detection and tumour burden, with the pooled row, per lesion region."""
    from rich.table import Table

    out = []
    for region in result.region_names:
        pooled = result.lesion_summary(region)
        if pooled is None:
            continue
        names = [m for m in result.metric_names(region) if m in _LESION_HEADERS]
        t = Table(title=f"Lesion detection: {region}", box=style, title_justify="left", pad_edge=True)
        t.add_column("case", no_wrap=True)
        for name in [*names, "lesion Dice mean"]:
            t.add_column(_header(name), justify="right", no_wrap=True)
        for row in (r for r in result.rows if r.region == region):
            dice = [les.dice for les in result.lesion_rows if les.case == row.case and les.region == region]
            mean = sum(dice) / len(dice) if dice else None
            t.add_row(row.case, *(_num(m, row.extra[m]) for m in names), _num("dice", mean))
        burden = {"burden_abs_diff": pooled.get("burden_mae")}
        t.add_row(
            "pooled (burden: mean)",
            *(_num(m, pooled.get(m, burden.get(m))) if m in pooled or m in burden else "" for m in names),
            _num("dice", pooled["lesion_dice_mean"]),
        )
        out.append(t)
    return out


def _render(result: Any) -> None:
    """Tables on stdout: per case, summary per region, lesions, comparison; plain text in a pipe."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, markup=False)  # case names like scan[b] are text, not markup
    terminal = console.is_terminal
    if not terminal:  # a pipe or a file: plain text, no wrapping, no trailing blanks
        console = Console(highlight=False, markup=False, width=1000, no_color=True, file=io.StringIO())
    style = box.SIMPLE_HEAVY if terminal else box.MARKDOWN
    conv = result.conventions()
    for t in _tables(result, style) + _lesion_tables(result, style):
        console.print(t)

    if result.comparison:
        comp = Table(
            title=f"Paired comparison: {result.method} vs {result.other}",
            box=style,
            title_justify="left",
            pad_edge=True,
        )
        for name in ("region", "metric", "n", "mean method", "mean other", "diff", "t-test p", "Wilcoxon p", "better"):
            comp.add_column(name, justify="left" if name in ("region", "metric", "better") else "right", no_wrap=True)
        for c in result.comparison:
            comp.add_row(
                c.region,
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

    for region in result.region_names:
        empty = result.empty_counts(region)
        if any(empty.values()):
            console.print(
                f"region {region}: empty prediction in {empty['pred']}, empty reference in {empty['ref']}, "
                f"both empty in {empty['both']} case(s); " + conv["empty"]
            )
    for item in result.missing:
        console.print(f"missing: {item}")
    console.print(f"surface {conv['surface']}; HD95 {conv['hd95']}; RVD {conv['rvd']}")
    for key in ("nsd", "lesions"):
        if key in conv:
            console.print(f"{key}: {conv[key]}")
    if not terminal:
        text = console.file.getvalue()  # type: ignore[attr-defined]
        typer.echo("\n".join(line.rstrip() for line in text.splitlines()))


def _check_outputs(outputs: tuple[str | None, ...], inputs: list[Any]) -> None:
    """``--csv`` / ``--json-file`` files, before any work: not a folder, not an input, writable
    (``liver.nii.gz/x.json``: its folder is a file)."""
    from liverctl.errors import ConfigError
    from liverctl.io import check_not_input, check_writable

    for out in outputs:
        if out not in (None, "-"):
            if Path(out).is_dir():
                raise ConfigError(f"output {out} is a folder; give a file name")
            check_not_input(out, inputs)
            check_writable(out)


@app.command(
    "evaluate",
    help=(
        "Compare predicted masks with reference masks: Dice, Jaccard, VOE, RVD, ASSD, RMSD, HD, HD95, "
        "sensitivity, specificity, precision, accuracy and volumes (mL), per label or per region (a named union "
        "of labels, e.g. --preset lits: liver = 1+2, tumour = 2), with the normalised surface Dice (--nsd) and, "
        "for a tumour region, lesion detection and tumour burden. PRED and REF are two files or two folders "
        "(paired by file name). Prints tables; --json prints the full result as JSON instead, --json-file / --csv "
        "write it to files ('-' for stdout). "
        "Surface distances follow MedPy unless --surface / --hd95 say otherwise."
    ),
)
# Long by its signature: the Typer options with their help texts (issue 9); the body parses and
# calls liverctl.evaluation.evaluate.
@cli_command
def evaluate(
    pred: Path = typer.Argument(..., metavar="PRED", help="Predicted mask/label map file, or a folder of them."),
    ref: Path = typer.Argument(..., metavar="REF", help="Reference mask/label map file, or a folder of them."),
    labels: str | None = typer.Option(
        None,
        "--labels",
        metavar="L,L",
        help="Comma-separated labels to evaluate one by one, e.g. '1,2' (default: every label present).",
    ),
    regions: str | None = typer.Option(
        None,
        "--regions",
        metavar="NAME=L+L,...",
        help="Named unions of labels, each scored as one mask, e.g. 'liver=1+2,tumour=2' (or a preset name).",
    ),
    preset: str | None = typer.Option(
        None,
        "--preset",
        metavar="NAME",
        help="Region preset: 'lits' / 'msd-liver' (liver=1+2, tumour=2) or 'totalseg' (liver=5).",
    ),
    pred_regions: str | None = typer.Option(
        None,
        "--pred-regions",
        metavar="NAME=L+L,...",
        help="Labels of regions in the prediction where they differ, e.g. 'liver=5' for a TotalSegmentator map.",
    ),
    ref_regions: str | None = typer.Option(
        None,
        "--ref-regions",
        metavar="NAME=L+L,...",
        help="Labels of regions in the reference where they differ, e.g. 'liver=1+2'.",
    ),
    nsd: str | None = typer.Option(
        None,
        "--nsd",
        metavar="MM,MM",
        help="Normalised surface Dice at these tolerances in mm, e.g. '1,2' (DeepMind's definition).",
    ),
    lesions: str | None = typer.Option(
        None,
        "--lesions",
        metavar="REGION,...",
        help="Regions scored with lesion detection and tumour burden (default: regions named tumour/tumor/lesion; "
        "'none' for none).",
    ),
    lesion_connectivity: int = typer.Option(
        26, "--lesion-connectivity", metavar="6|18|26", help="Lesion components: 6, 18 or 26-connected."
    ),
    lesion_dice: float = typer.Option(
        0.2,
        "--lesion-dice",
        metavar="DICE",
        help="A reference lesion is detected when its overlapping predicted components reach Dice > this.",
    ),
    surface: str = typer.Option(
        "medpy",
        "--surface",
        metavar="medpy|lits",
        help="Surface convention: 'medpy' (6-connected border) or 'lits' (18-connected).",
    ),
    hd95: str = typer.Option(
        "pooled",
        "--hd95",
        metavar="pooled|directed-max",
        help="HD95 convention: 'pooled' (MedPy: 95th percentile of both directions pooled) or "
        "'directed-max' (MONAI: max of the two directed 95th percentiles).",
    ),
    csv_out: str | None = typer.Option(
        None, "--csv", metavar="FILE", help="Write per-case and summary rows as CSV to FILE ('-': stdout)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON on stdout instead of tables."),
    json_out: str | None = typer.Option(
        None, "--json-file", metavar="FILE", help="Write the full result as JSON to FILE ('-': stdout)."
    ),
    compare: Path | None = typer.Option(
        None,
        "--compare",
        metavar="PATH",
        help="A second method's predictions (file/folder): paired t-test and Wilcoxon per metric.",
    ),
    allow_missing: bool = typer.Option(
        False, "--allow-missing", help="Evaluate the complete pairs when some cases lack a partner (listed)."
    ),
    resample_pred: bool = typer.Option(
        False,
        "--resample-pred",
        help="Resample predictions onto the reference grid (nearest neighbour) if they differ.",
    ),
    workers: int = typer.Option(1, "--workers", "-j", metavar="N", help="Cases evaluated in parallel."),
    progress: bool | None = progress_option(),
    quiet: bool = quiet_option(),
    verbose: bool = verbose_option(),
) -> None:
    from liverctl.errors import ConfigError
    from liverctl.evaluation import EvaluateOptions
    from liverctl.evaluation import evaluate as run_evaluate

    if as_json:
        if json_out not in (None, "-"):
            raise ConfigError("give --json (JSON on stdout) or --json-file FILE, not both")
        json_out = "-"
    if csv_out == "-" and json_out == "-":
        raise ConfigError("only one of --csv and --json can write to stdout ('-')")
    if preset is not None and regions is not None:
        raise ConfigError("give --preset or --regions, not both (--regions accepts a preset name too)")
    if preset is not None and "=" in preset:
        raise ConfigError(f"--preset takes a preset name (lits, msd-liver, totalseg); for {preset!r} use --regions")
    _check_outputs((csv_out, json_out), [pred, ref] + ([compare] if compare is not None else []))

    with reporter(progress, quiet, verbose) as callback:
        result = run_evaluate(
            pred,
            ref,
            EvaluateOptions(
                labels=labels,
                regions=preset if preset is not None else regions,
                pred_regions=pred_regions,
                ref_regions=ref_regions,
                lesions=lesions,
                nsd=nsd,
                surface=surface,
                hd95=hd95,
                lesion_connectivity=lesion_connectivity,
                lesion_min_dice=lesion_dice,
                resample_pred=resample_pred,
            ),
            allow_missing=allow_missing,
            compare=compare,
            workers=workers,
            progress=callback,
        )

    texts = _write_outputs(result, csv_out, json_out)
    if "-" in texts:
        typer.echo(texts["-"], nl=False)
    else:
        _render(result)


def _write_outputs(result: Any, csv_out: str | None, json_out: str | None) -> dict[str, str]:
    """Write the CSV and JSON files asked for, both together or neither (each to a temporary file
    first); returns every text by destination, ``"-"`` for stdout."""
    from liverctl.io import atomic_path

    texts = {}
    if csv_out is not None:
        texts[csv_out] = result.to_csv()
    if json_out is not None:
        texts[json_out] = result.to_json()
    files = {k: v for k, v in texts.items() if k != "-"}
    if len(files) == 2:
        (p1, t1), (p2, t2) = files.items()
        with atomic_path(p1) as tmp1, atomic_path(p2) as tmp2:
            tmp1.write_text(t1, encoding="utf-8")
            tmp2.write_text(t2, encoding="utf-8")
    elif files:
        ((p1, t1),) = files.items()
        with atomic_path(p1) as tmp1:
            tmp1.write_text(t1, encoding="utf-8")
    return texts
