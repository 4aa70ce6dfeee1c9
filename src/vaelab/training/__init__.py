"""Training: the epoch loop (``loop``), what happens after each epoch (``epoch_end``), the
run directory's write/resume protocol (``run_dir``), checkpoints, the optimiser, graceful
stopping, several processes (``distributed``) and TensorBoard (``tracking``)."""
