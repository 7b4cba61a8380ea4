//! Command-line interface of `cred`: clap types only.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};
use uuid::Uuid;

use credstore::tls::Fingerprint;

const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  any other failure (a damaged record, a local file that cannot be read)
  2  usage error, or a prompt needed without a terminal
  3  cannot connect to the store, TLS failed (a fingerprint mismatch too), or no answer in time
  4  unauthorized: wrong passphrase or client credentials
  5  the store is locked
  6  not found
  7  an integrity check failed in the store (also: item list found damaged records)";

/// Client of the credstore secret store, for administrators and backup hosts
#[derive(Debug, Parser)]
#[command(name = "cred", version, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    /// Directory of config.toml [default: $XDG_CONFIG_HOME/credstore]
    #[arg(long, global = true, value_name = "DIR", env = "CRED_CONFIG_DIR")]
    pub(crate) config_dir: Option<PathBuf>,

    #[command(flatten)]
    pub(crate) passphrase: PassphraseArgs,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Where an admin command gets the master passphrase; a prompt on the
/// terminal when none is given.
#[derive(Debug, Args)]
pub(crate) struct PassphraseArgs {
    /// Read the admin passphrase from FILE (one trailing newline is dropped)
    #[arg(long, global = true, value_name = "FILE", env = "CRED_PASSPHRASE_FILE")]
    pub(crate) passphrase_file: Option<PathBuf>,

    /// Read the admin passphrase from standard input
    #[arg(long, global = true, conflicts_with = "passphrase_file")]
    pub(crate) passphrase_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Say which store to use and how to trust its certificate
    Configure(ConfigureArgs),
    /// Save this host's client credentials
    Login(LoginArgs),
    /// Store-wide commands: info, unlock, lock
    #[command(subcommand)]
    Store(StoreCommand),
    /// Create, list, read, update and delete items
    #[command(subcommand)]
    Item(ItemCommand),
    /// Create, list and delete client credentials
    #[command(subcommand)]
    Client(ClientCommand),
    /// Mount a read-only filesystem of short-lived secret files (foreground)
    Mount(MountArgs),
}

#[derive(Debug, Args)]
pub(crate) struct MountArgs {
    /// An existing empty directory to mount on
    pub(crate) mountpoint: PathBuf,

    /// Show item ITEM_ID as the file NAME (may contain /); repeatable
    #[arg(long = "file", value_name = "NAME=ITEM_ID")]
    pub(crate) files: Vec<String>,

    /// A TOML file of [[file]] tables: name, item, and optional mode, uid,
    /// gid, ttl, allow_uids, allow_gids
    #[arg(long, value_name = "FILE.toml")]
    pub(crate) map: Option<PathBuf>,

    /// Seconds a fetched value is kept before it is wiped
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub(crate) ttl: u64,

    /// Seconds an open waits for the store before failing with EIO
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub(crate) timeout: u64,

    /// Only this uid may open the files (repeatable; with --allow-gid, either suffices)
    #[arg(long = "allow-uid", value_name = "UID")]
    pub(crate) allow_uids: Vec<u32>,

    /// Only members of this group may open the files (repeatable)
    #[arg(long = "allow-gid", value_name = "GID")]
    pub(crate) allow_gids: Vec<u32>,

    /// Let users other than the mounting one in (needs user_allow_other
    /// in /etc/fuse.conf unless mounting as root)
    #[arg(long)]
    pub(crate) allow_other: bool,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("trust").args(["fingerprint", "ca_file", "no_tls"])))]
pub(crate) struct ConfigureArgs {
    /// Host name or address of the store
    #[arg(long)]
    pub(crate) host: Option<String>,

    /// Port of the store
    #[arg(long)]
    pub(crate) port: Option<u16>,

    /// Pin the store's certificate by its SHA-256 fingerprint
    #[arg(long, value_name = "SHA256", value_parser = parse_fingerprint)]
    pub(crate) fingerprint: Option<Fingerprint>,

