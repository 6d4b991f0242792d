//! SCRAM credentials through the Kafka API (AlterUserScramCredentials and
//! DescribeUserScramCredentials, KIP-554): decided by the controller, kept in the metadata log
//! as salted keys, described by mechanism and iteration count, and still there after a restart
//! (replayed from the log and from a snapshot).

#![allow(clippy::disallowed_methods)] // tests bound their waits with the real clock

mod common;

use keel_kafka::kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use keel_kafka::kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use keel_kafka::kafka_protocol::messages::*;
use keel_kafka::kafka_protocol::protocol::StrBytes;
use keel_types::ErrorCode;

fn name(user: &str) -> StrBytes {
    StrBytes::from_string(user.to_string())
}

fn upsert(user: &str, mechanism: i8, iterations: i32) -> ScramCredentialUpsertion {
    ScramCredentialUpsertion::default()
        .with_name(name(user))
        .with_mechanism(mechanism)
        .with_iterations(iterations)
        .with_salt(bytes::Bytes::from_static(b"0123456789abcdef"))
        .with_salted_password(bytes::Bytes::from(vec![42u8; 32]))
}

async fn alter(
    broker: &keel_broker::Broker,
    deletions: Vec<ScramCredentialDeletion>,
    upsertions: Vec<ScramCredentialUpsertion>,
) -> Vec<(String, ErrorCode)> {
    let request = AlterUserScramCredentialsRequest::default().with_deletions(deletions).with_upsertions(upsertions);
    let ResponseKind::AlterUserScramCredentials(response) =
        common::ask(broker, ApiKey::AlterUserScramCredentials, 0, RequestKind::AlterUserScramCredentials(request))
            .await
    else {
        panic!("not an AlterUserScramCredentials response")
    };
    response.results.iter().map(|r| (r.user.to_string(), ErrorCode::from_code(r.error_code).unwrap())).collect()
}

/// (user, error, [(mechanism, iterations)]) for `users` (`None`: every user).
async fn describe(broker: &keel_broker::Broker, users: Option<&[&str]>) -> Vec<(String, ErrorCode, Vec<(i8, i32)>)> {
    let users = users.map(|u| u.iter().map(|u| UserName::default().with_name(name(u))).collect());
    let request = DescribeUserScramCredentialsRequest::default().with_users(users);
    let ResponseKind::DescribeUserScramCredentials(response) = common::ask(
        broker,
        ApiKey::DescribeUserScramCredentials,
        0,
        RequestKind::DescribeUserScramCredentials(request),
    )
    .await
    else {
        panic!("not a DescribeUserScramCredentials response")
    };
    response
        .results
        .iter()
        .map(|r| {
            let infos = r.credential_infos.iter().map(|i| (i.mechanism, i.iterations)).collect();
            (r.user.to_string(), ErrorCode::from_code(r.error_code).unwrap(), infos)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_set_described_deleted_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // A snapshot every few entries, so the restart also replays credentials from a snapshot.
    let config =
        || keel_broker::BrokerConfig { controller_snapshot_entries: 3, ..common::single_node_config(dir.path()) };
    let node = common::start_ready(config()).await;

    let results = alter(
        &node.broker,
        vec![ScramCredentialDeletion::default().with_name(name("nobody")).with_mechanism(1)],
        vec![upsert("alice", 1, 4096), upsert("alice-512", 2, 8192), upsert("weak", 1, 100), upsert("odd", 9, 4096)],
    )
    .await;
    assert_eq!(
        results,
        vec![
            ("nobody".to_string(), ErrorCode::ResourceNotFound),
            ("alice".to_string(), ErrorCode::None),
            ("alice-512".to_string(), ErrorCode::None),
            ("weak".to_string(), ErrorCode::UnacceptableCredential),
            ("odd".to_string(), ErrorCode::UnsupportedSaslMechanism),
        ]
    );
    let everyone = vec![
        ("alice".to_string(), ErrorCode::None, vec![(1, 4096)]),
        ("alice-512".to_string(), ErrorCode::None, vec![(2, 8192)]),
    ];
    assert_eq!(describe(&node.broker, None).await, everyone);
    assert_eq!(
        describe(&node.broker, Some(&["alice", "ghost", "alice"])).await,
        vec![
            ("alice".to_string(), ErrorCode::DuplicateResource, vec![]),
            ("ghost".to_string(), ErrorCode::ResourceNotFound, vec![]),
        ]
    );

    // Enough metadata entries for a snapshot, then a restart replays the credentials.
    for i in 0..4 {
        assert_eq!(alter(&node.broker, vec![], vec![upsert(&format!("user-{i}"), 2, 4096)]).await.len(), 1);
    }
    let results = alter(
        &node.broker,
        (0..4)
            .map(|i| ScramCredentialDeletion::default().with_name(name(&format!("user-{i}"))).with_mechanism(2))
            .collect(),
        vec![],
    )
    .await;
    assert!(results.iter().all(|(_, code)| *code == ErrorCode::None), "{results:?}");
    node.shutdown().await.unwrap();

    let node = common::start_ready(config()).await;
    assert_eq!(describe(&node.broker, None).await, everyone, "credentials survive a restart");
    node.shutdown().await.unwrap();
}
