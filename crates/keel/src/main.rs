//! `keel`: the one binary. `keel serve` runs a broker; `topic`, `produce` and `consume` are
//! Kafka clients (librdkafka through the rdkafka crate), so they work against any
//! Kafka-compatible broker.
#![allow(clippy::print_stdout)] // a command-line program prints

mod check_cmd;
mod client;
mod cluster_cmd;
mod group;
mod sim_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keel_broker::{BrokerConfig, RunningNode};

#[derive(Debug, Parser)]
#[command(name = "keel", version, about = "keel: a Kafka-compatible, durable event-streaming log")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per run
enum Command {
    /// Run a node: with no flags a cluster of one (data in ./keel-data, Kafka listener
    /// 127.0.0.1:9092, cluster port 127.0.0.1:9093).
    Serve(ServeArgs),
    /// Create, list, describe or delete topics.
    #[command(subcommand)]
    Topic(client::TopicCommand),
    /// Produce lines from standard input, one record per line.
    Produce(client::ProduceArgs),
    /// Consume records and print them.
    Consume(client::ConsumeArgs),
    /// List consumer groups, describe one with its lag, reset its offsets.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Inspect a keel cluster.
    #[command(subcommand)]
    Cluster(cluster_cmd::ClusterCommand),
    /// Benchmark any Kafka-compatible cluster (OpenMessaging Benchmark style); see bench/README.md.
    Bench(keel_bench::cli::BenchArgs),
    /// Model-check a protocol core: every interleaving of a small cluster, safety and liveness.
    #[command(subcommand)]
    Check(check_cmd::CheckCommand),
    /// Simulate a protocol core deterministically from a seed, with faults; see docs/simulator.md.
    #[command(subcommand)]
    Sim(sim_cmd::SimCommand),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML config file; flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where partition logs live.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Kafka listener address.
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Address clients are told to connect to (default: the listen address).
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// A Kafka listener, `PLAINTEXT://IP:PORT` or `SASL_PLAINTEXT://IP:PORT` (Kafka's
    /// `listeners`); repeat for several. Replaces --listen.
    #[arg(long = "listener", value_name = "PROTOCOL://IP:PORT")]
    listeners: Vec<String>,
    /// Log JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    /// This node's id (Kafka's `node.id`), in a cluster.
    #[arg(long, value_name = "ID")]
    node_id: Option<i32>,
    /// The controller quorum, `1@127.0.0.1:9093,2@127.0.0.1:9193,...` (Kafka's
    /// `controller.quorum.voters`): forms or joins a cluster. Without it this node is a
    /// cluster of one.
    #[arg(long, value_name = "ID@HOST:PORT,...")]
    controllers: Option<String>,
    /// The cluster port of a cluster of one (without --controllers); default 127.0.0.1:9093.
    #[arg(long, value_name = "HOST:PORT")]
    controller_listen: Option<String>,
    /// `broker,controller` (default for a node listed in --controllers) or `broker`.
    #[arg(long, value_name = "ROLES")]
    process_roles: Option<String>,
    /// This broker's rack (Kafka's `broker.rack`).
    #[arg(long, value_name = "RACK")]
    rack: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)).map_err(|e| e.to_string()),
        Command::Topic(command) => runtime.block_on(client::topic(command)),
        Command::Produce(args) => runtime.block_on(client::produce(args)),
        Command::Consume(args) => runtime.block_on(client::consume(args)),
        Command::Group(command) => runtime.block_on(group::group(command)),
        Command::Cluster(command) => runtime.block_on(cluster_cmd::cluster(command)),
        // Runs its clients on threads of its own, outside the async runtime.
        Command::Bench(args) => keel_bench::cli::main(args),
        Command::Check(command) => check_cmd::check(command),
        Command::Sim(command) => sim_cmd::sim(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// `NAME:PASSWORD`: SCRAM credentials for a first user, created at start if no user has any.
const BOOTSTRAP_USER_ENV: &str = "KEEL_BOOTSTRAP_USER";

/// The failure to report when `keel serve` stops: a config, start-up or shutdown error.
type ServeError = Box<dyn std::error::Error>;

fn serve_config(args: &ServeArgs) -> Result<BrokerConfig, ServeError> {
    let mut config = match &args.config {
        Some(path) => BrokerConfig::from_file(path)?,
        None => BrokerConfig::default(),
    };
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(listen) = &args.listen {
        config.listen = resolve(listen).map_err(|e| format!("--listen {listen}: {e}"))?;
    }
    if let Some(advertise) = &args.advertise {
        config.advertise = Some(advertise.clone());
    }
    if !args.listeners.is_empty() {
        config.listeners = args.listeners.clone();
    }
    config.bootstrap_user = std::env::var(BOOTSTRAP_USER_ENV).ok().filter(|v| !v.is_empty());
    config.log_json |= args.log_json;
    if let Some(id) = args.node_id {
        config.node_id = id;
    }
    if let Some(controllers) = &args.controllers {
        config.controllers = controllers.clone();
    }
    if let Some(address) = &args.controller_listen {
        config.controller_listen = resolve(address).map_err(|e| format!("--controller-listen {address}: {e}"))?;
    }
    if let Some(roles) = &args.process_roles {
        config.process_roles = Some(roles.clone());
    }
    if let Some(rack) = &args.rack {
        config.rack = Some(rack.clone());
    }
    config.validate()?;
    Ok(config)
}

fn resolve(address: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    address
        .to_socket_addrs()
        .map_err(|e| format!("not a HOST:PORT address ({e})"))?
        .next()
        .ok_or_else(|| "address resolves to nothing".to_string())
}

async fn serve(args: ServeArgs) -> Result<(), ServeError> {
    let config = serve_config(&args)?;
    init_logging(config.log_json);
    let data_dir = config.data_dir.clone();
    let node_id = config.node_id;
    let roles = config.roles()?;
    let single = config.is_single_node();
    let running = RunningNode::start(config).await?;
    let (host, port) = running.broker.advertised();
    let (cluster_id, listen) = (&running.broker.cluster_id, running.local_addr);
    tracing::info!(%listen, advertised = %format!("{host}:{port}"), data_dir = %data_dir.display(), %cluster_id, "keel is serving Kafka clients");
    if single {
        eprintln!("keel listening on {listen} (clients use {host}:{port}); data in {}", data_dir.display());
    } else {
        eprintln!(
            "keel node {node_id} ({}) listening on {listen} (clients use {host}:{port}); data in {}",
            if roles.controller { "broker,controller" } else { "broker" },
            data_dir.display()
        );
    }
    wait_for_signal().await;
    tracing::info!("controlled shutdown: moving leadership away, then flushing and stopping");
    running.shutdown().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops keel");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
