//! `credstore-load`: concurrent clients against one credstore, each level
//! of concurrency after the other, printing requests per second, p50 and
//! p99 latency and the error count per level.
//!
//! A client is one thread with blocking I/O, as `cred` is. In `persistent`
//! mode each client opens one connection before the clock starts and
//! sends every request on it; in `reconnect` mode each request pays for a
//! new TCP connection and TLS handshake, as one `cred item read` does.
//!
//! The `info` operation is the baseline: the same connection, handshake,
//! sealed frame and trip through the server's request path, with no
//! credentials and no vault work. Dividing item-read throughput by info
//! throughput at the same level and mode leaves what authentication and
//! the vault cost, and cancels out the load generator, which shares the
//! machine's cores with the server.

use std::process::ExitCode;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;
use bench::{StoreArgs, Target, client_auth};
use clap::{Parser, ValueEnum};
use credstore::client::Connection;
use credstore::protocol::{Auth, Operation, Request, Response};
use uuid::Uuid;

/// Drives a credstore with concurrent clients and reports throughput and
/// latency per level
#[derive(Debug, Parser)]
#[command(name = "credstore-load")]
struct Cli {
    #[command(flatten)]
    store: StoreArgs,
    /// The client to read as; else the one saved in --config-dir
    #[arg(long, requires = "client_secret_file")]
    client_id: Option<Uuid>,
    /// A file holding the client's secret
    #[arg(long, requires = "client_id")]
    client_secret_file: Option<std::path::PathBuf>,
    /// The item to read; needed by the read operation
    #[arg(long)]
    item: Option<Uuid>,
    /// Numbers of concurrent clients, run one after another
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128")]
    concurrency: Vec<usize>,
    /// How long each level runs
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Requests per level, shared by its clients, instead of a duration
    #[arg(long)]
    requests: Option<u64>,
    /// How clients use connections; a list runs each
    #[arg(long, value_enum, value_delimiter = ',', default_value = "persistent")]
    mode: Vec<Mode>,
    /// What each request asks; a list runs each at every level
    #[arg(long, value_enum, value_delimiter = ',', default_value = "read")]
    operation: Vec<Op>,
    /// Print tab-separated values with a header line, for scripts
    #[arg(long)]
    tsv: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// One connection per client, opened before timing starts
    Persistent,
    /// A new connection for every request
    Reconnect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Op {
    /// `Info` without credentials: the protocol floor
    Info,
    /// `ItemRead` with client credentials
    Read,
}

/// What every client of one level does.
struct Plan<'a> {
    target: &'a Target,
    mode: Mode,
    op: Op,
    item: Option<Uuid>,
    auth: Option<&'a Auth>,
}

/// When a level ends.
enum Budget {
    Time(Duration),
    /// Requests not yet taken by any client.
    Count(AtomicU64),
}

/// What one client saw.
#[derive(Default)]
struct Sample {
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
}

/// One level's figures.
struct Level {
    mode: Mode,
    op: Op,
    clients: usize,
    done: usize,
    errors: u64,
    per_second: f64,
    p50: Duration,
    p99: Duration,
    first_error: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(errors) => {
            eprintln!("credstore-load: {errors} requests failed");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("credstore-load: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs every mode, level and operation; answers the number of errors.
fn run(cli: &Cli) -> Result<u64> {
    let target = cli.store.target()?;
    let reads = cli.operation.contains(&Op::Read);
    if reads && cli.item.is_none() {
        anyhow::bail!("the read operation needs --item");
    }
    let auth = reads
        .then(|| client_auth(&cli.store, cli.client_id, cli.client_secret_file.as_deref()))
        .transpose()?;
    print_header(cli.tsv);
    let mut errors = 0;
    for &mode in &cli.mode {
        for &clients in &cli.concurrency {
            for &op in &cli.operation {
                let plan = Plan {
                    target: &target,
                    mode,
                    op,
                    item: cli.item,
                    auth: auth.as_ref(),
                };
                let level = run_level(&plan, clients.max(1), &budget(cli));
                print_level(&level, cli.tsv);
                errors += level.errors;
            }
        }
    }
    Ok(errors)
}

fn budget(cli: &Cli) -> Budget {
    match cli.requests {
        Some(count) => Budget::Count(AtomicU64::new(count)),
        None => Budget::Time(cli.duration),
    }
}

/// Starts `clients` threads, lets them go together and gathers them.
fn run_level(plan: &Plan, clients: usize, budget: &Budget) -> Level {
    let start = Barrier::new(clients + 1);
    let (samples, elapsed) = thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                let request = plan.request();
                thread::Builder::new()
                    .spawn_scoped(scope, || client(plan, request, &start, budget))
                    .unwrap_or_else(|err| {
                        // The clients already started wait at the barrier
                        // for one that never comes: only exiting ends them.
                        eprintln!("credstore-load: cannot start a client thread: {err}");
                        std::process::exit(2)
                    })
            })
            .collect();
        start.wait();
        let began = Instant::now();
        let samples: Vec<Sample> = workers
            .into_iter()
            .map(|worker| worker.join().expect("a client thread panicked"))
            .collect();
        (samples, began.elapsed())
    });
    summarise(plan, clients, samples, elapsed)
}

