//! The embedded DNS resolver of user networks.
