//! AlterUserScramCredentials (KIP-554): decided by the active controller
//! ([`keel_metadata::scram`]); the credentials live in the metadata log, as salted keys.

use keel_kafka::kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use keel_kafka::kafka_protocol::messages::*;
use std::collections::BTreeSet;

use keel_auth::ScramMechanism;
use keel_kafka::kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion;
use keel_metadata::{MetadataImage, ScramDeletion, ScramUpsertion};
use keel_types::{ErrorCode, Refusal};

use super::{call, s, unexpected};
use crate::broker::Broker;
use crate::cluster::protocol::{Request, Response};
use crate::cluster::ClusterLink;

impl Broker {
    pub(crate) async fn alter_user_scram_credentials(
        &self,
        link: &ClusterLink,
        request: AlterUserScramCredentialsRequest,
    ) -> AlterUserScramCredentialsResponse {
        let deletions: Vec<ScramDeletion> = request
            .deletions
            .into_iter()
            .map(|d| ScramDeletion { user: d.name.to_string(), mechanism: d.mechanism })
            .collect();
        let upsertions: Vec<ScramUpsertion> = request
            .upsertions
            .into_iter()
            .map(|u| ScramUpsertion {
                user: u.name.to_string(),
                mechanism: u.mechanism,
                iterations: u.iterations,
                salt: u.salt.to_vec(),
                salted_password: u.salted_password.to_vec(),
            })
            .collect();
        let users: Vec<String> =
            deletions.iter().map(|d| &d.user).chain(upsertions.iter().map(|u| &u.user)).cloned().collect();
        let request = Request::AlterScramCredentials { deletions: deletions.clone(), upsertions: upsertions.clone() };
        let results = match call(link, request).await {
            Ok(Response::ScramAltered { results }) => {
                // Answer once this broker has replayed what was done, so that a describe or a
                // login that follows on this broker sees it.
                let done: BTreeSet<&str> =
                    results.iter().filter(|r| r.1 == ErrorCode::None.code()).map(|r| r.0.as_str()).collect();
                Self::replayed(link, |image| replayed(image, &done, &deletions, &upsertions)).await;
                results
            }
            Ok(other) => fail_all(&users, unexpected(&other)),
            Err(refusal) => fail_all(&users, refusal),
        };
        let results = results
            .into_iter()
            .map(|(user, code, message)| {
                AlterUserScramCredentialsResult::default()
                    .with_user(s(user))
                    .with_error_code(code)
                    .with_error_message((code != ErrorCode::None.code()).then(|| s(message)))
            })
            .collect();
        AlterUserScramCredentialsResponse::default().with_results(results)
    }
}

impl Broker {
    /// The first administrator (`KEEL_BOOTSTRAP_USER=name:password`): SCRAM-SHA-256 and
    /// SCRAM-SHA-512 credentials for `name`, set through AlterUserScramCredentials as a client
    /// would, unless some user already has a credential. `Ok(false)`: there was one.
    pub async fn create_bootstrap_user(&self, spec: &str) -> Result<bool, Refusal> {
        let Some((user, password)) = spec.split_once(':').filter(|(u, p)| !u.is_empty() && !p.is_empty()) else {
            return Err(Refusal::new(ErrorCode::InvalidRequest, "KEEL_BOOTSTRAP_USER must be NAME:PASSWORD"));
        };
        if !Self::image(&self.cluster).scram_users().is_empty() {
            return Ok(false);
        }
        // One request per mechanism: Kafka refuses a user named twice in one request.
        for mechanism in ScramMechanism::ALL {
            let salt = uuid::Uuid::new_v4().as_bytes().to_vec();
            let salted = mechanism.salted_password(password.as_bytes(), &salt, BOOTSTRAP_ITERATIONS);
            let upsertion = ScramCredentialUpsertion::default()
                .with_name(s(user))
                .with_mechanism(mechanism.type_id())
                .with_iterations(BOOTSTRAP_ITERATIONS as i32)
                .with_salt(salt.into())
                .with_salted_password(salted.into());
            let request = AlterUserScramCredentialsRequest::default().with_upsertions(vec![upsertion]);
            let response = self.alter_user_scram_credentials(&self.cluster, request).await;
            if let Some(failed) = response.results.into_iter().find(|r| r.error_code != ErrorCode::None.code()) {
                return Err(Refusal::new(
                    ErrorCode::from_code(failed.error_code).unwrap_or(ErrorCode::UnknownServerError),
                    failed.error_message.map(|m| m.to_string()).unwrap_or_default(),
                ));
            }
        }
        Ok(true)
    }
}

/// The iteration count of the bootstrap user's credentials (Kafka's tools default to 4096).
const BOOTSTRAP_ITERATIONS: u32 = 8192;

/// Whether `image` shows the changes made for the users in `done`.
fn replayed(
    image: &MetadataImage,
    done: &BTreeSet<&str>,
    deletions: &[ScramDeletion],
    upsertions: &[ScramUpsertion],
) -> bool {
    let deleted = deletions.iter().filter(|d| done.contains(d.user.as_str())).all(|d| {
        ScramMechanism::from_type_id(d.mechanism).is_none_or(|m| image.scram_credential(&d.user, m).is_none())
    });
    let upserted = upsertions.iter().filter(|u| done.contains(u.user.as_str())).all(|u| {
        ScramMechanism::from_type_id(u.mechanism)
            .and_then(|m| image.scram_credential(&u.user, m))
            .is_some_and(|c| c.salt == u.salt && i64::from(c.iterations) == i64::from(u.iterations))
    });
    deleted && upserted
}

/// Every named user gets `refusal` (the controller did not answer, or answered nonsense).
fn fail_all(users: &[String], refusal: Refusal) -> Vec<(String, i16, String)> {
    let mut seen = BTreeSet::new();
    users
        .iter()
        .filter(|u| seen.insert(u.as_str()))
        .map(|u| (u.clone(), refusal.code.code(), refusal.message.clone()))
        .collect()
}
