"""Annotation file formats: COCO JSON, YOLO txt, Label Studio JSON, and CRIC's point annotations.

Pure package (no Django import). Everything is in original-image pixels (``Box``: x, y = top-left
corner, width, height) with Bethesda labels; each format's own units (YOLO's normalised centres,
Label Studio's percents, CRIC's nucleus points) are converted here and nowhere else.

Precision: every reader quantises coordinates to micro-pixels, ``round(v, 6)`` (1e-6 px), and
every writer writes floats with Python's shortest exact representation (``repr``), so for records
whose coordinates are already on that grid (anything a reader returned, integers, ...)
``read_X(write_X(records)) == records`` exactly. Scores are probabilities and are kept exactly,
not quantised. Readers return records in file order (YOLO: in ``image_sizes`` order) and keep
images that have no boxes.

Malformed input raises ``FormatError`` naming the file (or ``<dict>``/``<list>`` for in-memory
data) and what is wrong. Boxes are checked against their image with ``Box.validated``; writers
check the records they are given the same way.

Label Studio's pixel <-> percent conversion lives in ``pixels_to_ls_value`` and
``ls_value_to_box``: the one place the platform converts to and from Label Studio coordinates.

One module per format (``coco``, ``yolo``, ``label_studio``, ``cric``), what they share in
``base`` and the format sniffing in ``detect``; this package re-exports the public names, so
``from annotation import formats; formats.write_coco(...)`` is the way to use them.
"""

from annotation.formats.base import PRECISION_DECIMALS, FormatError, quantize
from annotation.formats.coco import read_coco, to_coco, write_coco
from annotation.formats.cric import CRIC_CSV_COLUMNS, read_cric_csv, read_cric_json
from annotation.formats.detect import detect_format
from annotation.formats.label_studio import (
    LS_FROM_NAME,
    LS_LOCAL_FILES_PREFIX,
    LS_TO_NAME,
    default_image_url,
    file_name_from_ls_url,
    ls_value_to_box,
    pixels_to_ls_value,
    read_label_studio,
    to_label_studio,
    write_label_studio,
)
from annotation.formats.yolo import read_yolo, write_yolo

__all__ = [
    "CRIC_CSV_COLUMNS",
    "LS_FROM_NAME",
    "LS_LOCAL_FILES_PREFIX",
    "LS_TO_NAME",
    "PRECISION_DECIMALS",
    "FormatError",
    "default_image_url",
    "detect_format",
    "file_name_from_ls_url",
    "ls_value_to_box",
    "pixels_to_ls_value",
    "quantize",
    "read_coco",
    "read_cric_csv",
    "read_cric_json",
    "read_label_studio",
    "read_yolo",
    "to_coco",
    "to_label_studio",
    "write_coco",
    "write_label_studio",
    "write_yolo",
]
