//! Turns one decoded request into one response against the vault.
//!
//! Runs on a blocking thread: vault operations do file I/O and, for unlock,
//! a deliberately slow KDF. A client is never told whether an item it may
//! not read exists: every failure of a client read that is not "locked" is
//! the same "unauthorized".

use std::net::{IpAddr, SocketAddr};
use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use tracing::{debug, error, info, warn};

use super::limits::{AuthLimiter, FAILURE_WINDOW, FREE_FAILURES, Recorded};
use uuid::Uuid;

use crate::protocol::{
    Auth, ClientSummary, ErrorKind, ItemSummary, Operation, Request, Response, StoreInfo,
};
use crate::secret::SecretBytes;
use crate::vault::{Unlocked, Vault, VaultError};

/// What every connection shares.
#[derive(Debug)]
pub struct State {
    pub vault: RwLock<Vault>,
    pub production: bool,
    failures: AuthLimiter,
    /// Writers queue here, not on the vault lock. The vault lock lets a
    /// waiting writer go before waiting readers, so a steady stream of
    /// updates would hold reads off indefinitely. With no other writer
    /// waiting on it when one finishes, the readers waiting are woken and
    /// get their turn, at the latest after the next write.
    writers: Mutex<()>,
}

/// Exclusive access to the vault, holding the writers' queue until the
/// vault lock is released (fields drop in order).
struct WriteAccess<'a> {
    vault: RwLockWriteGuard<'a, Vault>,
    _queue: MutexGuard<'a, ()>,
}

impl Deref for WriteAccess<'_> {
    type Target = Vault;

    fn deref(&self) -> &Vault {
        &self.vault
    }
}

impl DerefMut for WriteAccess<'_> {
    fn deref_mut(&mut self) -> &mut Vault {
        &mut self.vault
    }
}

/// Who a request was authenticated as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Anonymous,
    Admin,
    Client(Uuid),
}

