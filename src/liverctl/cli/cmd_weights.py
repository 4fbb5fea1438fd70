"""`liverctl weights list | download | verify | path | add`: the pretrained-weights registry."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from liverctl.cli._common import cli_command, err, progress_option, quiet_option, reporter, verbose_option
from liverctl.cli.app import _OneLineErrors, app

weights_app = typer.Typer(
    cls=_OneLineErrors,  # its switch checks (`--force true`); usage errors are caught by the top-level app
    name="weights",
    help="Pretrained weights: list the registry (weights.toml), download, verify sha256, print cached paths, "
    "add an nnU-Net v2 results folder from the Hub.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(weights_app, name="weights")


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


@weights_app.command("list", help="List the models of the registry, their pin and cache status.")
@cli_command
def list_(
    as_json: bool = typer.Option(False, "--json", help="Print every field as JSON."),
) -> None:
    from liverctl import weights

    rows = weights.list_weights()
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    table = [["NAME", "ARCH", "SPACING", "REPO", "FILE", "REVISION", "SHA256", "CACHED"]]
    for r in rows:
        e = r.entry
        nnunet = isinstance(e, weights.NnUNetEntry)
        table.append(
            [
                e.name + (" *" if r.default else ""),
                e.architecture,
                "plans" if nnunet else "x".join(f"{s:g}" for s in e.spacing),
                e.repo_id or "(local)",
                f"{e.folder}/ (folds {','.join(map(str, e.folds))})"
                if nnunet
                else str(e.local_path)
                if e.local
                else e.filename,
                e.revision[:12] if e.revision_is_commit else (e.revision or "-"),
                {"sha256": "pinned", "recorded": "tofu-recorded", "tofu": "tofu", "none": "unpinned"}[r.pin],
                "yes" if r.cached else "no",
            ]
        )
    typer.echo(_table(table))
    err("* = default model; tofu = no pin in weights.toml, the first download is trusted and recorded")


@weights_app.command("download", help="Download a model's weights into the Hugging Face cache and check sha256.")
@cli_command
def download(
    name: str | None = typer.Argument(
        None, metavar="NAME", help="Model name from `liverctl weights list` (default: the default model)."
    ),
    all_: bool = typer.Option(False, "--all", help="Download every model of the registry."),
    force: bool = typer.Option(False, "--force", help="Download again even if cached."),
    progress: bool | None = progress_option(),
    quiet: bool = quiet_option(),
    verbose: bool = verbose_option(),
) -> None:
    from liverctl import weights

    if all_ and name:
        from liverctl.errors import ConfigError

        raise ConfigError("give either a model NAME or --all, not both")
    names = weights.load_registry().names() if all_ else [name]
    with reporter(progress, quiet, verbose) as callback:
        for n in names:
            path = weights.download(n, force=force, progress=callback)
            typer.echo(str(path))


@weights_app.command("verify", help="Check cached weights against their sha256 (exit 1 on a mismatch).")
@cli_command
def verify(
    name: str | None = typer.Argument(None, metavar="NAME", help="Model name (default: every model of the registry)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    from liverctl import weights

    results = [weights.verify(name)] if name else weights.verify_all()
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        for r in results:
            line = f"{r.name}: {r.status}"
            if r.sha256:
                line += f" sha256={r.sha256}"
            if r.status == "mismatch":
                line += f" expected={r.expected} ({r.expected_from})"
            typer.echo(line)
    failed = [r for r in results if r.status == "mismatch" or (name and r.status == "not-cached")]
    for r in failed:
        what = "sha256 mismatch" if r.status == "mismatch" else "not downloaded"
        err(f"liverctl: error: weights '{r.name}': {what}; run `liverctl weights download {r.name} --force`")
    if failed:
        raise typer.Exit(1)


@weights_app.command("path", help="Print the path of a model's cached weights file (no network).")
@cli_command
def path(
    name: str | None = typer.Argument(None, metavar="NAME", help="Model name (default: the default model)."),
) -> None:
    from liverctl import weights

    found: Path = weights.weights_path(name)
    typer.echo(str(found))


def _fold_list(text: str | None) -> list[int | str] | None:
    from liverctl.errors import ConfigError

    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items or not all(t.isdigit() or t == "all" for t in items):
        raise ConfigError(f"--folds must be fold numbers separated by commas (or all), such as 0,1,2, not {text!r}")
    return [int(t) if t.isdigit() else t for t in items]


@weights_app.command("add", help="Pin an nnU-Net v2 results folder of a Hub repository as a weights.toml entry.")
@cli_command
def add(
    repo_id: str = typer.Argument(..., metavar="REPO", help="Hugging Face Hub repository (owner/name)."),
    revision: str = typer.Option(
        ..., "--revision", metavar="REV", help="Commit, branch or tag; the entry pins the commit it resolves to."
    ),
    folder: str = typer.Option(
        ..., "--folder", metavar="PATH", help="The <trainer>__<plans>__<configuration> folder inside the repository."
    ),
    folds: str | None = typer.Option(
        None, "--folds", metavar="0,1,...", help="Folds to use (default: every fold_N holding the checkpoint)."
    ),
    checkpoint: str = typer.Option("checkpoint_final.pth", "--checkpoint", metavar="FILE", help="Checkpoint name."),
    name: str | None = typer.Option(
        None, "--name", metavar="NAME", help="Entry name (default: <dataset>-<configuration>)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing entry of the same name."),
    registry: Path | None = typer.Option(
        None,
        "--registry",
        metavar="FILE",
        help="weights.toml to write (default: $LIVERCTL_WEIGHTS_TOML, else the one liverctl reads).",
    ),
    progress: bool | None = progress_option(),
    quiet: bool = quiet_option(),
    verbose: bool = verbose_option(),
) -> None:
    from liverctl import weights
    from liverctl.cli._common import note
    from liverctl.weights.add import add_nnunet

    fold_list = _fold_list(folds)
    target = registry or weights.registry_path()
    with reporter(progress, quiet, verbose) as callback:
        entry = add_nnunet(
            repo_id,
            revision,
            folder,
            folds=fold_list,
            checkpoint=checkpoint,
            name=name,
            force=force,
            registry=target,
            progress=callback,
        )
        note(
            f"added models.{entry.name} to {target}: {entry.repo_id} @ {entry.revision[:12]}, folds "
            f"{','.join(map(str, entry.folds))}, {len(entry.sha256)} files sha256-pinned; "
            f"use it with `liverctl predict --model {entry.name}`"
        )
    typer.echo(str(target))


@weights_app.command(
    "pack", help="Write models (files, registry entries, sha256 pins) into one archive for an offline machine."
)
@cli_command
def pack(
    names: list[str] = typer.Argument(..., metavar="NAME...", help="Models to pack (see `liverctl weights list`)."),
    output: Path = typer.Option(..., "-o", "--output", metavar="FILE", help="The archive to write (a .zip)."),
    progress: bool | None = progress_option(),
    quiet: bool = quiet_option(),
    verbose: bool = verbose_option(),
) -> None:
    from liverctl.weights.archive import pack as pack_models

    with reporter(progress, quiet, verbose) as callback:
        written = pack_models(names, output, progress=callback)
    typer.echo(str(written))


@weights_app.command(
    "import",
    help="Register models on this machine (no network): a `weights pack` archive, an nnU-Net export zip or "
    "results folder, or a weights file with its recipe. Stored under $LIVERCTL_HOME/weights.",
)
@cli_command
def import_(
    source: Path = typer.Argument(
        ...,
        metavar="FILE|DIR",
        help="Archive (.zip or unpacked folder), nnU-Net export zip or results folder, or a weights file.",
    ),
    name: str | None = typer.Option(None, "--name", metavar="NAME", help="Register the (one) model under this name."),
    recipe: Path | None = typer.Option(
        None,
        "--recipe",
        metavar="FILE",
        help="For a weights file: the weights.toml whose default entry describes it "
        "(default: <file>.toml or weights.toml beside it).",
    ),
) -> None:
    from liverctl.cli._common import note
    from liverctl.weights.importing import import_weights

    for entry in import_weights(source, name=name, recipe=recipe):
        note(f"imported '{entry.name}'; use it with `liverctl predict --model {entry.name}`")
        typer.echo(entry.name)


@weights_app.command(
    "export",
    help="Write a registry model's network as ONNX or OpenVINO IR, with its window, intensity recipe and labels "
    "in a JSON beside it (checked against torch on one window first).",
)
@cli_command
def export(
    name: str = typer.Argument(..., metavar="NAME", help="Registry name (see `liverctl weights list`)."),
    fmt: str = typer.Option("onnx", "--format", metavar="onnx|openvino", help="File format to write."),
    output: Path = typer.Option(..., "-o", "--output", metavar="DIR", help="Folder to write into."),
    progress: bool | None = progress_option(),
    quiet: bool = quiet_option(),
    verbose: bool = verbose_option(),
) -> None:
    from liverctl.weights.export import export_weights

    with reporter(progress, quiet, verbose) as callback:
        written = export_weights(name, fmt, output, progress=callback)
    for info in written:
        for file in info["files"]:
            typer.echo(str(output / file))
        typer.echo(str(output / f"{Path(info['files'][0]).stem}.json"))
