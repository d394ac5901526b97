"""The torch side: models, weights, the reference loop and the exporters."""
