"""Running TorchServe for weeks: token keys kept fresh (`ops.keys`) and health probes without secrets
(`ops.health`). Standard library only, so the probes run anywhere the server runs (containers included)."""
