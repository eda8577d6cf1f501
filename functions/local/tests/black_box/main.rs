//! `drogue-local` as users run it: the real binary on a loopback port, driven by `drg`
//! 0.11 and by HTTP, stopped by signals and restarted on the same data directory.

mod commands;
mod drg;
mod restart;
mod runner;
mod telemetry;
