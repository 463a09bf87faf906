"""Evaluation on any checkpoint: weighted k-NN, the linear probe, attention maps."""
