//! The flatlan CNI plugin.
