//! SCRAM credential changes (AlterUserScramCredentials, KIP-554), decided as Kafka's
//! `ScramControlManager` decides them: each user named in a request succeeds or fails on its
//! own; a user named twice fails; an unknown mechanism, an iteration count outside
//! [`ScramMechanism::ITERATIONS_MIN`]..=[`ScramMechanism::ITERATIONS_MAX`], an empty name or the
//! deletion of a credential that does not exist is refused with Kafka's code and message.

use std::collections::BTreeMap;

use keel_auth::{validate_scram_username, ScramCredential, ScramMechanism};
use keel_types::{ErrorCode, Refusal};
use serde::{Deserialize, Serialize};

use crate::image::MetadataImage;
use crate::records::MetadataRecord;

/// A credential to set, as AlterUserScramCredentials carries it: the client salted and hashed
/// the password; the broker never sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScramUpsertion {
    pub user: String,
    /// Kafka's mechanism type (1 SCRAM-SHA-256, 2 SCRAM-SHA-512).
    pub mechanism: i8,
    pub iterations: i32,
    pub salt: Vec<u8>,
    pub salted_password: Vec<u8>,
}

/// A credential to remove.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScramDeletion {
    pub user: String,
    pub mechanism: i8,
}

/// What each user named in the request gets (deletions first, then upsertions, each user once
/// in the order it is first named), and the records of the changes that were accepted.
pub type ScramAltered = (Vec<(String, Result<(), Refusal>)>, Vec<MetadataRecord>);

/// Decides an AlterUserScramCredentials request against `image`.
pub fn alter_scram_credentials(
    image: &MetadataImage,
    deletions: &[ScramDeletion],
    upsertions: &[ScramUpsertion],
) -> ScramAltered {
    let mut named: BTreeMap<&str, usize> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for user in deletions.iter().map(|d| d.user.as_str()).chain(upsertions.iter().map(|u| u.user.as_str())) {
        let count = named.entry(user).or_insert(0);
        if *count == 0 {
            order.push(user);
        }
        *count += 1;
    }
    let mut outcome: BTreeMap<&str, Result<(), Refusal>> = BTreeMap::new();
    let mut records = Vec::new();
    for deletion in deletions {
        let decided = check_user(&deletion.user, &named).and_then(|()| {
            let mechanism = mechanism(deletion.mechanism)?;
            if image.scram_credential(&deletion.user, mechanism).is_none() {
                let message = "Attempt to delete a user credential that does not exist";
                return Err(Refusal::new(ErrorCode::ResourceNotFound, message));
            }
            Ok(MetadataRecord::RemoveScramCredential { user: deletion.user.clone(), mechanism })
        });
        outcome.insert(&deletion.user, decided.map(|record| records.push(record)));
    }
    for upsertion in upsertions {
        let decided = check_user(&upsertion.user, &named).and_then(|()| {
            let mechanism = mechanism(upsertion.mechanism)?;
            let iterations = u32::try_from(upsertion.iterations).unwrap_or(0);
            let credential = ScramCredential::from_salted_password(
                mechanism,
                &upsertion.salted_password,
                upsertion.salt.clone(),
                iterations,
            )?;
            Ok(MetadataRecord::ScramCredential { user: upsertion.user.clone(), credential })
        });
        outcome.insert(&upsertion.user, decided.map(|record| records.push(record)));
    }
    let results = order.into_iter().map(|user| (user.to_string(), outcome.remove(user).unwrap_or(Ok(())))).collect();
    (results, records)
}

fn check_user(user: &str, named: &BTreeMap<&str, usize>) -> Result<(), Refusal> {
    if named.get(user).copied().unwrap_or(0) > 1 {
        let message = "A user credential cannot be altered twice in the same request";
        return Err(Refusal::new(ErrorCode::DuplicateResource, message));
    }
    validate_scram_username(user)
}

fn mechanism(type_id: i8) -> Result<ScramMechanism, Refusal> {
    ScramMechanism::from_type_id(type_id)
        .ok_or_else(|| Refusal::new(ErrorCode::UnsupportedSaslMechanism, "Unknown SCRAM mechanism"))
}

