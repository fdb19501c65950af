"""From a source to answers: the batched pipeline, its input buffer, the models it runs (the erudite model,
the two-stage zoo), the answer rules (top-k, --datasets, --smooth, --min-confidence) and the check set run.
May import: erudite_edge.backends, erudite_edge.outputs, erudite_edge.sources, erudite_edge.core."""
