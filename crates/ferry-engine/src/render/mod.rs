//! Stage 2, render: turns a source directory into manifests (plain YAML, kustomize, helm).
