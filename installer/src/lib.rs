//! Rendering of the cluster setup script and node runtime configuration.
//! Filled in by the cluster-setup work; the crate exists so the workspace
//! already has the shape the architecture describes.
