//! borgd's library: the config it reads, how it runs borg and hands it the
//! passphrase, its schedule and its state. The `borgd` binary is the
//! command line around it; the library exists so that the config parser
//! can be fuzzed and reused on its own.

pub mod borg;
pub mod config;
pub mod daemon;
pub mod passphrase;
pub mod run;
pub mod schedule;
pub mod state;
