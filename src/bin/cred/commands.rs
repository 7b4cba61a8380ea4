//! One function per `cred` subcommand.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::json;

use credstore::client::config::{self, ClientConfig, ClientCredentials, ServerEntry, Trust};
use credstore::client::{ClientError, Connection};
use credstore::protocol::{Auth, ErrorKind, ItemSummary, Operation, Request, Response, StoreInfo};

use crate::cli::{
    Cli, ClientCommand, Command, ConfigureArgs, ItemCommand, LoginArgs, PassphraseArgs,
    StoreCommand,
};
use crate::input;
use crate::output::{print_table, sanitize};

/// What every command needs: where the config is and how to get the
/// admin passphrase.
pub(crate) struct Session {
    dir: PathBuf,
    passphrase: PassphraseArgs,
}

pub(crate) fn run(cli: Cli) -> Result<()> {
    let dir = match cli.config_dir {
        Some(dir) => dir,
        None => config::default_dir()?,
    };
    let session = Session {
        dir,
        passphrase: cli.passphrase,
    };
    match cli.command {
        Command::Configure(args) => configure(&session, args),
        Command::Login(args) => login(&session, args),
        Command::Store(command) => store(&session, command),
        Command::Item(command) => item(&session, command),
        Command::Client(command) => client(&session, command),
        Command::Mount(args) => {
            let config = session.config()?;
            crate::mount::run(config, &args)
        }
    }
}

impl Session {
    fn config(&self) -> Result<ClientConfig> {
        ClientConfig::load(&self.dir)
    }

    fn connect(&self, config: &ClientConfig) -> Result<Connection> {
        let server = config.server()?;
        Ok(Connection::open(server, &server.trust()?)?)
    }

    /// Sends one request over a new connection.
    pub(crate) fn call(&self, auth: Auth, operation: Operation) -> Result<Response> {
        let config = self.config()?;
        let mut connection = self.connect(&config)?;
        Ok(connection.call(&Request { auth, operation })?)
    }

    pub(crate) fn admin(&self) -> Result<Auth> {
        Ok(Auth::Admin {
            passphrase: input::passphrase(&self.passphrase, false)?,
        })
    }

    /// Admin credentials when a passphrase source was given, else this
    /// host's client credentials, else a passphrase prompt.
    fn reader(&self, config: &ClientConfig) -> Result<Auth> {
        let explicit =
            self.passphrase.passphrase_file.is_some() || self.passphrase.passphrase_stdin;
        match &config.client {
            Some(client) if !explicit => Ok(Auth::Client {
                id: client.id,
                secret: client.secret(),
            }),
            _ => self.admin(),
        }
    }
}

fn configure(session: &Session, args: ConfigureArgs) -> Result<()> {
    let host = match args.host {
        Some(host) => host,
        None => input::ask_line("Store host: ", "store host", "--host HOST")?,
    };
    let port = match args.port {
        Some(port) => port,
        None => input::ask_line("Store port: ", "store port", "--port PORT")?
            .parse()
            .context("the port must be a number from 1 to 65535")?,
    };
    let trust = if let Some(fingerprint) = args.fingerprint {
        Trust::Fingerprint(fingerprint)
    } else if let Some(path) = args.ca_file {
        let path = std::path::absolute(&path)
            .with_context(|| format!("cannot resolve {}", path.display()))?;
        Trust::CaFile(path)
    } else if args.no_tls {
        Trust::PlainTcp
    } else {
        probe_trust(&host, port)?
    };

    // A store that answers wrongly is refused; one that is not up yet
    // (provisioning a host before its store) is saved with a warning.
    let entry = ServerEntry::new(host, port, &trust);
    let reached = Connection::open(&entry, &trust)
        .and_then(|mut connection| connection.call(&info_request()));
    match reached {
        Ok(Response::Info(info)) => println!("reached {}", describe(&info)),
        Ok(_) => bail!(ClientError::UnexpectedResponse),
        Err(err @ ClientError::Connect { .. }) => {
            eprintln!("cred: warning: saving although the store cannot be reached now: {err}")
        }
        Err(err) => return Err(anyhow::Error::new(err).context("nothing saved")),
    }

    let mut config = session.config()?;
    config.server = Some(entry);
    config.save(&session.dir)?;
    println!("saved {}", session.dir.join(config::CONFIG_FILE).display());
    Ok(())
}

