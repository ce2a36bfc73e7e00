//! Stage 8, report: per-object results rendered for humans, JSON and markdown.
