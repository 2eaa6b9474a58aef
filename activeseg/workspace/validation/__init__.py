"""Great Expectations suites for the dataset and for every returned label batch: the shared runner
(:mod:`.suite`), the dataset suite (:mod:`.dataset`) and the label-batch suite (:mod:`.labels`)."""

from activeseg.workspace.validation.dataset import dataset_fingerprint, validate_dataset
from activeseg.workspace.validation.labels import validate_label_batch
from activeseg.workspace.validation.suite import (ValidationFailed, ValidationReport, decode_png,
                                                  pixels_outside_classes, png_header_size)

__all__ = ["ValidationFailed", "ValidationReport", "dataset_fingerprint", "decode_png", "pixels_outside_classes", "png_header_size",
           "validate_dataset", "validate_label_batch"]
