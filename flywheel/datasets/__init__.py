"""Stage: versioned datasets. Immutable, content-addressed versions of the labels, their
checkout as a torch ``Dataset``, and the fingerprints that name outputs by their inputs."""
