"""The YOLOv4 cluster detector: data, config, trainer, evaluation (over ``training.loop``; its
box math is in ``training/detection/``)."""