/// One client: connects (persistent mode), waits for the others, then
/// sends requests until the budget is spent.
fn client(plan: &Plan, request: Request, start: &Barrier, budget: &Budget) -> Sample {
    let mut sample = Sample::default();
    let mut connection = None;
    if plan.mode == Mode::Persistent {
        // One request before the clock starts, so that the first timed one
        // does not pay for anything the connection sets up lazily.
        let warm = plan.call(&mut connection, &request);
        sample.record_error(warm.err());
    }
    start.wait();
    let deadline = Instant::now() + budget.duration();
    while budget.take(deadline) {
        let began = Instant::now();
        if plan.mode == Mode::Reconnect {
            connection = None;
        }
        match plan.call(&mut connection, &request) {
            Ok(()) => sample.latencies.push(began.elapsed()),
            Err(err) => {
                connection = None;
                sample.record_error(Some(err));
            }
        }
    }
    sample
}

impl Plan<'_> {
    /// A request of this plan's operation; each client gets its own.
    fn request(&self) -> Request {
        let (auth, operation) = match (self.op, self.auth, self.item) {
            (Op::Read, Some(auth), Some(id)) => (auth.duplicate(), Operation::ItemRead { id }),
            _ => (Auth::None, Operation::Info),
        };
        Request { auth, operation }
    }

    /// Sends `request`, opening the connection first when there is none,
    /// and checks that the answer is the one the operation expects.
    fn call(&self, connection: &mut Option<Connection>, request: &Request) -> Result<()> {
        let open = match connection {
            Some(open) => open,
            None => connection.insert(Connection::open(&self.target.server, &self.target.trust)?),
        };
        match (self.op, open.call(request)?) {
            (Op::Info, Response::Info(_)) | (Op::Read, Response::Value { .. }) => Ok(()),
            _ => anyhow::bail!("the store answered with another kind of response"),
        }
    }
}

impl Budget {
    /// How long the level runs; a count has no time limit.
    fn duration(&self) -> Duration {
        match self {
            Self::Time(duration) => *duration,
            Self::Count(_) => Duration::from_secs(24 * 3600),
        }
    }

    /// Whether the caller may send one more request.
    fn take(&self, deadline: Instant) -> bool {
        match self {
            Self::Time(_) => Instant::now() < deadline,
            Self::Count(left) => left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
        }
    }
}

impl Sample {
    /// Counts an error, keeping the first one's message (which names no
    /// secret: client errors never quote a request).
    fn record_error(&mut self, err: Option<anyhow::Error>) {
        let Some(err) = err else { return };
        self.errors += 1;
        self.first_error.get_or_insert_with(|| format!("{err:#}"));
    }
}

fn summarise(plan: &Plan, clients: usize, samples: Vec<Sample>, elapsed: Duration) -> Level {
    let errors = samples.iter().map(|sample| sample.errors).sum();
    let first_error = samples.iter().find_map(|sample| sample.first_error.clone());
    let mut latencies: Vec<Duration> = samples
        .into_iter()
        .flat_map(|sample| sample.latencies)
        .collect();
    latencies.sort_unstable();
    Level {
        mode: plan.mode,
        op: plan.op,
        clients,
        done: latencies.len(),
        errors,
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        first_error,
    }
}

/// The nearest-rank percentile of sorted latencies; zero when empty.
fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let rank = (fraction * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1))
        .copied()
        .unwrap_or_default()
}

fn print_header(tsv: bool) {
    let columns = [
        "mode", "op", "clients", "requests", "req/s", "p50 ms", "p99 ms", "errors",
    ];
    match tsv {
        true => println!("{}", columns.join("\t")),
        false => println!(
            "{:<10} {:<4} {:>7} {:>9} {:>10} {:>8} {:>8} {:>6}",
            columns[0],
            columns[1],
            columns[2],
            columns[3],
            columns[4],
            columns[5],
            columns[6],
            columns[7]
        ),
    }
}

fn print_level(level: &Level, tsv: bool) {
    let mode = name(level.mode);
    let op = name(level.op);
    let (p50, p99) = (millis(level.p50), millis(level.p99));
    match tsv {
        true => println!(
            "{mode}\t{op}\t{}\t{}\t{:.1}\t{p50:.3}\t{p99:.3}\t{}",
            level.clients, level.done, level.per_second, level.errors
        ),
        false => println!(
            "{mode:<10} {op:<4} {:>7} {:>9} {:>10.1} {p50:>8.3} {p99:>8.3} {:>6}",
            level.clients, level.done, level.per_second, level.errors
        ),
    }
    if let Some(err) = &level.first_error {
        eprintln!("credstore-load: {mode} {op} x{}: {err}", level.clients);
    }
}

fn name(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|value| value.get_name().to_owned())
        .unwrap_or_default()
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
