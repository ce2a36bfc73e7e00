//! The whole pipeline, composed from the stages; both drivers (CLI and agent) call this.
