//! End-to-end tests: the real credstore, the real cred binary, real borg.

mod borg;
mod concurrency;
mod crash;
mod daemon;
mod disk;
mod frames;
mod lifecycle;
mod memory;
mod mount;
mod production;
mod recovery;
mod support;
mod tamper;
