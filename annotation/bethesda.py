"""The Bethesda classes: the one definition the whole platform uses.

Pure module (no Django import). Order matters: it is ordinal, from negative to the most
severe lesion, and indices 0..5 are what models, label smoothing and ordinal statistics use.
"""

from __future__ import annotations

BETHESDA: tuple[str, ...] = ("NILM", "ASC-US", "LSIL", "ASC-H", "HSIL", "SCC")
NUM_CLASSES = len(BETHESDA)

#: The detector learns these five; an image with no detection is NILM.
ATYPICAL: tuple[str, ...] = BETHESDA[1:]

#: Long names, as pathologists read them.
DESCRIPTIONS: dict[str, str] = {
    "NILM": "Negative for intraepithelial lesion or malignancy",
    "ASC-US": "Atypical squamous cells of undetermined significance",
    "LSIL": "Low-grade squamous intraepithelial lesion",
    "ASC-H": "Atypical squamous cells, cannot exclude HSIL",
    "HSIL": "High-grade squamous intraepithelial lesion",
    "SCC": "Squamous cell carcinoma",
}

# Spellings met in other tools' exports (CRIC's classifications.csv among them), mapped to ours.
_ALIASES: dict[str, str] = {
    "negative for intraepithelial lesion": "NILM",
    "negative for intraepithelial lesion or malignancy": "NILM",
    "negative": "NILM",
    "normal": "NILM",
    "ascus": "ASC-US",
    "asc_us": "ASC-US",
    "asch": "ASC-H",
    "asc_h": "ASC-H",
}


class UnknownLabel(ValueError):
    """A label that is not one of the six Bethesda classes."""


def normalize_label(name: str) -> str:
    """Return the canonical Bethesda name for ``name`` (case and common spellings forgiven).

    Raises UnknownLabel with the offending value when it is not a Bethesda class.
    """
    if not isinstance(name, str):
        raise UnknownLabel(f"label must be text, got {type(name).__name__}")
    text = name.strip()
    for canonical in BETHESDA:
        if text.upper() == canonical:
            return canonical
    alias = _ALIASES.get(text.lower())
    if alias:
        return alias
    raise UnknownLabel(f"unknown label {name!r}; expected one of {', '.join(BETHESDA)}")


def label_index(name: str) -> int:
    """Index 0..5 of a Bethesda label (accepts the spellings ``normalize_label`` accepts)."""
    return BETHESDA.index(normalize_label(name))


def label_name(index: int) -> str:
    if not 0 <= int(index) < NUM_CLASSES:
        raise UnknownLabel(f"label index {index} out of range 0..{NUM_CLASSES - 1}")
    return BETHESDA[int(index)]


#: Clinical cost of calling a cell of the row's class as the column's class (rows: truth).
#: Missing a high-grade lesion (HSIL/SCC called NILM) costs most; over-calling costs a follow-up.
#: Used to rank disputes for reviewers and by the clinical cost uncertainty strategy (inference.strategies).
CLINICAL_COST: tuple[tuple[float, ...], ...] = (
    # NILM ASC-US LSIL ASC-H HSIL SCC   <- called as
    (0.0, 1.0, 1.0, 2.0, 2.0, 3.0),    # NILM
    (2.0, 0.0, 1.0, 1.0, 2.0, 3.0),    # ASC-US
    (3.0, 1.0, 0.0, 1.0, 1.0, 2.0),    # LSIL
    (6.0, 4.0, 3.0, 0.0, 1.0, 2.0),    # ASC-H
    (10.0, 7.0, 5.0, 1.0, 0.0, 1.0),   # HSIL
    (12.0, 9.0, 7.0, 2.0, 1.0, 0.0),   # SCC
)


def disagreement_risk(labels) -> float:
    """Clinical risk of a set of disagreeing opinions (Bethesda indices): the largest cost of
    either opinion being the truth and the other the call. NILM vs HSIL scores 10, ASC-H vs HSIL 1."""
    present = sorted({int(i) for i in labels})
    worst = 0.0
    for a in present:
        for b in present:
            worst = max(worst, CLINICAL_COST[a][b])
    return worst
