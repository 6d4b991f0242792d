//! DescribeCluster: from the replayed metadata image.

use keel_kafka::kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use keel_kafka::kafka_protocol::messages::*;

use super::*;
use crate::broker::Broker;
use crate::cluster::ClusterLink;

impl Broker {
    pub(crate) fn describe_cluster(
        &self,
        link: &ClusterLink,
        request: DescribeClusterRequest,
        version: i16,
        listener: &str,
    ) -> DescribeClusterResponse {
        let brokers = live_brokers(&Self::image(link), listener)
            .into_iter()
            .map(|(node, host, port, rack)| (node.0, host, port, rack))
            .collect();
        self.describe_cluster_with(brokers, link.node.0, request, version)
    }

    /// The DescribeCluster answer for `brokers`: (node id, host, port, rack).
    pub(crate) fn describe_cluster_with(
        &self,
        brokers: Vec<(i32, String, i32, Option<String>)>,
        controller: i32,
        request: DescribeClusterRequest,
        version: i16,
    ) -> DescribeClusterResponse {
        let brokers = brokers
            .into_iter()
            .map(|(node, host, port, rack)| {
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(node))
                    .with_host(s(host))
                    .with_port(port)
                    .with_rack(rack.map(s))
            })
            .collect();
        let response = DescribeClusterResponse::default()
            .with_cluster_id(s(self.cluster_id.clone()))
            .with_controller_id(BrokerId(controller))
            .with_brokers(brokers)
            .with_cluster_authorized_operations(if request.include_cluster_authorized_operations {
                super::CLUSTER_OPERATIONS_ALL
            } else {
                i32::MIN
            });
        if version >= 1 {
            response.with_endpoint_type(request.endpoint_type)
        } else {
            response
        }
    }
}
