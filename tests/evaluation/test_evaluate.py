"""liverctl.evaluation: pairing, labels, summaries, comparison, geometry checks, CSV/JSON."""

from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from liverctl import metrics as M
from liverctl.errors import ConfigError, DatasetError, GeometryError, InputError, LiverctlWarning
from liverctl.evaluation import (
    EvaluateOptions,
    evaluate,
    evaluate_images,
    pair_cases,
    parse_labels,
    resample_to,
    summarize,
)
from liverctl.io import Geometry, Image, read_label, write_mask

GEO = Geometry((0.8, 0.9, 2.5), (5.0, -3.0, 12.0))


def _cube(shape=(10, 20, 20), lo=(2, 4, 4), hi=(8, 14, 15), label=1) -> np.ndarray:
    a = np.zeros(shape, np.uint8)
    a[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = label
    return a


def _file_spacing(folder: Path) -> tuple[float, float, float]:
    """The spacing as read back from a NIfTI file (float32 in the header)."""
    return read_label(folder / "case_01.nii.gz").spacing_zyx


def _dataset(tmp_path: Path) -> tuple[Path, Path, Path, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Three cases: reference, method A (shifted), method B (shrunk), labels 1 (liver) and 2 (tumour)."""
    ref_dir, a_dir, b_dir = tmp_path / "ref", tmp_path / "a", tmp_path / "b"
    cases = {}
    for i, name in enumerate(["case_01", "case_02", "case_03"]):
        ref = _cube(hi=(8, 14 + i, 15))
        ref[4:6, 6:8, 6:8] = 2 if i != 1 else 1  # case_02 has no tumour
        a = np.roll(ref, i + 1, axis=2)
        b = ref.copy()
        b[:, :, 4 + i] = 0
        cases[name] = (ref, a, b)
        write_mask(ref, GEO, ref_dir / f"{name}.nii.gz")
        write_mask(a, GEO, a_dir / f"{name}.nii.gz")
        write_mask(b, GEO, b_dir / f"{name}.mha")  # pairing ignores the format
    return ref_dir, a_dir, b_dir, cases


@pytest.mark.filterwarnings("ignore:the maps hold labels 1 and 2")
def test_folders_per_case_and_label(tmp_path: Path) -> None:
    ref_dir, a_dir, _, cases = _dataset(tmp_path)
    result = evaluate(a_dir, ref_dir)
    assert result.cases == ["case_01", "case_02", "case_03"] and result.labels == [1, 2]
    assert len(result.rows) == 6  # label 2 also for case_02, where both maps lack it
    for row in result.rows:
        ref, a, _ = cases[row.case]
        assert row.metrics == M.compute_metrics(a == row.label, ref == row.label, _file_spacing(ref_dir))
    case2_tumour = next(r for r in result.rows if r.case == "case_02" and r.label == 2)
    assert case2_tumour.metrics.empty == "both" and case2_tumour.metrics.dice == 1.0
    # summary: mean / sample std / median / min / max over the three cases
    summary = result.summary()
    dice1 = result.values("dice", 1)
    assert summary[1]["mean"]["dice"] == pytest.approx(dice1.mean())
    assert summary[1]["std"]["dice"] == pytest.approx(dice1.std(ddof=1))
    assert summary[1]["median"]["dice"] == pytest.approx(np.median(dice1))
    assert summary[1]["n"]["dice"] == 3
    # global Dice by hand
    tp = sum(int(((a == 1) & (ref == 1)).sum()) for ref, a, _ in cases.values())
    vol = sum(int((a == 1).sum() + (ref == 1).sum()) for ref, a, _ in cases.values())
    assert result.dice_global(1) == pytest.approx(2 * tp / vol)
    assert result.empty_counts(2) == {"pred": 0, "ref": 0, "both": 1}


def test_explicit_labels_and_conventions(tmp_path: Path) -> None:
    ref_dir, a_dir, _, cases = _dataset(tmp_path)
    result = evaluate(a_dir, ref_dir, EvaluateOptions(labels="2", surface="lits", hd95="directed-max"), workers=2)
    assert result.labels == [2] and len(result.rows) == 3
    ref, a, _ = cases["case_01"]
    expected = M.compute_metrics(a == 2, ref == 2, _file_spacing(ref_dir), surface="lits", hd95="directed-max")
    assert result.rows[0].metrics == expected
    assert "18-connected" in result.conventions()["surface"]
    with pytest.raises(ConfigError):
        evaluate(a_dir, ref_dir, EvaluateOptions(surface="cube"))
    with pytest.raises(ConfigError):
        evaluate(a_dir, ref_dir, EvaluateOptions(labels="1,x"))
    with pytest.raises(ConfigError):
        evaluate(a_dir, ref_dir, workers=0)
    assert parse_labels("1, 2,2") == [1, 2] and parse_labels(None) is None
    with pytest.raises(ConfigError):
        parse_labels("0")


@pytest.mark.filterwarnings("ignore:the maps hold labels 1 and 2")
def test_missing_partner_is_an_error_unless_allowed(tmp_path: Path) -> None:
    ref_dir, a_dir, _, _ = _dataset(tmp_path)
    (a_dir / "case_02.nii.gz").unlink()
    write_mask(_cube(), GEO, a_dir / "extra.nii.gz")
    pairs, missing = pair_cases(a_dir, ref_dir)
    assert [p.case for p in pairs] == ["case_01", "case_03"]
    assert missing == ["case_02: no prediction", "extra: no reference"]
    with pytest.raises(DatasetError, match="case_02: no prediction"):
        evaluate(a_dir, ref_dir)
    with pytest.warns(LiverctlWarning, match="2 case"):
        result = evaluate(a_dir, ref_dir, allow_missing=True)
    assert result.cases == ["case_01", "case_03"] and result.missing == missing
    assert json.loads(result.to_json())["missing"] == missing


def test_bad_dataset_layouts(tmp_path: Path) -> None:
    ref_dir, a_dir, _, _ = _dataset(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        evaluate(empty, ref_dir)
    with pytest.raises(DatasetError, match="no image files"):
        evaluate(a_dir, empty)
    with pytest.raises(InputError, match="no such prediction"):
        evaluate(tmp_path / "nope", ref_dir)
    with pytest.raises(InputError, match="two files or two folders"):
        evaluate(a_dir / "case_01.nii.gz", ref_dir)
    other = tmp_path / "other"
    write_mask(_cube(), GEO, other / "zzz.nii.gz")
    with pytest.raises(DatasetError):
        evaluate(other, ref_dir, allow_missing=True)  # nothing pairs at all


def test_compare_paired_tests(tmp_path: Path) -> None:
    ref_dir, a_dir, b_dir, _ = _dataset(tmp_path)
    result = evaluate(a_dir, ref_dir, EvaluateOptions(labels=[1]), compare=b_dir)
    assert result.other_rows is not None and result.comparison is not None
    comp = {c.metric: c for c in result.comparison}
    a, b = result.values("dice", 1), np.array([r.metrics.dice for r in result.other_rows])
    assert comp["dice"].n == 3
    assert comp["dice"].mean_diff == pytest.approx(a.mean() - b.mean())
    assert comp["dice"].t_pvalue == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert comp["dice"].wilcoxon_pvalue == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert comp["dice"].better == ("method" if a.mean() > b.mean() else "other")
    assert comp["assd"].mean_diff != 0
    assert comp["assd"].better == ("method" if comp["assd"].mean_diff < 0 else "other")
    # a method compared with itself: every difference is zero -> statistic 0, p = 1, no NaN
    same = evaluate(a_dir, ref_dir, EvaluateOptions(labels=[1]), compare=a_dir)
    assert all(c.t_pvalue == 1.0 and c.wilcoxon_pvalue == 1.0 for c in same.comparison or [])
    data = json.loads(same.to_json())
    assert len(data["comparison"]) == len(M.METRIC_NAMES) and len(data["other_cases"]) == 3


def test_geometry_mismatch_and_resampling(tmp_path: Path) -> None:
    ref = _cube()
    shifted_geo = Geometry(GEO.spacing, (GEO.origin[0] + GEO.spacing[0], GEO.origin[1], GEO.origin[2]))
    with pytest.raises(GeometryError, match="resample"):
        evaluate_images(Image(ref, shifted_geo), Image(ref, GEO))
    with pytest.raises(GeometryError, match="shape"):
        evaluate_images(Image(ref[:, :, :-1], GEO), Image(ref, GEO))
    # the same voxels on a grid one voxel further along x are the mask shifted by one voxel
    moved = resample_to(Image(ref, shifted_geo), Image(ref, GEO))
    assert np.array_equal(moved.array, np.roll(ref, 1, axis=2))
    result = evaluate_images(Image(ref, shifted_geo), Image(ref, GEO), EvaluateOptions(resample_pred=True))
    assert result.rows[0].metrics == M.compute_metrics(np.roll(ref, 1, axis=2), ref, GEO.spacing_zyx)
    assert result.rows[0].metrics.hd == pytest.approx(0.8, rel=1e-6)


@pytest.mark.filterwarnings("ignore:the maps hold labels 1 and 2")
def test_csv_and_json_outputs(tmp_path: Path) -> None:
    ref_dir, a_dir, b_dir, _ = _dataset(tmp_path)
    result = evaluate(a_dir, ref_dir, compare=b_dir)
    rows = list(csv.DictReader(io.StringIO(result.to_csv())))
    case_rows = [r for r in rows if r["row"] == "case"]
    assert len(case_rows) == 6
    first = result.rows[0]
    assert float(case_rows[0]["dice"]) == first.metrics.dice  # repr round-trips exactly
    assert case_rows[0]["surface"] == "medpy" and case_rows[0]["hd95_convention"] == "pooled"
    means = [r for r in rows if r["row"] == "mean" and r["region"] == "1"]
    assert float(means[0]["hd"]) == pytest.approx(result.summary()[1]["mean"]["hd"])
    glob = [r for r in rows if r["row"] == "dice_global"]
    assert [float(r["dice"]) for r in glob] == pytest.approx([result.dice_global(1), result.dice_global(2)])
    assert {r["row"] for r in rows} >= {"median", "min", "max", "std", "t_test_p", "wilcoxon_p", "other_mean"}
    data = json.loads(result.to_json())
    assert data["summary"]["1"]["dice_global"] == pytest.approx(result.dice_global(1))
    assert data["summary"]["1"]["mean"]["assd"] == pytest.approx(result.summary()[1]["mean"]["assd"])
    assert data["cases"][0]["case"] == "case_01" and "empty" in data["cases"][0]


def test_real_scans_file_pair(liver_path: Path, multiorgan_path: Path, tmp_path: Path) -> None:
    liver = read_label(liver_path)
    perturbed = np.roll(liver.array, 2, axis=1)
    write_mask(perturbed, liver, tmp_path / "pred.nii.gz")
    result = evaluate(tmp_path / "pred.nii.gz", liver_path)
    assert result.cases == ["liver"] and result.labels == [1]
    assert result.rows[0].metrics == M.compute_metrics(perturbed, liver.array, liver.spacing_zyx)
    assert result.rows[0].metrics.ref_ml == pytest.approx(39350 * 27 / 1000, rel=1e-5)
    multi = evaluate(multiorgan_path, multiorgan_path, EvaluateOptions(labels=[1, 5]))
    assert [r.metrics.dice for r in multi.rows] == [1.0, 1.0]


def test_empty_cases_stay_in_the_mean() -> None:
    ref = _cube()
    empty = np.zeros_like(ref)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = evaluate_images(Image(empty, GEO), Image(ref, GEO), EvaluateOptions(labels=[1]))
    m = result.rows[0].metrics
    assert m.empty == "pred" and m.dice == 0.0 and m.hd == M.EMPTY_DISTANCE_MM
    assert result.summary()[1]["mean"]["hd"] == M.EMPTY_DISTANCE_MM
    json.loads(result.to_json())  # strict JSON, no NaN
    assert summarize(np.array([]))["n"] == 0
    assert summarize(np.array([2.0]))["std"] == 0.0


def test_truncated_nifti_is_detected(tmp_path: Path) -> None:
    import gzip

    from liverctl.io.nifti import check_complete

    mask = np.random.default_rng(1).integers(0, 2, (6, 30, 30)).astype(np.uint8)
    for suffix in ("nii", "nii.gz"):
        path = tmp_path / f"m.{suffix}"
        write_mask(mask, GEO, path)
        check_complete(path)
        data = path.read_bytes()
        for cut in (len(data) - 3, len(data) // 2, 100):
            bad = tmp_path / f"bad.{suffix}"
            bad.write_bytes(data[:cut])
            with pytest.raises(InputError, match="truncated"):
                check_complete(bad)
    # a valid multi-member gzip file takes the slow path and passes
    raw = gzip.decompress((tmp_path / "m.nii.gz").read_bytes())
    multi = tmp_path / "multi.nii.gz"
    multi.write_bytes(gzip.compress(raw[:500]) + gzip.compress(raw[500:]))
    check_complete(multi)
    assert np.array_equal(read_label(multi).array, mask)


def test_evaluate_images_validates_label_values() -> None:
    from liverctl.errors import LabelError

    ref = Image(_cube(), GEO)
    with pytest.raises(LabelError, match="fractional"):
        evaluate_images(Image(_cube().astype(np.float32) * 0.5, GEO), ref)
    with pytest.raises(LabelError, match="negative"):
        evaluate_images(Image(_cube().astype(np.int16) - 1, GEO), ref)
    whole = evaluate_images(Image(_cube().astype(np.float32), GEO), ref)  # whole-number floats are labels
    assert whole.rows[0].metrics.dice == 1.0


# --------------------------------------------------------------------------- regions, lesions


def _lits_pair() -> tuple[np.ndarray, np.ndarray]:
    """A LiTS-style reference (liver 1, two tumours 2) and a whole-liver prediction with one tumour found."""
    ref = _cube(shape=(12, 30, 30), lo=(1, 3, 3), hi=(11, 25, 26))
    ref[3:7, 5:11, 5:11] = 2  # tumour A, found
    ref[6:9, 16:20, 17:22] = 2  # tumour B, missed
    pred = np.roll(ref > 0, 1, axis=2).astype(np.uint8)  # liver incl. tumours, shifted by one voxel
    pred[3:7, 5:11, 6:12] = 2
    pred[9:11, 20:23, 5:8] = 2  # a false positive lesion
    return pred, ref


def test_lits_regions_score_liver_as_one_plus_two(tmp_path: Path) -> None:
    pred, ref = _lits_pair()
    p_img, r_img = Image(pred, GEO), Image(ref, GEO)
    with pytest.warns(LiverctlWarning, match="liver as labels 1\\+2") as caught:
        default = evaluate_images(p_img, r_img)
    assert len([w for w in caught if "1+2" in str(w.message)]) == 1 and default.notes
    lits = evaluate_images(p_img, r_img, EvaluateOptions(regions="lits"))
    assert lits.notes == [] and lits.region_names == ["liver", "tumour"]
    liver = lits.rows[0]
    assert (liver.region, liver.ref_labels, liver.pred_labels) == ("liver", (1, 2), (1, 2))
    assert liver.metrics == M.compute_metrics(np.isin(pred, [1, 2]), np.isin(ref, [1, 2]), GEO.spacing_zyx)
    assert default.rows[0].metrics == M.compute_metrics(pred == 1, ref == 1, GEO.spacing_zyx)
    assert liver.metrics.dice > default.rows[0].metrics.dice  # label 1 alone is the liver minus its tumours
    # the tumour region: lesion detection and burden
    tumour = lits.rows[1].extra
    assert (tumour["lesions_ref"], tumour["lesions_pred"]) == (2, 2)
    assert (tumour["lesions_tp"], tumour["lesions_fp"], tumour["lesions_fn"]) == (1, 1, 1)
    burden_ref = np.sum(ref == 2) / np.sum(ref > 0)
    burden_pred = np.sum(pred == 2) / np.sum(pred > 0)
    assert tumour["burden_ref"] == pytest.approx(burden_ref) and tumour["burden_pred"] == pytest.approx(burden_pred)
    assert tumour["burden_abs_diff"] == pytest.approx(abs(burden_pred - burden_ref))
    assert [les.detected for les in lits.lesion_rows] == [True, False]
    a_dice = 2 * (4 * 6 * 5) / (2 * 4 * 6 * 6)  # two 4x6x6 boxes, one column apart
    assert lits.lesion_rows[0].dice == pytest.approx(a_dice)
    pooled = lits.lesion_summary("tumour")
    assert pooled is not None and pooled["lesion_recall"] == 0.5 and pooled["lesion_precision"] == 0.5
    assert pooled["lesion_dice_mean"] == pytest.approx(a_dice / 2)
    assert lits.lesion_summary("liver") is None


def test_pred_regions_and_region_notes() -> None:
    pred, ref = _lits_pair()
    total = np.where(pred > 0, 5, 0).astype(np.uint8)  # TotalSegmentator: liver = 5
    res = evaluate_images(
        Image(total, GEO), Image(ref, GEO), EvaluateOptions(regions="liver=1+2", pred_regions="totalseg")
    )
    assert res.rows[0].metrics == M.compute_metrics(total == 5, ref > 0, GEO.spacing_zyx)
    assert res.regions[0].labels_text == "pred 5 / ref 1+2"
    with pytest.warns(LiverctlWarning, match="'spleen' \\(7\\): no such label"):
        absent = evaluate_images(Image(pred, GEO), Image(ref, GEO), EvaluateOptions(regions="liver=1+2,spleen=7"))
    assert absent.rows[1].metrics.empty == "both" and len(absent.notes) == 1
    with pytest.raises(ConfigError, match="exclude"):
        evaluate_images(Image(pred, GEO), Image(ref, GEO), EvaluateOptions(labels=[1], regions="lits"))
    with pytest.raises(ConfigError, match="unknown region preset"):
        evaluate_images(Image(pred, GEO), Image(ref, GEO), EvaluateOptions(regions="kits"))


def test_regions_in_folders_csv_json_and_compare(tmp_path: Path) -> None:
    ref_dir, a_dir, b_dir, _ = _dataset(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # regions given: no LiTS hint
        result = evaluate(a_dir, ref_dir, EvaluateOptions(regions="lits", nsd=[2]), compare=b_dir)
    assert [(r.case, r.region) for r in result.rows[:2]] == [("case_01", "liver"), ("case_01", "tumour")]
    summary = result.summary()
    assert set(summary) == {"liver", "tumour"} and "nsd_2mm" in summary["liver"]["mean"]
    assert {c.region for c in result.comparison or []} == {"liver", "tumour"}
    assert any(c.metric == "lesion_f1" for c in result.comparison or [])
    # case_02 has no tumour on either side: both empty, no lesion, recall/precision 1
    case2 = next(r for r in result.rows if r.case == "case_02" and r.region == "tumour")
    assert case2.metrics.empty == "both" and case2.extra["lesions_ref"] == 0 and case2.extra["lesion_f1"] == 1.0
    rows = list(csv.DictReader(io.StringIO(result.to_csv())))
    case_rows = [r for r in rows if r["row"] == "case"]
    assert {(r["region"], r["ref_labels"], r["pred_labels"]) for r in case_rows} == {
        ("liver", "1+2", "1+2"),
        ("tumour", "2", "2"),
    }
    lesion_rows = [r for r in rows if r["row"] == "lesion"]
    assert len(lesion_rows) == 2 and all(r["region"] == "tumour" and r["lesion"] == "1" for r in lesion_rows)
    pooled = next(r for r in rows if r["row"] == "pooled")
    assert (
        pooled["region"] == "tumour"
        and float(pooled["lesion_recall"]) == result.lesion_summary("tumour")["lesion_recall"]
    )
    assert {r["region"] for r in rows if r["row"] == "t_test_p"} == {"liver", "tumour"}
    data = json.loads(result.to_json())
    assert [r["name"] for r in data["regions"]] == ["liver", "tumour"] and data["regions"][1]["lesions"]
    assert data["summary"]["tumour"]["lesion_detection"]["lesions_ref"] == 2
    assert data["summary"]["liver"]["ref_labels"] == [1, 2] and "lesions" in data["conventions"]
    assert data["cases"][0]["region"] == "liver" and len(data["lesions"]) == 2 and "other_lesions" in data
