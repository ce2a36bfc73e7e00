//! Stage 4, plan: resolve kinds through discovery, order objects, diff against the live cluster.
