"""The ground floor of the runtime: what every other part stands on, importing nothing above it.

bundle (the exported model's one source of truth: labels, data set of each class, preprocessing, files),
labels, preprocess, schema, scores (softmax, top-k), fileio (whole-or-nothing writes), signals,
redact (secrets out of URIs), check_set and compare (does a backend answer as the FP32 model did).
May import: erudite_edge.errors, erudite_edge._version, and itself."""
