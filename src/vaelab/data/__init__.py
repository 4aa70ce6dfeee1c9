"""Data: what the trainer gets (``datasets``: in-memory tensors, checked, binarised) and
where the bytes come from (``sources``: IDX files, packaged copies, the cache, checksums)."""
