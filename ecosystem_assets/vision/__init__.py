"""Scenario 2: versioned image dataset, DDP-trained CNN, evaluation and promotion in MLflow."""
