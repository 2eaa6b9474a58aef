"""The active-learning loop: selection and pseudo-label application shared by the simulation and the
workspace, the simulated oracle, stop rules, learning curves, ``simulate`` and ``benchmark``.

Builds on the model and the strategies."""
