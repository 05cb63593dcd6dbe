"""Pure builders: parsed InferenceService in, Kubernetes manifests (dicts) out."""
