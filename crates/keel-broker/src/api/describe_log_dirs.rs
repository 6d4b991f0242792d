//! DescribeLogDirs.

use std::collections::BTreeMap;

use keel_kafka::kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use keel_kafka::kafka_protocol::messages::*;

use super::*;
use crate::broker::Broker;

impl Broker {
    /// DescribeLogDirs: keel has one log directory, the data directory.
    pub(crate) fn describe_log_dirs(&self, request: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
        let wanted: Option<BTreeMap<String, Vec<i32>>> =
            request.topics.map(|topics| topics.into_iter().map(|t| (t.topic.to_string(), t.partitions)).collect());
        let topics = self
            .topics
            .list()
            .into_iter()
            .filter(|t| wanted.as_ref().is_none_or(|w| w.contains_key(&t.name)))
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .filter(|p| wanted.as_ref().and_then(|w| w.get(&t.name)).is_none_or(|ps| ps.contains(&p.index)))
                    .map(|p| {
                        DescribeLogDirsPartition::default()
                            .with_partition_index(p.index)
                            .with_partition_size(p.log.size_bytes() as i64)
                            .with_offset_lag(0)
                    })
                    .collect();
                DescribeLogDirsTopic::default().with_name(TopicName(s(t.name.clone()))).with_partitions(partitions)
            })
            .collect();
        let result = DescribeLogDirsResult::default()
            .with_log_dir(s(self.config.data_dir.display().to_string()))
            .with_topics(topics)
            .with_total_bytes(-1)
            .with_usable_bytes(-1);
        DescribeLogDirsResponse::default().with_results(vec![result])
    }
}
