//! DescribeUserScramCredentials (KIP-554): from the replayed metadata image. It reports each
//! user's mechanisms and iteration counts, never salts or keys.

use std::collections::BTreeSet;

use keel_kafka::kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use keel_kafka::kafka_protocol::messages::*;
use keel_metadata::describe_scram_user;
use keel_types::ErrorCode;

use super::s;
use crate::broker::Broker;
use crate::cluster::ClusterLink;

impl Broker {
    pub(crate) fn describe_user_scram_credentials(
        &self,
        link: &ClusterLink,
        request: DescribeUserScramCredentialsRequest,
    ) -> DescribeUserScramCredentialsResponse {
        let image = Self::image(link);
        // No list (or an empty one) asks for every user, as in Kafka.
        let users: Vec<String> = match request.users {
            Some(users) if !users.is_empty() => users.into_iter().map(|u| u.name.to_string()).collect(),
            _ => image.scram_users().keys().cloned().collect(),
        };
        let mut seen = BTreeSet::new();
        let duplicates: BTreeSet<String> = users.iter().filter(|u| !seen.insert(u.as_str())).cloned().collect();
        let mut answered = BTreeSet::new();
        let results = users
            .iter()
            .filter(|user| answered.insert(user.as_str()))
            .map(|user| {
                let result = DescribeUserScramCredentialsResult::default().with_user(s(user.clone()));
                let described = if duplicates.contains(user) {
                    let message = "Cannot describe SCRAM credentials for the same user twice in a single request";
                    Err(keel_types::Refusal::new(ErrorCode::DuplicateResource, message))
                } else {
                    describe_scram_user(&image, user)
                };
                match described {
                    Ok(credentials) => result.with_credential_infos(
                        credentials
                            .into_iter()
                            .map(|(mechanism, iterations)| {
                                CredentialInfo::default()
                                    .with_mechanism(mechanism.type_id())
                                    .with_iterations(iterations as i32)
                            })
                            .collect(),
                    ),
                    Err(refusal) => {
                        result.with_error_code(refusal.code.code()).with_error_message(Some(s(refusal.message)))
                    }
                }
            })
            .collect();
        DescribeUserScramCredentialsResponse::default().with_results(results)
    }
}
