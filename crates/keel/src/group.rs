//! `keel group`: list groups, describe one with its lag, reset its offsets. Real Kafka client
//! calls (librdkafka), so it works against any Kafka-compatible broker.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::client::{base_config, check_reachable, unreachable, DEFAULT_BROKERS};

const TIMEOUT: Duration = Duration::from_secs(10);
const OFFSETS_TOPIC: &str = "__consumer_offsets";

#[derive(Debug, clap::Subcommand)]
pub enum GroupCommand {
    /// List consumer groups with their state.
    List {
        #[arg(long, default_value = DEFAULT_BROKERS)]
        brokers: String,
    },
    /// Show a group's members and, per partition, committed offset, log end and lag.
    Describe {
        group: String,
        #[arg(long, default_value = DEFAULT_BROKERS)]
        brokers: String,
    },
    /// Move a group's committed offsets (the group must have no active members).
    ResetOffsets(ResetArgs),
}

#[derive(Debug, clap::Args)]
pub struct ResetArgs {
    group: String,
    #[arg(long)]
    topic: String,
    #[arg(long, group = "target")]
    to_earliest: bool,
    #[arg(long, group = "target")]
    to_latest: bool,
    #[arg(long, group = "target", value_name = "OFFSET")]
    to_offset: Option<i64>,
    /// UTC time as YYYY-MM-DDTHH:MM:SS[.mmm][Z]: the first offset at or after it.
    #[arg(long, group = "target", value_name = "DATETIME")]
    to_datetime: Option<String>,
    /// Print the new offsets without committing them.
    #[arg(long)]
    dry_run: bool,
    #[arg(long, default_value = DEFAULT_BROKERS)]
    brokers: String,
}

fn group_client(brokers: &str, group: &str) -> Result<BaseConsumer, String> {
    base_config(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| format!("cannot create a Kafka client: {e}"))
}

pub async fn group(command: GroupCommand) -> Result<(), String> {
    match command {
        GroupCommand::List { brokers } => {
            let client = group_client(&brokers, "keel-cli")?;
            check_reachable(&client, &brokers)?;
            let groups = client.fetch_group_list(None, TIMEOUT).map_err(|e| unreachable(&brokers, &e))?;
            let mut rows: Vec<(String, String, usize)> = groups
                .groups()
                .iter()
                .map(|g| (g.name().to_string(), g.state().to_string(), g.members().len()))
                .collect();
            rows.sort();
            println!("{:<40} {:<22} MEMBERS", "GROUP", "STATE");
            for (name, state, members) in rows {
                println!("{name:<40} {state:<22} {members}");
            }
            Ok(())
        }
        GroupCommand::Describe { group, brokers } => describe(&group, &brokers),
        GroupCommand::ResetOffsets(args) => reset(args),
    }
}

/// Every partition of every topic (but the internal one), for committed-offset lookups.
fn all_partitions(client: &BaseConsumer, brokers: &str) -> Result<TopicPartitionList, String> {
    let metadata = client.fetch_metadata(None, TIMEOUT).map_err(|e| unreachable(brokers, &e))?;
    let mut list = TopicPartitionList::new();
    for topic in metadata.topics().iter().filter(|t| t.name() != OFFSETS_TOPIC) {
        for p in topic.partitions() {
            list.add_partition(topic.name(), p.id());
        }
    }
    Ok(list)
}

fn describe(group: &str, brokers: &str) -> Result<(), String> {
    let client = group_client(brokers, group)?;
    check_reachable(&client, brokers)?;
    let groups = client.fetch_group_list(Some(group), TIMEOUT).map_err(|e| unreachable(brokers, &e))?;
    let info = groups.groups().first();
    let state = info.map_or("Dead", |g| g.state());
    println!("group {group}  state {state}  members {}", info.map_or(0, |g| g.members().len()));
    if let Some(info) = info {
        for m in info.members() {
            println!("  member {}  client {}  host {}", m.id(), m.client_id(), m.client_host());
        }
    }
    let committed =
        client.committed_offsets(all_partitions(&client, brokers)?, TIMEOUT).map_err(|e| unreachable(brokers, &e))?;
    let mut rows = Vec::new();
    for element in committed.elements() {
        let Offset::Offset(offset) = element.offset() else { continue };
        let (_, end) = client
            .fetch_watermarks(element.topic(), element.partition(), TIMEOUT)
            .map_err(|e| unreachable(brokers, &e))?;
        rows.push((element.topic().to_string(), element.partition(), offset, end));
    }
    if rows.is_empty() {
        if state == "Dead" {
            return Err(format!("group {group:?} does not exist (no members, no committed offsets)"));
        }
        println!("no committed offsets yet");
        return Ok(());
    }
    println!("{:<30} {:>9} {:>16} {:>16} {:>10}", "TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG");
    let mut total = 0;
    for (topic, partition, offset, end) in rows {
        let lag = (end - offset).max(0);
        total += lag;
        println!("{topic:<30} {partition:>9} {offset:>16} {end:>16} {lag:>10}");
    }
    println!("total lag {total}");
    Ok(())
}