/// Connects to a new store to show what it presents, and asks how to
/// trust it.
fn probe_trust(host: &str, port: u16) -> Result<Trust> {
    if !input::has_terminal() {
        return Err(input::UsageError(
            "no way to trust the store given and no terminal to ask on; pass --fingerprint \
             SHA256, --ca-file FILE or --no-tls"
                .into(),
        )
        .into());
    }
    let probe = ServerEntry::new(host.to_owned(), port, &Trust::PlainTcp);
    let (fingerprint, info) = match Connection::probe(&probe) {
        Ok((Some(fingerprint), Response::Info(info))) => (fingerprint, info),
        Ok(_) => bail!(ClientError::UnexpectedResponse),
        Err(tls_err) => {
            let plain = Connection::open(&probe, &Trust::PlainTcp)
                .and_then(|mut connection| connection.call(&info_request()));
            let Ok(Response::Info(info)) = plain else {
                return Err(tls_err.into());
            };
            println!("{host}:{port} speaks plain TCP: {}", describe(&info));
            input::confirm("talk to it without TLS, secrets in the clear", false)?;
            return Ok(Trust::PlainTcp);
        }
    };
    println!("{host}:{port} is {}", describe(&info));
    println!("its certificate has the SHA-256 fingerprint\n  {fingerprint}");
    println!("compare it with the one credstore gen-cert printed on the store's host");
    input::confirm("pin this fingerprint", false)?;
    Ok(Trust::Fingerprint(fingerprint))
}

fn info_request() -> Request {
    Request {
        auth: Auth::None,
        operation: Operation::Info,
    }
}

fn describe(info: &StoreInfo) -> String {
    let state = match (info.initialised, info.locked) {
        (false, _) => "not initialised",
        (true, true) => "locked",
        (true, false) => "unlocked",
    };
    let mode = if info.production {
        "production"
    } else {
        "development"
    };
    format!("credstore {}, {state}, {mode} mode", info.version)
}

fn login(session: &Session, args: LoginArgs) -> Result<()> {
    let id = match args.client_id {
        Some(id) => id,
        None => input::ask_line("Client id: ", "client id", "--client-id ID")?
            .parse()
            .context("the client id must be a UUID as cred client create printed it")?,
    };
    let secret =
        input::client_secret(args.client_secret_file.as_deref(), args.client_secret_stdin)?;
    let credentials = ClientCredentials::new(id, &secret)?;

    let mut config = session.config()?;
    let checked = session.connect(&config).and_then(|mut connection| {
        let request = Request {
            auth: Auth::Client { id, secret },
            operation: Operation::CheckAuth,
        };
        Ok(connection.call(&request)?)
    });
    match checked {
        Ok(_) => {}
        Err(err) => match err
            .downcast_ref::<ClientError>()
            .and_then(ClientError::kind)
        {
            Some(ErrorKind::Unauthorized) => {
                return Err(
                    err.context("the store does not accept these credentials; nothing saved")
                );
            }
            _ => eprintln!("cred: warning: saving the credentials unchecked: {err:#}"),
        },
    }

    config.client = Some(credentials);
    config.save(&session.dir)?;
    println!("logged in as client {id}");
    Ok(())
}

fn store(session: &Session, command: StoreCommand) -> Result<()> {
    match command {
        StoreCommand::Info(args) => {
            let Response::Info(info) = session.call(Auth::None, Operation::Info)? else {
                bail!(ClientError::UnexpectedResponse);
            };
            if args.json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                println!("version: {}", info.version);
                println!("initialised: {}", yes_no(info.initialised));
                println!("locked: {}", yes_no(info.locked));
                println!("production: {}", yes_no(info.production));
            }
        }
        StoreCommand::Unlock => {
            let Response::Info(info) = session.call(Auth::None, Operation::Info)? else {
                bail!(ClientError::UnexpectedResponse);
            };
            let passphrase = input::passphrase(&session.passphrase, !info.initialised)?;
            match session.call(Auth::None, Operation::Unlock { passphrase })? {
                Response::Unlocked { initialised: true } => {
                    println!("initialised a new vault with this passphrase; it is unlocked")
                }
                Response::Unlocked { initialised: false } => println!("unlocked"),
                _ => bail!(ClientError::UnexpectedResponse),
            }
        }
        StoreCommand::Lock => {
            expect_done(session.call(session.admin()?, Operation::Lock)?)?;
            println!("locked");
        }
        StoreCommand::RecoveryRecipient { identity_out, yes } => {
            crate::recovery::set_recipient(session, identity_out.as_deref(), yes)?
        }
        StoreCommand::Export {
            output,
            pretty,
            yes,
        } => crate::recovery::export(session, &output, pretty, yes)?,
    }
    Ok(())
}

