"""Label exchange with the annotation tools labs already use: QuPath GeoJSON (:mod:`.qupath`), CVAT for
images 1.1 XML (:mod:`.cvat`) and Label Studio JSON (:mod:`.labelstudio`).

Each format module exports a round's request with the model's prediction as pre-annotation, and reads the
tool's export back into one class-id mask per requested region (the region's in-image part, the same
mask ``activeseg labels submit`` takes). :mod:`.service` ties them to a workspace: the round's regions and
model, and the existing submit path (validation, quarantine, ledger).

Coordinate conventions: activeseg boxes are ``[y0, x0, y1, x1]`` (rows then columns, end exclusive);
QuPath uses ``x, y`` in full-resolution pixels with the origin at the top-left corner of the top-left
pixel (pixel ``(row r, column c)`` covers ``[c, c+1) x [r, r+1)``); CVAT uses ``left, top, width, height``
in pixels of the image it was given (here: the region's crop).
"""

from activeseg.workspace.exchange.formats.common import FormatError

__all__ = ["FormatError"]
