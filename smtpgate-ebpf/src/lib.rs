//! The gate's header walk as a library, so that the benchmark's parse-only
//! baseline runs exactly the code the gate runs.
#![no_std]

pub mod frame;
pub mod parse;