/// What DescribeUserScramCredentials answers for one user: the mechanisms and iteration counts
/// of its credentials (never salts or keys), or RESOURCE_NOT_FOUND.
pub fn describe_scram_user(image: &MetadataImage, user: &str) -> Result<Vec<(ScramMechanism, u32)>, Refusal> {
    match image.scram_users().get(user) {
        Some(credentials) => Ok(credentials.values().map(|c| (c.mechanism, c.iterations)).collect()),
        None => {
            let message = "Attempt to describe a user credential that does not exist";
            Err(Refusal::new(ErrorCode::ResourceNotFound, message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upsert(user: &str, mechanism: i8, iterations: i32) -> ScramUpsertion {
        ScramUpsertion {
            user: user.into(),
            mechanism,
            iterations,
            salt: b"salt".to_vec(),
            salted_password: vec![7; 32],
        }
    }

    fn delete(user: &str, mechanism: i8) -> ScramDeletion {
        ScramDeletion { user: user.into(), mechanism }
    }

    fn codes(results: &[(String, Result<(), Refusal>)]) -> Vec<(&str, ErrorCode)> {
        results
            .iter()
            .map(|(user, result)| (user.as_str(), result.as_ref().err().map_or(ErrorCode::None, |r| r.code)))
            .collect()
    }

    fn apply(image: &mut MetadataImage, records: &[MetadataRecord]) {
        records.iter().for_each(|r| image.apply(r));
        image.check_invariants().unwrap();
    }

    #[test]
    fn each_user_succeeds_or_fails_on_its_own_with_kafkas_codes() {
        let mut image = MetadataImage::default();
        let (results, records) = alter_scram_credentials(
            &image,
            &[delete("nobody", 1), delete("twice", 1)],
            &[
                upsert("alice", 1, 4096),
                upsert("bob", 2, 8192),
                upsert("twice", 2, 4096),
                upsert("few", 1, 4095),
                upsert("many", 1, 16385),
                upsert("odd", 3, 4096),
                upsert("", 1, 4096),
            ],
        );
        assert_eq!(
            codes(&results),
            vec![
                ("nobody", ErrorCode::ResourceNotFound),
                ("twice", ErrorCode::DuplicateResource),
                ("alice", ErrorCode::None),
                ("bob", ErrorCode::None),
                ("few", ErrorCode::UnacceptableCredential),
                ("many", ErrorCode::UnacceptableCredential),
                ("odd", ErrorCode::UnsupportedSaslMechanism),
                ("", ErrorCode::UnacceptableCredential),
            ]
        );
        assert_eq!(records.len(), 2, "only alice's and bob's credentials are written");
        apply(&mut image, &records);
        assert_eq!(describe_scram_user(&image, "alice").unwrap(), vec![(ScramMechanism::Sha256, 4096)]);
        assert_eq!(describe_scram_user(&image, "bob").unwrap(), vec![(ScramMechanism::Sha512, 8192)]);
        assert_eq!(describe_scram_user(&image, "nobody").unwrap_err().code, ErrorCode::ResourceNotFound);
        let stored = image.scram_credential("alice", ScramMechanism::Sha256).unwrap();
        let expected = ScramCredential::from_salted_password(ScramMechanism::Sha256, &[7; 32], b"salt".to_vec(), 4096);
        assert_eq!(Ok(stored.clone()), expected, "the keys derive from the salted password");

        let (results, records) = alter_scram_credentials(&image, &[delete("alice", 1), delete("bob", 1)], &[]);
        assert_eq!(codes(&results), vec![("alice", ErrorCode::None), ("bob", ErrorCode::ResourceNotFound)]);
        apply(&mut image, &records);
        assert!(image.scram_users().get("alice").is_none(), "a user without credentials is gone");
        assert_eq!(image.scram_users().keys().collect::<Vec<_>>(), vec!["bob"]);
    }

    #[test]
    fn credentials_survive_an_image_round_trip() {
        let mut image = MetadataImage::default();
        let (_, records) = alter_scram_credentials(&image, &[], &[upsert("alice", 2, 4096)]);
        apply(&mut image, &records);
        let decoded = MetadataImage::decode(&image.encode()).unwrap();
        assert_eq!(decoded, image);
        for record in &records {
            assert_eq!(&MetadataRecord::decode(&record.encode()).unwrap(), record);
        }
    }
}
