//! tether-probe: measures session affinity of a deployment from the outside — stickiness,
//! the spread of sessions over pods, and sessions moved during a rollout. Standard library
//! only; see `tether-probe --help` and the README section "The probe".

pub mod cli;
pub mod http;
pub mod jar;
pub mod stats;
