"""COCO-Stuff / COCO captions on disk: paths, reader, transforms, preflight and the synthetic data set."""
