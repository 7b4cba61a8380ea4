//! Borg Collective: a small secret store that gets Borg Backup passphrases
//! to backup hosts without writing them into any config file.
//!
//! The library holds what the `credstore` daemon and the `cred` client
//! share: the vault at rest, the wire protocol, the server and the client.

pub mod secret;
pub mod vault;
