"""What :func:`~liverctl.postprocessing.postprocess` does to each label: :class:`LabelRule`,
:class:`PostprocessConfig` and its named :data:`PRESETS`, and the ``--keep`` parser."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from liverctl.errors import ConfigError
from liverctl.postprocessing.components import _check_connectivity


@dataclass(frozen=True)
class LabelRule:
    """What to do with one label.

    ``keep``: number of largest components to keep (``None``: all, subject to
    ``min_volume_ml``); ``fill_holes``: fill 3D holes (``"3d"``), per-slice 2D holes
    (``"2d"``) or none (``None``); ``region``: the labels that form this structure for the
    component analysis (default: the label alone; the liver preset uses (1, 2) so that
    liver and tumour are one organ). Removed voxels become 0; filled holes take the label,
    and only background (0) voxels are ever filled.
    """

    keep: int | None = 1
    min_volume_ml: float | None = None
    fill_holes: str | None = None
    region: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.keep is not None and self.keep < 0:
            raise ConfigError(f"keep must be >= 0 or None, got {self.keep}")
        if self.min_volume_ml is not None and self.min_volume_ml < 0:
            raise ConfigError(f"minimum volume must be >= 0 mL, got {self.min_volume_ml}")
        if self.fill_holes not in (None, "3d", "2d"):
            raise ConfigError(f"fill_holes must be '3d', '2d' or None, got {self.fill_holes!r}")


@dataclass(frozen=True)
class PostprocessConfig:
    """Per-label rules plus the tumour-in-liver rule, applied by :func:`postprocess`.

    ``rules`` maps a label value to its :class:`LabelRule`; labels without a rule are left
    alone. If ``tumour_label`` is set, tumour voxels outside the final liver
    (``liver_labels``) are removed after the per-label rules (see :func:`remove_outside`).
    ``names`` gives labels a name in reports.
    """

    rules: Mapping[int, LabelRule] = field(default_factory=dict)
    connectivity: int = 26
    tumour_label: int | None = None
    liver_labels: tuple[int, ...] = (1, 2)
    names: Mapping[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_connectivity(self.connectivity)
        for label in self.rules:
            if not 0 < int(label) <= 65535:
                raise ConfigError(f"rules apply to labels 1..65535, got {label}")

    @classmethod
    def preset(cls, name: str = "liver") -> PostprocessConfig:
        """A named configuration; see :data:`PRESETS`."""
        try:
            return PRESETS[name]
        except KeyError:
            raise ConfigError(f"unknown post-processing preset {name!r}; choose one of {', '.join(PRESETS)}") from None

    def with_options(
        self,
        *,
        labels: Sequence[int] | None = None,
        keep: Mapping[int, int | None] | None = None,
        min_volume_ml: float | None = None,
        fill_holes: str | bool | None = True,
        tumour_in_liver: bool = True,
        connectivity: int | None = None,
    ) -> PostprocessConfig:
        """A copy changed the way the CLI options change it.

        ``labels``: process exactly these labels (existing rules kept, new ones keep the
        largest component); ``keep``: label -> N (``None`` = all), adding the label if
        needed; ``min_volume_ml``: applied to every rule; ``fill_holes``: ``False`` turns
        hole filling off everywhere, ``"2d"``/``"3d"`` switches the mode of the rules that
        fill holes; ``tumour_in_liver=False`` drops the tumour rule.
        """
        rules = dict(self.rules)
        if labels is not None:
            rules = {int(lab): rules.get(int(lab), LabelRule()) for lab in labels}
        for label, n in (keep or {}).items():
            rules[int(label)] = replace(rules.get(int(label), LabelRule()), keep=n)
        if min_volume_ml is not None:
            rules = {lab: replace(rule, min_volume_ml=min_volume_ml) for lab, rule in rules.items()}
        if fill_holes is False or fill_holes is None:
            rules = {lab: replace(rule, fill_holes=None) for lab, rule in rules.items()}
        elif fill_holes in ("2d", "3d"):
            rules = {
                lab: replace(rule, fill_holes=fill_holes if rule.fill_holes else None) for lab, rule in rules.items()
            }
        return replace(
            self,
            rules=rules,
            tumour_label=self.tumour_label if tumour_in_liver else None,
            connectivity=self.connectivity if connectivity is None else _check_connectivity(connectivity),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "rules": {str(k): asdict(v) for k, v in sorted(self.rules.items())},
            "connectivity": self.connectivity,
            "tumour_label": self.tumour_label,
            "liver_labels": list(self.liver_labels),
        }


PRESETS: dict[str, PostprocessConfig] = {
    # Liver (1) and tumour (2), as LiTS / 3D-IRCADb: keep the largest liver (tumour counted
    # as liver), fill its holes, then drop tumour outside the liver.
    "liver": PostprocessConfig(
        rules={1: LabelRule(keep=1, fill_holes="3d", region=(1, 2))},
        tumour_label=2,
        liver_labels=(1, 2),
        names={1: "liver", 2: "tumour"},
    ),
    # TotalSegmentator's 117-class map: spleen 1, right kidney 2, left kidney 3, liver 5.
    # Its kidneys are separate labels, so each keeps one component.
    "totalseg": PostprocessConfig(
        rules={
            1: LabelRule(keep=1),
            2: LabelRule(keep=1),
            3: LabelRule(keep=1),
            5: LabelRule(keep=1, fill_holes="3d"),
        },
        liver_labels=(5,),  # printed with the preset: its liver is 5 (1, 2 are spleen and right kidney)
        names={1: "spleen", 2: "kidney_right", 3: "kidney_left", 5: "liver"},
    ),
    # Nothing by default: build the rules with --labels / --keep.
    "none": PostprocessConfig(),
}


def parse_keep(text: str) -> tuple[int, int | None]:
    """Parse ``"LABEL:N"`` (``N`` a count, or ``all``) into ``(label, N)``."""
    label_text, sep, n_text = text.partition(":")
    try:
        label = int(label_text)
        n = None if n_text.strip().lower() == "all" else int(n_text)
    except ValueError:
        label, n, sep = -1, -1, ""
    if not sep or label <= 0 or (n is not None and n < 0):
        raise ConfigError(f"--keep expects LABEL:N with a label >= 1 and N >= 0 (or 'all'), got {text!r}")
    return label, n
