//! Opening a data directory keel's single node wrote before a single node became a cluster of
//! one (keel 0.1's `keel serve` without `--controllers`).
//!
//! Such a directory has `meta.properties` (its cluster id), `topics.json` (each topic's name,
//! id, partition count and config overrides), `producer-ids` (the first producer id it had not
//! handed out), the partition logs, and no `__cluster_metadata`. Every partition was led by
//! the node in leader epoch 0, and its logs carry that epoch.
//!
//! A node that is the only voter migrates it before its controller starts: it writes a Raft
//! snapshot holding the metadata image the single node implied (each topic with its id and
//! configs, each partition with this node as its only replica, leader and ISR member in leader
//! epoch 0, and producer ids continuing after the ones handed out), then renames the new
//! `__cluster_metadata` into place, so a crash midway leaves the directory as it was. The image
//! also registers the node (broker epoch 1), as the partitions must name a registered broker. The
//! controller starts from that snapshot; the broker finds its logs under the same topic ids
//! and keeps them. A member of a larger cluster refuses the directory: its topics cannot join
//! another cluster's metadata.

use std::collections::BTreeMap;
use std::path::Path;

use keel_metadata::{MetadataImage, MetadataRecord, PartitionRegistration, PRODUCER_ID_BLOCK_SIZE};
use keel_raft::{HardState, Persist, Recovery, Snapshot};
use keel_types::{BrokerEpoch, LeaderEpoch, NodeId, PartitionEpoch, TopicId};
use serde::Deserialize;

use super::raft_store::RaftStore;
use crate::config::BrokerConfig;
use crate::error::DiskError;
use crate::producer_ids::legacy_next_producer_id;

/// The Raft state's directory in the data directory.
pub const METADATA_DIR: &str = "__cluster_metadata";
const LEGACY_MARKER: &str = "meta.properties";
const TOPICS_FILE: &str = "topics.json";

/// What the single node's `topics.json` says of a topic.
#[derive(Debug, Deserialize)]
struct LegacyTopic {
    name: String,
    id: uuid::Uuid,
    partitions: i32,
    configs: BTreeMap<String, String>,
}

/// What a migration found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    pub topics: usize,
    pub partitions: usize,
    pub next_producer_id: i64,
}

/// Whether `data_dir` was written by keel's single node and not migrated yet.
pub fn is_single_node_directory(data_dir: &Path) -> bool {
    data_dir.join(LEGACY_MARKER).exists() && !data_dir.join(METADATA_DIR).exists()
}

/// Migrates `config.data_dir` if keel's single node wrote it (see the module documentation):
/// `Ok(None)` if there is nothing to migrate, an error saying what to do if this node may not
/// migrate it.
pub fn migrate_single_node_directory(config: &BrokerConfig) -> Result<Option<Migrated>, DiskError> {
    let data_dir = &config.data_dir;
    if !is_single_node_directory(data_dir) {
        return Ok(None);
    }
    if !config.is_single_node() {
        return Err(DiskError::refused(
            data_dir,
            format!(
                "this data directory was written by keel's single node (it has {LEGACY_MARKER} and no \
                 {METADATA_DIR}); its topics cannot join another cluster. Start it as a single node (`keel serve \
                 --data-dir {}` without --controllers), which migrates it, and give this cluster member an empty \
                 data directory",
                data_dir.display()
            ),
        ));
    }
    let node = NodeId(config.node_id);
    let topics_path = data_dir.join(TOPICS_FILE);
    let topics: Vec<LegacyTopic> = match std::fs::read(&topics_path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| DiskError::damaged(&topics_path, format!("cannot migrate it: {e}")))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(DiskError::io("read (to migrate it)", &topics_path, e)),
    };
    // Ids continue after every id the single node may have handed out, in whole blocks.
    let reserved = legacy_next_producer_id(data_dir)?.unwrap_or(0).max(0);
    let next_producer_id = (reserved + PRODUCER_ID_BLOCK_SIZE - 1) / PRODUCER_ID_BLOCK_SIZE * PRODUCER_ID_BLOCK_SIZE;
    let (image, partitions) = single_node_image(node, &topics, next_producer_id)
        .map_err(|e| DiskError::damaged(&topics_path, format!("its topics do not form a valid metadata image: {e}")))?;
    write_snapshot(data_dir, &image)?;
    let migrated = Migrated { topics: topics.len(), partitions, next_producer_id };
    tracing::info!(
        data_dir = %data_dir.display(),
        topics = migrated.topics,
        partitions = migrated.partitions,
        next_producer_id,
        "migrated a single-node data directory into a cluster of one"
    );
    Ok(Some(migrated))
}

