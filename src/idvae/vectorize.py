# Vectorised seeds — owned by the vectorised-seeds engineer. The experiments code calls
# `fit_seeds`; do not re-implement here.
"""Train several seeds of one estimator as a single batched model."""
