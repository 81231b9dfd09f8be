//! Rendering of Damselfly's cluster setup: the node runtime configuration
//! that `damselfly-agent node-setup` writes (containerd, CRI-O/podman,
//! Docker) and its exact undoing.

pub mod cluster;
pub mod image;
pub mod node;
pub mod webhook;