impl State {
    pub fn new(vault: Vault, production: bool) -> Self {
        Self {
            vault: RwLock::new(vault),
            production,
            failures: AuthLimiter::default(),
            writers: Mutex::new(()),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Vault> {
        self.vault.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> WriteAccess<'_> {
        let queue = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
        WriteAccess {
            vault: self.vault.write().unwrap_or_else(PoisonError::into_inner),
            _queue: queue,
        }
    }

    /// Answers one request from `peer`.
    pub fn handle(&self, peer: SocketAddr, request: Request) -> Response {
        let operation = request.operation.name();
        let checks_credentials = !matches!(request.auth, Auth::None)
            || matches!(request.operation, Operation::Unlock { .. });
        if checks_credentials && let Err(wait) = self.failures.check(peer.ip(), Instant::now()) {
            debug!(%peer, operation, "refused unchecked: too many failed authentications");
            return Response::error(
                ErrorKind::Unauthorized,
                format!(
                    "too many failed authentications from this address; try again in {} s",
                    wait.as_secs().max(1)
                ),
            );
        }

        let (caller, outcome) = self.dispatch(peer.ip(), request);
        match &outcome {
            // A success does not clear the failures: a host holding valid
            // client credentials must not reset the count of its guesses
            // at the admin passphrase. They expire with their window.
            Ok(_) => debug!(%peer, operation, ?caller, "served"),
            Err(err) if is_auth_failure(err) => {
                let recorded = self.failures.failed(peer.ip(), Instant::now());
                log_auth_failure(peer, operation, caller, recorded);
            }
            Err(err) => log_failure(peer, operation, caller, err),
        }
        outcome.unwrap_or_else(|err| error_response(caller, &err))
    }

    fn dispatch(&self, peer: IpAddr, request: Request) -> (Caller, Result<Response, VaultError>) {
        let Request { auth, operation } = request;
        match operation {
            Operation::Info => (Caller::Anonymous, Ok(self.info())),
            Operation::Unlock { passphrase } => {
                let outcome = self.unlock(&passphrase).map(|unlocked| {
                    info!(outcome = ?unlocked, "vault unlocked");
                    Response::Unlocked {
                        initialised: unlocked == Unlocked::Initialised,
                    }
                });
                (Caller::Admin, outcome)
            }
            Operation::Lock => {
                let mut vault = self.write();
                // Locking a locked vault is done already; the passphrase
                // could not be checked and need not be.
                if vault.is_locked() {
                    return (Caller::Admin, Ok(Response::Done));
                }
                let outcome = authorize_admin(&vault, &auth).map(|()| {
                    vault.lock();
                    info!("vault locked");
                    Response::Done
                });
                (Caller::Admin, outcome)
            }
            Operation::ItemRead { id } => self.read_item(&auth, id, peer),
            Operation::CheckAuth => {
                let vault = self.read();
                let caller = claimed(&auth);
                (caller, authenticate(&vault, &auth).map(|_| Response::Done))
            }
            operation => (Caller::Admin, self.admin(&auth, operation)),
        }
    }

    /// Runs the KDF under the shared lock, so that info and reads go on
    /// meanwhile; only initialising a new vault takes the exclusive lock
    /// for its whole duration.
    fn unlock(&self, passphrase: &crate::secret::SecretBytes) -> Result<Unlocked, VaultError> {
        let vault = self.read();
        if vault.is_locked() && vault.is_initialised() {
            let keys = vault.derive_keys(passphrase)?;
            drop(vault);
            return Ok(self.write().install(keys));
        }
        drop(vault);
        self.write().unlock(passphrase)
    }

    fn info(&self) -> Response {
        let vault = self.read();
        Response::Info(StoreInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            locked: vault.is_locked(),
            initialised: vault.is_initialised(),
            production: self.production,
        })
    }

    fn read_item(
        &self,
        auth: &Auth,
        id: Uuid,
        peer: IpAddr,
    ) -> (Caller, Result<Response, VaultError>) {
        let caller = claimed(auth);
        let outcome = self
            .read_checked(auth, id, peer)
            .map(|value| Response::Value { value });
        (caller, outcome)
    }

    /// In production mode a client read binds the item to the client's
    /// address the first time, and is refused from any other address
    /// after that. Admin reads are never bound.
    fn read_checked(&self, auth: &Auth, id: Uuid, peer: IpAddr) -> Result<SecretBytes, VaultError> {
        let vault = self.read();
        let Auth::Client { id: client, secret } = auth else {
            authenticate(&vault, auth)?;
            return vault.read_item(id);
        };
        // Same answer as for an item that does not exist.
        if !vault.verify_client_grant(*client, secret, id)? {
            return Err(VaultError::NotFound { kind: "item", id });
        }
        let record = vault.item(id)?;
        if !self.production {
            return vault.read_current(&record);
        }
        let peer = peer.to_canonical();
        match record.bound_peer {
            Some(bound) if bound == peer => vault.read_current(&record),
            Some(_) => Err(VaultError::PeerMismatch),
            None => {
                drop(vault);
                self.write().bind_item(id, peer)?;
                info!(%id, %peer, "item bound to its first reader");
                self.read().read_item(id)
            }
        }
    }

    /// The operations only the administrator may run. Those that only
    /// read share the vault with host reads; a long listing then holds
    /// no host up.
    fn admin(&self, auth: &Auth, operation: Operation) -> Result<Response, VaultError> {
        if is_read_only(&operation) {
            let vault = self.read();
            authorize_admin(&vault, auth)?;
            return admin_read(&vault, operation);
        }
        let mut vault = self.write();
        authorize_admin(&vault, auth)?;
        let response = match operation {
            Operation::ItemCreate { description, value } => {
                let id = vault.create_item(&description, &value)?;
                info!(%id, "item created");
                Response::ItemCreated { id }
            }
            Operation::ItemUpdate { id, value } => {
                let record = vault.update_item(id, &value)?;
                info!(%id, generation = record.generation, "item updated");
                Response::ItemUpdated {
                    generation: record.generation,
                }
            }
            Operation::ItemDelete { ids } => {
                vault.delete_items(&ids)?;
                info!(count = ids.len(), "items deleted");
                Response::Done
            }
            Operation::ClientCreate {
                description,
                grants,
            } => {
                let (id, secret) = vault.create_client(&description, &grants)?;
                info!(%id, grants = grants.len(), "client created");
                Response::ClientCreated { id, secret }
            }
            Operation::ClientGrant { id, items } => {
                vault.set_grants(id, &items, true)?;
                info!(%id, items = items.len(), "items granted");
                Response::Done
            }
            Operation::ClientRevoke { id, items } => {
                vault.set_grants(id, &items, false)?;
                info!(%id, items = items.len(), "grants revoked");
                Response::Done
            }
            Operation::ClientDelete { ids } => {
                vault.delete_clients(&ids)?;
                info!(count = ids.len(), "clients deleted");
                Response::Done
            }
            Operation::SetRecoveryRecipient { recipient } => {
                let values = vault.set_recovery_recipient(&recipient)? as u64;
                info!(values, "values re-encrypted to the new recovery recipient");
                Response::Reencrypted { values }
            }
            Operation::ItemUnbind { id } => {
                vault.unbind_item(id)?;
                info!(%id, "item unbound");
                Response::Done
            }
            other => {
                return Err(VaultError::Internal(format!(
                    "{} is not an admin operation",
                    other.name()
                )));
            }
        };
        Ok(response)
    }
}

/// Whether an admin operation only reads the vault.
fn is_read_only(operation: &Operation) -> bool {
    matches!(
        operation,
        Operation::ItemList { .. } | Operation::ClientList | Operation::ItemReadGeneration { .. }
    )
}

/// The admin operations that [`is_read_only`] names.
fn admin_read(vault: &Vault, operation: Operation) -> Result<Response, VaultError> {
    let response = match operation {
        Operation::ItemList { search } => {
            let listing = vault.list_items(search.as_deref())?;
            let items = listing.entries.into_iter().map(item_summary).collect();
            Response::Items {
                items,
                damaged: listing.damaged,
            }
        }
        Operation::ClientList => {
            let listing = vault.list_clients()?;
            let clients = listing
                .entries
                .into_iter()
                .map(|client| ClientSummary {
                    id: client.id,
                    description: client.description,
                    created: client.created,
                    grants: client.grants,
                })
                .collect();
            Response::Clients {
                clients,
                damaged: listing.damaged,
            }
        }
        Operation::ItemReadGeneration { id, generation } => {
            let value = vault.read_item_generation(id, generation)?;
            Response::Value { value }
        }
        other => {
            return Err(VaultError::Internal(format!(
                "{} is not a read-only admin operation",
                other.name()
            )));
        }
    };
    Ok(response)
}

fn claimed(auth: &Auth) -> Caller {
    match auth {
        Auth::None => Caller::Anonymous,
        Auth::Admin { .. } => Caller::Admin,
        Auth::Client { id, .. } => Caller::Client(*id),
    }
}

/// Checks whatever credentials the request carries.
fn authenticate(vault: &Vault, auth: &Auth) -> Result<Caller, VaultError> {
    match auth {
        Auth::None => {
            // Same answer as a wrong passphrase, but only once the vault
            // could have checked one.
            if vault.is_locked() {
                return Err(VaultError::Locked);
            }
            Err(VaultError::WrongPassphrase)
        }
        Auth::Admin { passphrase } => vault.verify_admin(passphrase).map(|()| Caller::Admin),
        Auth::Client { id, secret } => vault
            .verify_client(*id, secret)
            .map(|()| Caller::Client(*id)),
    }
}

fn authorize_admin(vault: &Vault, auth: &Auth) -> Result<(), VaultError> {
    if matches!(auth, Auth::None) && !vault.is_locked() {
        return Err(VaultError::AdminOnly);
    }
    match authenticate(vault, auth)? {
        Caller::Admin => Ok(()),
        _ => Err(VaultError::AdminOnly),
    }
}

fn item_summary(item: crate::vault::ItemInfo) -> ItemSummary {
    ItemSummary {
        id: item.id,
        description: item.description,
        created: item.created,
        updated: item.updated,
        generation: item.generation,
        bound_peer: item.bound_peer,
    }
}

fn is_auth_failure(err: &VaultError) -> bool {
    matches!(
        err,
        VaultError::WrongPassphrase | VaultError::BadClientCredentials | VaultError::AdminOnly
    )
}

/// Warns on the first failure of a window and when the limit is reached;
/// the failures between are counted at debug, so a guessing peer cannot
/// flood the log.
fn log_auth_failure(peer: SocketAddr, operation: &str, caller: Caller, recorded: Recorded) {
    match recorded {
        Recorded::First => warn!(%peer, operation, ?caller, "authentication failed"),
        Recorded::LimitReached => warn!(
            %peer,
            operation,
            limit = FREE_FAILURES,
            window_s = FAILURE_WINDOW.as_secs(),
            "authentication failed; this address is refused until its window ends"
        ),
        Recorded::Counted => debug!(%peer, operation, ?caller, "authentication failed"),
    }
}

fn log_failure(peer: SocketAddr, operation: &str, caller: Caller, err: &VaultError) {
    match err {
        VaultError::Integrity { .. } => error!(%peer, operation, error = %err, "integrity failure"),
        VaultError::Io { .. } | VaultError::Setup(_) | VaultError::Internal(_) => {
            error!(%peer, operation, error = %err, "request failed")
        }
        VaultError::PeerMismatch => warn!(%peer, operation, ?caller, "refused: peer mismatch"),
        _ => debug!(%peer, operation, ?caller, error = %err, "request refused"),
    }
}

/// The response for a failure. Clients learn only "locked" or
/// "unauthorized"; the administrator is told what went wrong.
fn error_response(caller: Caller, err: &VaultError) -> Response {
    let kind = match err {
        VaultError::Locked => ErrorKind::Locked,
        VaultError::WrongPassphrase | VaultError::BadClientCredentials | VaultError::AdminOnly => {
            ErrorKind::Unauthorized
        }
        VaultError::NotFound { .. } => ErrorKind::NotFound,
        VaultError::Integrity { .. } => ErrorKind::Integrity,
        VaultError::Invalid(_) => ErrorKind::BadRequest,
        VaultError::InUse { .. } | VaultError::Io { .. } | VaultError::Setup(_) => {
            ErrorKind::Internal
        }
        VaultError::Internal(_) => ErrorKind::Internal,
        VaultError::PeerMismatch => ErrorKind::PeerMismatch,
    };
    match (caller, kind) {
        (_, ErrorKind::Locked) => Response::error(kind, err.to_string()),
        // Only an authenticated client of an existing item gets this far.
        (_, ErrorKind::PeerMismatch) => Response::error(kind, err.to_string()),
        (Caller::Client(_) | Caller::Anonymous, _) => Response::error(
            ErrorKind::Unauthorized,
            "unauthorized: the client credentials do not grant this",
        ),
        (Caller::Admin, ErrorKind::Internal) if err.is_storage_full() => Response::error(
            kind,
            "the store's storage is full; nothing was changed (free space on it and retry)",
        ),
        (Caller::Admin, ErrorKind::Internal) => {
            Response::error(kind, "internal error in credstore; its log has the details")
        }
        (Caller::Admin, _) => Response::error(kind, err.to_string()),
    }
}
