"""Backends behind the engine's one interface (dgn_engine.engine.backend.Backend)."""