fn item(session: &Session, command: ItemCommand) -> Result<()> {
    match command {
        ItemCommand::Create { description, value } => {
            let value = input::value(&value)?;
            let operation = Operation::ItemCreate { description, value };
            let Response::ItemCreated { id } = session.call(session.admin()?, operation)? else {
                bail!(ClientError::UnexpectedResponse);
            };
            println!("{id}");
        }
        ItemCommand::Update { id, value } => {
            let value = input::value(&value)?;
            let operation = Operation::ItemUpdate { id, value };
            let Response::ItemUpdated { .. } = session.call(session.admin()?, operation)? else {
                bail!(ClientError::UnexpectedResponse);
            };
        }
        ItemCommand::List {
            search,
            quiet,
            json,
        } => {
            let operation = Operation::ItemList { search };
            let Response::Items { items, damaged } = session.call(session.admin()?, operation)?
            else {
                bail!(ClientError::UnexpectedResponse);
            };
            print_items(&items, quiet, json)?;
            fail_if_damaged(&damaged)?;
        }
        ItemCommand::Read { id, generation } => {
            let config = session.config()?;
            let (auth, operation) = match generation {
                Some(generation) => (
                    session.admin()?,
                    Operation::ItemReadGeneration { id, generation },
                ),
                None => (session.reader(&config)?, Operation::ItemRead { id }),
            };
            let mut connection = session.connect(&config)?;
            let request = Request { auth, operation };
            let Response::Value { value } = connection.call(&request)? else {
                bail!(ClientError::UnexpectedResponse);
            };
            write_stdout(value.expose())?;
        }
        ItemCommand::Unbind { id } => {
            expect_done(session.call(session.admin()?, Operation::ItemUnbind { id })?)?;
        }
        ItemCommand::Delete { ids, yes } => {
            input::confirm(
                &format!("delete {} item(s) and their history", ids.len()),
                yes,
            )?;
            expect_done(session.call(session.admin()?, Operation::ItemDelete { ids })?)?;
        }
    }
    Ok(())
}

fn client(session: &Session, command: ClientCommand) -> Result<()> {
    match command {
        ClientCommand::Create {
            description,
            grants,
            json,
        } => {
            let operation = Operation::ClientCreate {
                description,
                grants,
            };
            let Response::ClientCreated { id, secret } =
                session.call(session.admin()?, operation)?
            else {
                bail!(ClientError::UnexpectedResponse);
            };
            let secret = std::str::from_utf8(secret.expose())
                .context("the store sent a secret that is not text")?;
            if json {
                println!("{}", json!({ "id": id, "secret": secret }));
            } else {
                println!("id: {id}\nsecret: {secret}");
                eprintln!(
                    "the secret is shown only now; on the host run \
                     cred login --client-id {id} --client-secret-stdin"
                );
            }
        }
        ClientCommand::List { quiet, json } => {
            let Response::Clients { clients, damaged } =
                session.call(session.admin()?, Operation::ClientList)?
            else {
                bail!(ClientError::UnexpectedResponse);
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&clients)?);
            } else if quiet {
                let ids: String = clients
                    .iter()
                    .map(|client| format!("{}\n", client.id))
                    .collect();
                write_stdout(ids.as_bytes())?;
            } else {
                let rows = clients
                    .iter()
                    .map(|client| {
                        vec![
                            client.id.to_string(),
                            timestamp(client.created),
                            sanitize(&client.description),
                        ]
                    })
                    .collect();
                print_table(&["ID", "CREATED", "DESCRIPTION"], rows)?;
            }
            fail_if_damaged(&damaged)?;
        }
        ClientCommand::Grant { id, items } => {
            expect_done(session.call(session.admin()?, Operation::ClientGrant { id, items })?)?;
        }
        ClientCommand::Revoke { id, items } => {
            expect_done(session.call(session.admin()?, Operation::ClientRevoke { id, items })?)?;
        }
        ClientCommand::Delete { ids, yes } => {
            input::confirm(&format!("delete {} client(s)", ids.len()), yes)?;
            expect_done(session.call(session.admin()?, Operation::ClientDelete { ids })?)?;
        }
    }
    Ok(())
}

fn print_items(items: &[ItemSummary], quiet: bool, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(items)?);
    } else if quiet {
        let ids: String = items.iter().map(|item| format!("{}\n", item.id)).collect();
        write_stdout(ids.as_bytes())?;
    } else {
        let rows = items
            .iter()
            .map(|item| {
                vec![
                    item.id.to_string(),
                    timestamp(item.updated),
                    sanitize(&item.description),
                ]
            })
            .collect();
        print_table(&["ID", "UPDATED", "DESCRIPTION"], rows)?;
    }
    Ok(())
}

fn expect_done(response: Response) -> Result<()> {
    match response {
        Response::Done => Ok(()),
        _ => bail!(ClientError::UnexpectedResponse),
    }
}

/// After a listing is printed: names each record that failed its check and
/// fails, so that scripts notice the damage.
fn fail_if_damaged(damaged: &[String]) -> Result<()> {
    if damaged.is_empty() {
        return Ok(());
    }
    for name in damaged {
        eprintln!(
            "cred: record {} failed its integrity check and is not listed",
            sanitize(name)
        );
    }
    Err(ClientError::Server {
        kind: ErrorKind::Integrity,
        message: format!(
            "{} damaged record(s) in the store; its log has the details",
            damaged.len()
        ),
    }
    .into())
}

/// Writes to stdout; a reader that went away is not an error.
fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(err) if err.kind() != io::ErrorKind::BrokenPipe => {
            Err(err).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}

fn timestamp(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}
