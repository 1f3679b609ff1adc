"""Model -> artifacts: load, prune, quantize, export, verify, manifest."""
