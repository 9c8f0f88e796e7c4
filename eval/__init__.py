"""Evaluation: HellaSwag (in the loop and through lm-eval), validation loss against baselines, plots."""
