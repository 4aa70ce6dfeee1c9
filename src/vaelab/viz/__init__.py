"""Seeing a run: ``analysis`` computes arrays (samples, interpolations, embeddings, KL,
bubbles, the manifold), ``plots`` draws them, ``figures`` ties both to a run directory and
``report`` assembles the saved figures into one HTML page."""
