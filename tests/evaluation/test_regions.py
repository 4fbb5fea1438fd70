"""liverctl.evaluation.regions: region specs, presets, per-side mappings, masks and the LiTS hint."""

from __future__ import annotations

import numpy as np
import pytest

from liverctl.errors import ConfigError
from liverctl.evaluation.regions import (
    PRESETS,
    Region,
    lesion_labels,
    lits_hint,
    parse_regions,
    region_mask,
    resolve_regions,
)


def test_parse_specs_and_presets() -> None:
    assert parse_regions("liver=1+2, tumour=2") == {"liver": (1, 2), "tumour": (2,)}
    assert parse_regions("LiTS") == PRESETS["lits"] == parse_regions("msd-liver")
    assert parse_regions("totalseg") == {"liver": (5,)}
    assert parse_regions({"liver": [5, 5]}) == {"liver": (5,)}
    bad = {
        "nope": "unknown region preset",
        "liver=": "NAME=LABELS",
        "liver=1+x": "whole numbers",
        "liver=0": "between 1 and 65535",
        "liver=1,liver=2": "twice",
        "1liver=1": "must start with a letter",
        "liver=1+2,=2": "must start with a letter",
    }
    for spec, needle in bad.items():
        with pytest.raises(ConfigError, match=needle):
            parse_regions(spec)


def test_resolve_per_side_mappings() -> None:
    assert resolve_regions(None) is None
    lits = resolve_regions("lits")
    assert lits == [Region("liver", (1, 2), (1, 2)), Region("tumour", (2,), (2,), lesions=True)]
    mixed = resolve_regions("liver=1+2", pred="liver=5")
    assert mixed == [Region("liver", (5,), (1, 2))] and mixed[0].labels_text == "pred 5 / ref 1+2"
    assert resolve_regions(None, pred="totalseg", ref="liver=1+2") == [Region("liver", (5,), (1, 2))]
    with pytest.raises(ConfigError, match="no labels for the reference"):
        resolve_regions(None, pred="liver=5")
    with pytest.raises(ConfigError, match="no labels for the prediction"):
        resolve_regions("lits", ref="spleen=1")
    # lesion regions: by name by default, explicit list, or none
    assert [r.lesions for r in resolve_regions("liver=1+2,lesion=2")] == [False, True]
    assert [r.lesions for r in resolve_regions("lits", lesions="none")] == [False, False]
    assert [r.lesions for r in resolve_regions("liver=1+2,met=2", lesions="met")] == [False, True]
    with pytest.raises(ConfigError, match="not among the regions"):
        resolve_regions("lits", lesions="kidney")
    assert lesion_labels("2") == {2} and lesion_labels(None) == set()
    with pytest.raises(ConfigError, match="label numbers"):
        lesion_labels("tumour")


def test_masks_and_hint() -> None:
    a = np.array([[[0, 1, 2, 5, 2]]], np.uint8)
    assert region_mask(a, (1, 2)).tolist() == [[[False, True, True, False, True]]]
    assert region_mask(a.astype(np.uint16), (5, 300)).tolist() == [[[False, False, False, True, False]]]
    assert region_mask(a.astype(np.int32), (2, 5)).sum() == 3
    assert "--preset lits" in (lits_hint({1, 2}) or "")
    assert lits_hint({1}) is None and lits_hint({1, 2, 5}) is None
