"""Metrics: functions ``(maps, ground truth[, model]) -> numbers``, one module per protocol, each
citing its source; no file I/O, no result rows, and a model they run is run inside
:func:`~gradcam_lib.methods.scopes.explanation_scope`."""