    /// Trust the store's certificate through this CA certificate file
    #[arg(long, value_name = "FILE")]
    pub(crate) ca_file: Option<PathBuf>,

    /// Talk plain TCP to a development store (secrets cross the network in the clear)
    #[arg(long)]
    pub(crate) no_tls: bool,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("secret").args(["client_secret_file", "client_secret_stdin"])))]
pub(crate) struct LoginArgs {
    /// The client id printed by cred client create
    #[arg(long, value_name = "ID")]
    pub(crate) client_id: Option<Uuid>,

    /// Read the client secret from FILE
    #[arg(long, value_name = "FILE")]
    pub(crate) client_secret_file: Option<PathBuf>,

    /// Read the client secret from standard input
    #[arg(long)]
    pub(crate) client_secret_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum StoreCommand {
    /// Show the store's version, lock state and mode
    Info(JsonArg),
    /// Unlock the store; the first unlock of an empty store sets its passphrase
    Unlock,
    /// Lock the store: nothing can be read until it is unlocked again
    Lock,
    /// Make a recovery identity here and encrypt every value to it as well
    RecoveryRecipient {
        /// Write the identity to FILE (mode 0600) instead of showing it
        #[arg(long, value_name = "FILE")]
        identity_out: Option<PathBuf>,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
    },
    /// Write every item, values included, to a JSON file (mode 0600)
    Export {
        /// The file to write; it must not exist
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Indent the JSON
        #[arg(long)]
        pretty: bool,
        /// Do not ask for the two confirmations
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct JsonArg {
    /// Print JSON
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("value").args(["value_file", "value_stdin"])))]
pub(crate) struct ValueArgs {
    /// Read the value from FILE, byte for byte
    #[arg(long, value_name = "FILE")]
    pub(crate) value_file: Option<PathBuf>,

    /// Read the value from standard input, byte for byte
    #[arg(long)]
    pub(crate) value_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ItemCommand {
    /// Store a new secret and print its id
    Create {
        /// What the secret is for
        #[arg(short, long)]
        description: String,
        #[command(flatten)]
        value: ValueArgs,
    },
    /// Give an item a new value; the old one is kept in its history
    Update {
        id: Uuid,
        #[command(flatten)]
        value: ValueArgs,
    },
    /// List items, optionally only those whose description contains SEARCH
    List {
        search: Option<String>,
        /// Print only the ids
        #[arg(short, long, conflicts_with = "json")]
        quiet: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Write an item's value to standard output, exactly as stored
    Read {
        id: Uuid,
        /// Read this previous value from the item's history (admin only)
        #[arg(long, value_name = "N")]
        generation: Option<u64>,
    },
    /// Let the next client to read an item bind it to its address again
    Unbind { id: Uuid },
    /// Delete items
    Delete {
        #[arg(required = true)]
        ids: Vec<Uuid>,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ClientCommand {
    /// Create client credentials and print their id and secret (shown once)
    Create {
        /// Which host or service the client is for
        #[arg(short, long)]
        description: String,
        /// An item the client may read (repeatable); without any it reads nothing
        #[arg(long = "grant", value_name = "ITEM")]
        grants: Vec<Uuid>,
        /// Print JSON with id and secret
        #[arg(long)]
        json: bool,
    },
    /// List clients
    List {
        /// Print only the ids
        #[arg(short, long, conflicts_with = "json")]
        quiet: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Let a client read items
    Grant {
        id: Uuid,
        #[arg(required = true, value_name = "ITEM")]
        items: Vec<Uuid>,
    },
    /// Stop a client from reading items
    Revoke {
        id: Uuid,
        #[arg(required = true, value_name = "ITEM")]
        items: Vec<Uuid>,
    },
    /// Delete clients; their credentials stop working at once
    Delete {
        #[arg(required = true)]
        ids: Vec<Uuid>,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
    },
}

fn parse_fingerprint(text: &str) -> Result<Fingerprint, String> {
    text.parse()
}
