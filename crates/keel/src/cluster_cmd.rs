//! `keel cluster status`: the controller quorum, the brokers, and partitions that need
//! attention, as the controllers see them.

use std::time::Duration;

use keel_broker::cluster::protocol::{ControllerStatus, Frame, Request, Response, ViewEntry};
use keel_broker::cluster::transport::Caller;
use keel_broker::BrokerConfig;
use keel_metadata::MetadataImage;

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Show the controllers (leader, term, quorums), the brokers (epoch, fenced) and
    /// under-replicated or leaderless partitions.
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The controller quorum, as given to `keel serve --controllers`.
    #[arg(long, default_value = "1@127.0.0.1:9093", value_name = "ID@HOST:PORT,...")]
    controllers: String,
}

pub async fn cluster(command: ClusterCommand) -> Result<(), String> {
    match command {
        ClusterCommand::Status(args) => status(args).await,
    }
}

async fn status(args: StatusArgs) -> Result<(), String> {
    let config = BrokerConfig { controllers: args.controllers.clone(), ..BrokerConfig::default() };
    let voters = config.controller_voters().map_err(|e| format!("--controllers: {e}"))?;
    if voters.is_empty() {
        return Err("--controllers lists no controller".to_string());
    }
    // Every controller at once: one that does not answer (stopped, partitioned) must not delay
    // the others' answers, or the views printed would be older than they look.
    let calls: Vec<_> = voters
        .iter()
        .map(|(&id, &address)| {
            let call = tokio::spawn(async move {
                Caller::new(address).call::<_, Response>(&Frame::Request(Request::Status), Duration::from_secs(2)).await
            });
            (id, address, call)
        })
        .collect();
    let mut statuses: Vec<ControllerStatus> = Vec::new();
    println!("controllers:");
    for (id, address, call) in calls {
        let answer = call.await.map_err(|e| format!("status call to controller {id} failed: {e}"))?;
        match answer {
            Ok(Response::Status(status)) => {
                println!(
                    "  {id} at {address}: {} (term {}, leader {}, commit {}, applied {}; quorums R={} E={} of {})",
                    status.role,
                    status.term,
                    status.leader.map_or("unknown".to_string(), |l| l.to_string()),
                    status.commit_index,
                    status.applied_index,
                    status.replication_quorum,
                    status.election_quorum,
                    status.voters.len()
                );
                statuses.push(status);
            }
            Ok(other) => println!("  {id} at {address}: unexpected answer {other:?}"),
            Err(error) => println!("  {id} at {address}: unreachable ({error})"),
        }
    }
    // The most recent view: the leader's, else the one that applied the most.
    let Some(best) = statuses.iter().max_by_key(|s| (s.role == "leader", s.applied_index)) else {
        return Err(format!("no controller of {} answered; is the cluster running?", args.controllers));
    };
    let image =
        MetadataImage::decode(&best.image).map_err(|e| format!("controller {} sent a bad image: {e}", best.node))?;
    println!("brokers (as of controller {}, index {}):", best.node, best.applied_index);
    if image.brokers().is_empty() {
        println!("  none registered");
    }
    for (id, broker) in image.brokers() {
        let listeners: Vec<String> = broker.listeners.iter().map(|l| format!("{}:{}", l.host, l.port)).collect();
        let state = if broker.shutting_down {
            "shutting down"
        } else if broker.fenced {
            "fenced"
        } else {
            "active"
        };
        println!(
            "  {id}: {state}, epoch {}, {}{}{}",
            broker.broker_epoch,
            listeners.join(","),
            broker.rack.as_ref().map_or(String::new(), |r| format!(", rack {r}")),
            if broker.clean_shutdown { "" } else { ", registered after an unclean shutdown" }
        );
    }
    println!("membership (each node's SWIM view: node status@incarnation):");
    let show = |view: &[ViewEntry]| -> String {
        let view: Vec<String> =
            view.iter().map(|(node, _, incarnation, state)| format!("{node} {state}@{incarnation}")).collect();
        if view.is_empty() {
            "nothing yet".to_string()
        } else {
            view.join(", ")
        }
    };
    for status in &statuses {
        println!("  seen by {}: {}", status.node, show(&status.membership));
    }
    // Broker-only nodes have no cluster port: their views come with their heartbeats.
    for (node, age_ms, view) in &best.reported {
        if !statuses.iter().any(|s| s.node == *node) {
            println!("  seen by {node} (sent with its heartbeat {age_ms} ms ago): {}", show(view));
        }
    }
    let (mut total, mut leaderless, mut under) = (0usize, Vec::new(), Vec::new());
    for topic in image.topics() {
        for (index, partition) in topic.partitions.iter().enumerate() {
            total += 1;
            let name = format!("{}-{index}", topic.name);
            if partition.leader.is_none() {
                leaderless.push(format!("{name} (ISR {:?}, ELR {:?})", partition.isr, partition.elr));
            } else if partition.isr.len() < partition.replicas.len() {
                under.push(format!("{name} (replicas {:?}, ISR {:?})", partition.replicas, partition.isr));
            }
        }
    }
    println!("partitions: {total} in {} topics", image.topics().count());
    println!("  under-replicated: {}", if under.is_empty() { "none".to_string() } else { under.join("; ") });
    println!("  leaderless: {}", if leaderless.is_empty() { "none".to_string() } else { leaderless.join("; ") });
    Ok(())
}
