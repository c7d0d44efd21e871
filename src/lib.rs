//! nsgflow: Azure NSG and VNet flow logs into answers — what talked to what, which rule
//! decided each flow, and what was skipped on the way.
//!
//! The library holds every stage; the `nsgflow` binary, the tests and the benches call it.
//! Data flows one way (see `DESIGN.md` in the team's shared folder):
//! [`discover`] → [`parse`] → [`aggregate`] (the folds) → renderers ([`summary`],
//! [`report`], [`export`]), all driven by one [`pipeline`]; [`state`] saves unfinished
//! folds as partial files and merges them. [`gen`] writes synthetic containers for demos, tests and benchmarks.

pub mod addr;
pub mod aggregate;
pub mod app;
pub mod audit;
pub mod cli;
pub mod detect;
pub mod discover;
pub mod export;
pub mod filter;
pub mod gen;
pub mod hash;
pub mod model;
pub mod parse;
pub mod pipeline;
pub mod rejects;
pub mod report;
pub mod state;
pub mod summary;
pub mod tables;
pub mod text;
