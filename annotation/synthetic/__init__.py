"""Procedural liquid-based cytology (Pap) images with one Bethesda-labelled box per cell cluster.

Pure package (NumPy + OpenCV, no Django import). It stands in for real slides in tests, demos and
the active-learning simulation: every image is reproducible from one integer seed.

How a picture is made
---------------------
1. A *scene* is drawn from ``numpy.random.default_rng(seed)``: scattered single normal squamous
   cells (no box), a few inflammatory cells, and clusters whose grade is drawn from
   ``SyntheticConfig.grade_mix``. Each cell's look (size, nucleus-to-cytoplasm ratio, chromatin
   density and coarseness, nuclear contour, koilocytic halo, cytoplasm kind and shape) is drawn
   from distributions keyed on the cluster's grade (``_LOOKS``). The distributions of adjacent
   grades overlap, and a per-cluster latent "severity tilt" shifts all cells of a cluster
   together, so some clusters look like the next grade up or down.
2. Each cell is a mix of stains (hematoxylin in nuclei; light green, eosin and orange G in
   cytoplasm) whose per-image optical-density matrix ``M`` wanders a little (stain variation).
   Cells add their optical density ``C @ M`` into a float canvas, each one only inside its own
   bounding box (region of interest). Edges are soft (anti-aliased ramps) and densities add, so
   overlapping cytoplasm darkens as on a slide.
3. The canvas becomes light by Beer-Lambert, ``I = I0 * exp(-OD)``, with a smooth illumination
   ``I0`` (tinted background, faint haze, vignetting).
4. Per-image acquisition effects: hue/saturation shift, brightness/contrast, focus blur, sensor
   noise, gamma; 8-bit RGB.

The grade looks follow the Bethesda descriptions: nuclear enlargement and N:C ratio rise from
NILM to HSIL; hyperchromasia and coarse chromatin rise with grade; nuclear membranes become
irregular; LSIL shows koilocytes (sharp perinuclear cavity with a dense rim, bi-nucleation);
ASC-US sits between NILM and LSIL; ASC-H shows few small metaplastic-sized cells with high N:C;
HSIL crowded sheets of small cells with very high N:C; SCC pleomorphic keratinised cells (orange
cytoplasm, tadpole and spindle shapes, ink-dark nuclei) with a granular diathesis.

The package: ``config`` (SyntheticConfig, SyntheticImage), ``looks`` (per-grade cell features),
``shapes`` (blobs, nuclei, cells), ``scene`` (drawing a scene from the seed), ``render`` (stains,
light, acquisition) and ``generate`` (the public calls, re-exported here).
"""

from annotation.synthetic.config import SyntheticConfig, SyntheticImage
from annotation.synthetic.generate import (
    cluster_crops,
    generate_dataset,
    generate_image,
    image_seed,
)

__all__ = [
    "SyntheticConfig",
    "SyntheticImage",
    "generate_image",
    "generate_dataset",
    "image_seed",
    "cluster_crops",
]
