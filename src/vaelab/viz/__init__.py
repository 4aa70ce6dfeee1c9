"""Seeing a run: ``analysis`` and ``embeddings`` compute arrays (samples, interpolations,
traversals, KL, bubbles, the manifold; t-SNE and PCA of the test means), ``plots`` and
``latent_plots`` draw them, ``figures`` ties both to a run directory, ``report``
assembles the saved figures into one HTML page and ``live`` adds its decoder panel."""
