//! Sealed Secrets (bitnami.com/v1alpha1), compatible with kubeseal and the bitnami controller.
