"""The math of one optimisation step, written once in torch: run eagerly it is the reference,
traced it becomes the exported step graph."""
