"""Training: objectives now; datasets, sampling and the loop arrive with `medseg train`."""
