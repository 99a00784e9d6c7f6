"""Dataset side (torch-free): manifests, label-file adapters, image I/O, synthetic distortions."""
