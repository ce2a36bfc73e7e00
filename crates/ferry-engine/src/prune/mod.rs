//! Stage 6, prune: the inventory of what an app owns, and safe deletion of what left the source.
