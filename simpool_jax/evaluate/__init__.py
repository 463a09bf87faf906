"""Evaluation on any checkpoint: attention maps (k-NN and linear probe follow)."""
