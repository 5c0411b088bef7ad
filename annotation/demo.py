"""Demo datasets for `make run`: synthetic images, and the real CRIC images when present."""

from __future__ import annotations

import tempfile
from pathlib import Path

from annotation.formats import write_coco
from annotation.models import Dataset, Image
from annotation.services import ImportReport, ensure_dataset, import_images
from annotation.synthetic import generate_dataset

SYNTHETIC_NAME = "demo-synthetic"
CRIC_NAME = "cric-dev"
CRIC_SOURCE = "CRIC Cervix Cell Classification collection (conventional Pap smears), development subset"
CRIC_LICENSE = "CC BY 4.0"
CRIC_CITATION = (
    "Rezende M.T. et al., \"Cric searchable image database as a public platform for conventional "
    "pap smear cytology data\", Scientific Data 8:151 (2021), doi:10.1038/s41597-021-00933-8; "
    "collection doi:10.6084/m9.figshare.c.4960286.v2"
)


def seed_synthetic(*, n_images: int, seed: int = 2026, progress=None) -> ImportReport | None:
    """Generate and import the synthetic demo dataset, once (None when it already exists)."""
    if Image.objects.filter(dataset__name=SYNTHETIC_NAME).exists():
        return None
    dataset, _ = ensure_dataset(
        name=SYNTHETIC_NAME,
        title="Synthetic liquid-based cytology (demo)",
        source="CytoLoop's synthetic generator (annotation/synthetic), seed 2026",
        license="generated; no restrictions",
        description="Procedurally generated Pap-like images with exact Bethesda ground truth.",
    )
    with tempfile.TemporaryDirectory() as tmp:
        records = generate_dataset(tmp, n_images, seed=seed, progress=progress)
        write_coco(records, Path(tmp) / "annotations.json")
        return import_images(
            dataset=dataset, path=Path(tmp) / "images", annotations=Path(tmp) / "annotations.json",
            source=Image.Source.SYNTHETIC,
        )


def seed_cric(*, cric_dir: Path, progress=None) -> ImportReport | None:
    """Import the real CRIC development images with their nucleus-point labels, once."""
    if not (cric_dir / "annotations.json").exists():
        return None
    if Image.objects.filter(dataset__name=CRIC_NAME).exists():
        return None
    dataset, _ = ensure_dataset(
        name=CRIC_NAME,
        title="CRIC Cervix (real Pap smears, development subset)",
        source=CRIC_SOURCE,
        license=CRIC_LICENSE,
        citation=CRIC_CITATION,
        description=(
            "32 real conventional Pap smear images; cytopathologists' Bethesda labels at nucleus "
            "points, turned into ~100 px cell boxes that reviewers can correct. CRIC labels selected "
            "squamous cells only: many NILM cells are unlabelled."
        ),
    )
    return import_images(
        dataset=dataset, path=cric_dir / "images", annotations=cric_dir / "annotations.json",
        progress=progress,
    )


def demo_datasets() -> list[Dataset]:
    return list(Dataset.objects.filter(name__in=[SYNTHETIC_NAME, CRIC_NAME]))
