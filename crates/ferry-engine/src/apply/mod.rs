//! Stage 5, apply: server-side apply with ferry's field manager.
