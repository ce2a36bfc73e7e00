//! Stage 7, health: kstatus-like readiness rules and waiting for objects to become Current.
