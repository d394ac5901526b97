"""The torch side: D and G as torch modules, their weights, the coupled step and the exporters."""