fn reset(args: ResetArgs) -> Result<(), String> {
    let brokers = &args.brokers;
    let client = group_client(brokers, &args.group)?;
    check_reachable(&client, brokers)?;
    let groups = client.fetch_group_list(Some(&args.group), TIMEOUT).map_err(|e| unreachable(brokers, &e))?;
    if let Some(info) = groups.groups().first() {
        if !info.members().is_empty() {
            return Err(format!(
                "group {:?} has {} active member(s) (state {}); stop its consumers first, as Kafka's tool requires",
                args.group,
                info.members().len(),
                info.state()
            ));
        }
    }
    let metadata = client.fetch_metadata(Some(&args.topic), TIMEOUT).map_err(|e| unreachable(brokers, &e))?;
    let partitions: Vec<i32> = match metadata.topics().first() {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => t.partitions().iter().map(|p| p.id()).collect(),
        _ => {
            return Err(format!(
                "topic {:?} does not exist; create it with: keel topic create {}",
                args.topic, args.topic
            ))
        }
    };
    let datetime_ms = args.to_datetime.as_deref().map(parse_datetime).transpose()?;
    let mut targets = TopicPartitionList::new();
    for &p in &partitions {
        let (low, high) = client.fetch_watermarks(&args.topic, p, TIMEOUT).map_err(|e| unreachable(brokers, &e))?;
        let offset = if args.to_earliest {
            low
        } else if args.to_latest {
            high
        } else if let Some(offset) = args.to_offset {
            offset.clamp(low, high)
        } else if let Some(ms) = datetime_ms {
            let mut query = TopicPartitionList::new();
            query.add_partition_offset(&args.topic, p, Offset::Offset(ms)).map_err(|e| e.to_string())?;
            let answer = client.offsets_for_times(query, TIMEOUT).map_err(|e| unreachable(brokers, &e))?;
            match answer.find_partition(&args.topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => high,
            }
        } else {
            return Err("say where to: --to-earliest, --to-latest, --to-offset N or --to-datetime TIME".to_string());
        };
        targets.add_partition_offset(&args.topic, p, Offset::Offset(offset)).map_err(|e| e.to_string())?;
        println!("{}  partition {p:>4}  new offset {offset}", args.topic);
    }
    if args.dry_run {
        println!("dry run: nothing committed");
        return Ok(());
    }
    client.commit(&targets, CommitMode::Sync).map_err(|e| format!("cannot commit the new offsets: {e}"))?;
    println!("offsets of group {} reset", args.group);
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SS[.mmm][Z]` (UTC) to milliseconds since the Unix epoch.
pub fn parse_datetime(text: &str) -> Result<i64, String> {
    let bad = || format!("--to-datetime {text:?} must look like 2024-05-01T12:00:00 or 2024-05-01T12:00:00.000Z (UTC)");
    let text = text.trim_end_matches('Z');
    let (date, time) = text.split_once('T').ok_or_else(bad)?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (Some(Ok(year)), Some(Ok(month)), Some(Ok(day)), None) = (d.next(), d.next(), d.next(), d.next()) else {
        return Err(bad());
    };
    let (hms, millis) = match time.split_once('.') {
        Some((hms, ms)) => (hms, ms.parse::<i64>().map_err(|_| bad())?),
        None => (time, 0),
    };
    let mut t = hms.split(':').map(|p| p.parse::<i64>());
    let (Some(Ok(hour)), Some(Ok(minute)), Some(Ok(second)), None) = (t.next(), t.next(), t.next(), t.next()) else {
        return Err(bad());
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return Err(bad());
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::parse_datetime;

    #[test]
    fn datetimes_parse_as_utc() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00"), Ok(0));
        assert_eq!(parse_datetime("2024-03-01T12:30:15.250Z"), Ok(1_709_296_215_250));
        assert_eq!(parse_datetime("2000-02-29T00:00:00Z"), Ok(951_782_400_000));
        assert!(parse_datetime("yesterday").is_err());
        assert!(parse_datetime("2024-13-01T00:00:00").is_err());
    }
}
