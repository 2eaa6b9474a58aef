"""The model: the ED-ConvNet, training, MC-dropout inference, evaluation, the InfoVAE and MLflow tracking.

Builds on :mod:`activeseg.core` and :mod:`activeseg.metrics`."""
