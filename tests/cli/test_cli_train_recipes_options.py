"""`liverctl train` options of issue 11 (DI2IN-AN defaults, --dropout, --tumour-class/--whole-liver):
the TrainConfig the command hands to the library, and bad values refused in one line."""

from __future__ import annotations

import pytest

from liverctl.errors import ConfigError


class _Stop(Exception):
    pass


def _config_of(args: list[str], tmp_path, monkeypatch):
    """The TrainConfig `liverctl train ARGS` passes to liverctl.training.train (not run)."""
    from typer.testing import CliRunner

    import liverctl.training
    from liverctl.cli import app

    seen = {}

    def fake_train(datasets, output, config, **kwargs):
        seen["config"] = config
        raise _Stop

    monkeypatch.setenv("LIVERCTL_NO_PROGRESS", "1")
    monkeypatch.setattr(liverctl.training, "train", fake_train)
    result = CliRunner().invoke(app, ["train", str(tmp_path / "prep"), "-o", str(tmp_path / "run"), *args])
    assert "config" in seen, result.output  # (the command then reports _Stop as an internal error)
    return seen["config"]


def test_di2in_an_gets_the_papers_settings_unless_set(tmp_path, monkeypatch):
    paper = _config_of(["--method", "di2in-an"], tmp_path, monkeypatch)
    assert (paper.optimizer, paper.lr, paper.batch_size, paper.epochs) == ("sgd", 0.01, 4, 300)
    assert (paper.pretrain_iterations, paper.lr_step) == (50000, 25000)  # 200 and 100 passes of 250 x 4 volumes
    assert (paper.augment, paper.foreground_fraction, paper.patch_size) == (False, 0.0, (128, 128, 128))
    mine = ["--method", "di2in-an", "--optimizer", "adam", "--batch-size", "2", "--pretrain-iterations", "0"]
    own = _config_of([*mine, "--lr-step", "50", "--augment", "--foreground-fraction", "0.5"], tmp_path, monkeypatch)
    assert (own.optimizer, own.lr, own.batch_size, own.pretrain_iterations, own.lr_step) == ("adam", 3e-4, 2, 0, 50)
    assert (own.augment, own.foreground_fraction) == (True, 0.5)
    he = _config_of([], tmp_path, monkeypatch)
    # he2021 trains the whole liver (tumour merged), as the paper; the staged recipe keeps the tumour
    assert (he.batch_size, he.optimizer, he.pretrain_iterations, he.tumour_class) == (2, None, 0, False)
    assert (he.epochs, he.patch_size, he.augment, he.foreground_fraction) == (400, (128, 128, 128), True, 1 / 3)
    assert _config_of(["--tumour-class"], tmp_path, monkeypatch).tumour_class is True
    hd = _config_of(["--method", "hdenseunet"], tmp_path, monkeypatch)
    assert (hd.tumour_class, hd.patch_size, hd.arch_kwargs) == (True, (12, 224, 224), {"preset": "paper"})
    small = _config_of(["--method", "hdenseunet", "--arch-kwargs", '{"preset": "small"}'], tmp_path, monkeypatch)
    assert small.arch_kwargs == {"preset": "small"}
    pf = _config_of(["--method", "pipofan"], tmp_path, monkeypatch)
    assert (pf.tumour_class, pf.patch_size, pf.foreground_fraction, pf.optimizer) == (
        False, (1, 224, 224), 1.0, "rmsprop"
    )  # fmt: skip
    assert _config_of(["--method", "pipofan", "--patch", "64,64,2"], tmp_path, monkeypatch).patch_size == (2, 64, 64)


def test_dropout_and_whole_liver_options(tmp_path, monkeypatch):
    config = _config_of(["--dropout", "paper", "--whole-liver"], tmp_path, monkeypatch)
    assert config.arch_kwargs == {"dropout": 0.5} and config.tumour_class is False
    assert _config_of(["--dropout", "none"], tmp_path, monkeypatch).arch_kwargs == {"dropout": 0.0}
    assert _config_of(["--dropout", "0.2", "--tumour-class"], tmp_path, monkeypatch).arch_kwargs == {"dropout": 0.2}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dropout", "half"], "--dropout must be paper, none or a rate in [0, 1), got 'half'"),
        (["--dropout", "1"], "--dropout must be paper, none or a rate in [0, 1)"),
        (["--method", "pipofan", "--dropout", "paper"], "--dropout: the pipofan network (--method pipofan)"),
        (["--method", "di2in-an", "--optimizer", "rmsprop"], "--optimizer rmsprop is PIPO-FAN's"),
    ],
)
def test_bad_values_are_one_line_before_any_data_is_read(args, message, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from liverctl.cli import app

    monkeypatch.setenv("LIVERCTL_NO_PROGRESS", "1")
    result = CliRunner().invoke(app, ["train", str(tmp_path / "missing"), "-o", str(tmp_path / "run"), *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_parse_dropout_known_answers():
    from liverctl.training.config import PAPER_DROPOUT, parse_dropout

    assert [parse_dropout(v) for v in ("paper", "PAPER", "none", "0", "0.25", None)] == [
        PAPER_DROPOUT,
        PAPER_DROPOUT,
        0.0,
        0.0,
        0.25,
        None,
    ]
    for bad in ("-0.1", "nan", "x"):
        with pytest.raises(ConfigError):
            parse_dropout(bad)
