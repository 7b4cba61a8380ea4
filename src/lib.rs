//! Borg Collective: a small secret store that gets Borg Backup passphrases
//! to backup hosts without writing them into any config file.
//!
//! The library holds what the `credstore` daemon and the `cred` client
//! share: the vault at rest, the wire protocol, TLS set-up, the server and
//! the client.

pub mod client;
pub mod protocol;
pub mod secret;
pub mod server;
pub mod tls;
pub mod vault;
