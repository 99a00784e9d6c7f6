"""Dataset side (torch-free): manifests, label-file adapters, synthetic distortions, scene labels, sample photos."""
