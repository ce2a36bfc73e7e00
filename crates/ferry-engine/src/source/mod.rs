//! Stage 1, source: where the files come from (a local path, stdin, or a git checkout).
