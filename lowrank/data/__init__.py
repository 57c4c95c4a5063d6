"""The tasks: synthetic generators, Fashion-MNIST (IDX) and pretrained checkpoints (safetensors)."""