/// The metadata image the single node's topics imply, and how many partitions it has.
fn single_node_image(
    node: NodeId,
    topics: &[LegacyTopic],
    next_producer_id: i64,
) -> Result<(MetadataImage, usize), String> {
    // The single node, as the registration its partitions name; the process that starts now
    // registers again (without a clean-shutdown marker, which the only replica of a partition
    // survives: `PartitionRegistration::handle_unclean_shutdown`).
    let mut records = vec![
        MetadataRecord::RegisterBroker {
            node,
            broker_epoch: BrokerEpoch(1),
            listeners: Vec::new(),
            rack: None,
            clean_shutdown: false,
            process_id: 0,
            incarnation: 0,
        },
        MetadataRecord::UnfenceBroker { node, broker_epoch: BrokerEpoch(1) },
    ];
    let mut partitions = 0;
    for topic in topics {
        let id = TopicId(topic.id.as_u128());
        records.push(MetadataRecord::Topic { name: topic.name.clone(), id, configs: topic.configs.clone() });
        for index in 0..topic.partitions {
            let registration = PartitionRegistration {
                replicas: vec![node],
                leader: Some(node),
                leader_epoch: LeaderEpoch(0),
                partition_epoch: PartitionEpoch(0),
                isr: vec![node],
                elr: Vec::new(),
                last_known_elr: Vec::new(),
            };
            records.push(MetadataRecord::Partition { topic_id: id, index, registration });
            partitions += 1;
        }
    }
    if next_producer_id > 0 {
        records.push(MetadataRecord::ProducerIds { node, broker_epoch: BrokerEpoch(1), next_producer_id });
    }
    let mut image = MetadataImage::default();
    for record in &records {
        image.apply(record);
    }
    image.check_invariants()?;
    Ok((image, partitions))
}

/// Writes a Raft store whose snapshot (index 1, term 1) is `image`, into a scratch directory
/// renamed into place once complete.
fn write_snapshot(data_dir: &Path, image: &MetadataImage) -> Result<(), DiskError> {
    let scratch = data_dir.join(format!("{METADATA_DIR}.migrating"));
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).map_err(|e| DiskError::io("remove", &scratch, e))?;
    }
    let mut store = RaftStore::open(&scratch)?;
    store.persist(&Persist {
        id: 1,
        hard_state: Some(HardState { term: keel_raft::Term(1), voted_for: None }),
        recovery: Some(Recovery::Trusted),
        snapshot: Some(Snapshot { index: 1, term: keel_raft::Term(1), data: image.encode() }),
        truncate_after: None,
        append: Vec::new(),
    })?;
    drop(store);
    let target = data_dir.join(METADATA_DIR);
    std::fs::rename(&scratch, &target)
        .and_then(|()| std::fs::File::open(data_dir)?.sync_all())
        .map_err(|e| DiskError::io("move into place", &scratch, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy_directory(dir: &Path, producer_ids: Option<&str>) {
        std::fs::write(dir.join(LEGACY_MARKER), "version=1\ncluster.id=abc\nnode.id=0\n").unwrap();
        let topics = r#"[{"name":"orders","id":"6f1d2c1e-7f47-4c1c-9d55-2f7b0e1c2a01","partitions":2,"configs":{"retention.ms":"1000"}},
                         {"name":"__consumer_offsets","id":"6f1d2c1e-7f47-4c1c-9d55-2f7b0e1c2a02","partitions":3,"configs":{}}]"#;
        std::fs::write(dir.join(TOPICS_FILE), topics).unwrap();
        if let Some(ids) = producer_ids {
            std::fs::write(dir.join("producer-ids"), ids).unwrap();
        }
    }

    fn config(dir: &Path) -> BrokerConfig {
        BrokerConfig { data_dir: dir.to_path_buf(), ..BrokerConfig::default() }
    }

    #[test]
    fn a_single_nodes_topics_become_a_snapshot_the_controller_starts_from() {
        let dir = tempfile::tempdir().unwrap();
        legacy_directory(dir.path(), Some("2000"));
        let migrated = migrate_single_node_directory(&config(dir.path())).unwrap().unwrap();
        assert_eq!(migrated, Migrated { topics: 2, partitions: 5, next_producer_id: 2000 });
        assert!(!is_single_node_directory(dir.path()), "migrated once");
        assert!(migrate_single_node_directory(&config(dir.path())).unwrap().is_none());

        let store = RaftStore::open(&dir.path().join(METADATA_DIR)).unwrap();
        let durable = store.durable();
        assert_eq!(durable.recovery, Recovery::Trusted);
        let snapshot = durable.snapshot.as_ref().unwrap();
        let image = MetadataImage::decode(&snapshot.data).unwrap();
        let orders = image.topic_by_name("orders").unwrap();
        assert_eq!(
            orders.id,
            TopicId(uuid::Uuid::parse_str("6f1d2c1e-7f47-4c1c-9d55-2f7b0e1c2a01").unwrap().as_u128())
        );
        assert_eq!(orders.configs.get("retention.ms").map(String::as_str), Some("1000"));
        assert_eq!(orders.partitions.len(), 2);
        let p = &orders.partitions[0];
        assert_eq!((p.leader, p.isr.clone(), p.leader_epoch), (Some(NodeId(1)), vec![NodeId(1)], LeaderEpoch(0)));
        assert_eq!(image.next_producer_id(), 2000);
    }

    #[test]
    fn producer_ids_continue_after_a_whole_block_and_a_cluster_member_refuses() {
        let dir = tempfile::tempdir().unwrap();
        legacy_directory(dir.path(), Some(&(PRODUCER_ID_BLOCK_SIZE + 1).to_string()));
        let member = BrokerConfig { controllers: "1@127.0.0.1:9093,2@127.0.0.1:9193".into(), ..config(dir.path()) };
        let refused = migrate_single_node_directory(&member).unwrap_err().to_string();
        assert!(refused.contains("without --controllers"), "{refused}");
        assert!(is_single_node_directory(dir.path()), "nothing changed");
        let migrated = migrate_single_node_directory(&config(dir.path())).unwrap().unwrap();
        assert_eq!(migrated.next_producer_id, 2 * PRODUCER_ID_BLOCK_SIZE, "1001 ids were reserved: two blocks");
    }
}
