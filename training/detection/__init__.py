"""YOLOv4 detection pieces that are not the network: anchors, label encoder, loss and decoding,
non-max suppression, letterboxing, and the detector's evaluation (COCO AP@0.5, the paper's
image-level recall and precision, and the recall-first threshold).

Box conventions shared by every module here:
    xyxy   (x1, y1, x2, y2) corners in pixels, x to the right, y down (the default everywhere)
    cxcywh (cx, cy, w, h) centre and size in pixels (the encoder's targets, the loss)
    xywh   (x, y, w, h) top-left corner and size in pixels (``annotation.geometry.Box``, COCO)

Detector class ids are 0..C-1. For the paper's five-class detector class ``i`` is the Bethesda
grade ``ATYPICAL[i]`` (Bethesda index ``i + 1``): ids are ordinal, so "the highest grade found"
is the largest id, and an image with no detection is NILM.

Only ``loss.py`` (TensorFlow) and ``schedule.py`` (Keras) import a framework; the other modules are
NumPy (and OpenCV for resizing).
"""
