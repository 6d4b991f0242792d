//! What the coordinator persists in `__consumer_offsets`: committed offsets and group
//! metadata, as keys and values (a `None` value is a tombstone). The format is keel's own,
//! versioned by a leading byte; the shell stores each as one record.

use bytes::{Buf, BufMut, Bytes, BytesMut};

const KEY_OFFSET: u8 = 1;
const KEY_GROUP: u8 = 2;
const VALUE_VERSION: u8 = 1;

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// A member as persisted with its group's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MemberRecord {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group's membership as of its last completed rebalance.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupRecord {
    pub protocol_type: String,
    pub generation_id: i32,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<MemberRecord>,
}

/// One record of `__consumer_offsets`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Record {
    Offset { group_id: String, topic: String, partition: i32, value: Option<CommittedOffset> },
    Group { group_id: String, value: Option<GroupRecord> },
}

impl Record {
    pub fn group_id(&self) -> &str {
        match self {
            Record::Offset { group_id, .. } | Record::Group { group_id, .. } => group_id,
        }
    }

    /// Key and value bytes (value `None` for a tombstone).
    pub fn encode(&self) -> (Bytes, Option<Bytes>) {
        let mut key = BytesMut::new();
        let mut value = BytesMut::new();
        match self {
            Record::Offset { group_id, topic, partition, value: v } => {
                key.put_u8(KEY_OFFSET);
                put_str(&mut key, group_id);
                put_str(&mut key, topic);
                key.put_i32(*partition);
                let Some(v) = v else { return (key.freeze(), None) };
                value.put_u8(VALUE_VERSION);
                value.put_i64(v.offset);
                value.put_i32(v.leader_epoch);
                put_str(&mut value, &v.metadata);
                value.put_i64(v.commit_timestamp_ms);
            }
            Record::Group { group_id, value: v } => {
                key.put_u8(KEY_GROUP);
                put_str(&mut key, group_id);
                let Some(v) = v else { return (key.freeze(), None) };
                value.put_u8(VALUE_VERSION);
                put_str(&mut value, &v.protocol_type);
                value.put_i32(v.generation_id);
                put_opt_str(&mut value, v.protocol_name.as_deref());
                put_opt_str(&mut value, v.leader.as_deref());
                value.put_i64(v.state_timestamp_ms);
                value.put_u32(v.members.len() as u32);
                for m in &v.members {
                    put_str(&mut value, &m.member_id);
                    put_opt_str(&mut value, m.group_instance_id.as_deref());
                    put_str(&mut value, &m.client_id);
                    put_str(&mut value, &m.client_host);
                    value.put_i32(m.session_timeout_ms);
                    value.put_i32(m.rebalance_timeout_ms);
                    put_bytes(&mut value, &m.metadata);
                    put_bytes(&mut value, &m.assignment);
                }
            }
        }
        (key.freeze(), Some(value.freeze()))
    }

    /// Parses a stored record; `Err` says why it cannot be one of the coordinator's.
    pub fn decode(mut key: Bytes, value: Option<Bytes>) -> Result<Record, String> {
        let kind = get_u8(&mut key)?;
        let group_id = get_str(&mut key)?;
        match kind {
            KEY_OFFSET => {
                let topic = get_str(&mut key)?;
                let partition = get_i32(&mut key)?;
                let value = match value {
                    None => None,
                    Some(mut v) => {
                        check_version(&mut v)?;
                        Some(CommittedOffset {
                            offset: get_i64(&mut v)?,
                            leader_epoch: get_i32(&mut v)?,
                            metadata: get_str(&mut v)?,
                            commit_timestamp_ms: get_i64(&mut v)?,
                        })
                    }
                };
                Ok(Record::Offset { group_id, topic, partition, value })
            }
            KEY_GROUP => {
                let value = match value {
                    None => None,
                    Some(mut v) => {
                        check_version(&mut v)?;
                        let protocol_type = get_str(&mut v)?;
                        let generation_id = get_i32(&mut v)?;
                        let protocol_name = get_opt_str(&mut v)?;
                        let leader = get_opt_str(&mut v)?;
                        let state_timestamp_ms = get_i64(&mut v)?;
                        let count = get_u32(&mut v)? as usize;
                        if count > v.remaining() {
                            return Err(format!("{count} members cannot fit in {} bytes", v.remaining()));
                        }
                        let mut members = Vec::with_capacity(count);
                        for _ in 0..count {
                            members.push(MemberRecord {
                                member_id: get_str(&mut v)?,
                                group_instance_id: get_opt_str(&mut v)?,
                                client_id: get_str(&mut v)?,
                                client_host: get_str(&mut v)?,
                                session_timeout_ms: get_i32(&mut v)?,
                                rebalance_timeout_ms: get_i32(&mut v)?,
                                metadata: get_bytes(&mut v)?,
                                assignment: get_bytes(&mut v)?,
                            });
                        }
                        Some(GroupRecord {
                            protocol_type,
                            generation_id,
                            protocol_name,
                            leader,
                            state_timestamp_ms,
                            members,
                        })
                    }
                };
                Ok(Record::Group { group_id, value })
            }
            other => Err(format!("unknown record kind {other}")),
        }
    }
}

fn check_version(v: &mut Bytes) -> Result<(), String> {
    match get_u8(v)? {
        VALUE_VERSION => Ok(()),
        other => Err(format!("unknown value version {other}")),
    }
}

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_u32(s.len() as u32);
    b.put_slice(s.as_bytes());
}

fn put_opt_str(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => {
            b.put_u8(1);
            put_str(b, s);
        }
        None => b.put_u8(0),
    }
}

fn put_bytes(b: &mut BytesMut, bytes: &[u8]) {
    b.put_u32(bytes.len() as u32);
    b.put_slice(bytes);
}

fn need(b: &Bytes, n: usize) -> Result<(), String> {
    if b.remaining() < n {
        Err(format!("truncated: need {n} bytes, {} left", b.remaining()))
    } else {
        Ok(())
    }
}

fn get_u8(b: &mut Bytes) -> Result<u8, String> {
    need(b, 1)?;
    Ok(b.get_u8())
}

fn get_u32(b: &mut Bytes) -> Result<u32, String> {
    need(b, 4)?;
    Ok(b.get_u32())
}

fn get_i32(b: &mut Bytes) -> Result<i32, String> {
    need(b, 4)?;
    Ok(b.get_i32())
}

fn get_i64(b: &mut Bytes) -> Result<i64, String> {
    need(b, 8)?;
    Ok(b.get_i64())
}

fn get_bytes(b: &mut Bytes) -> Result<Bytes, String> {
    let len = get_u32(b)? as usize;
    need(b, len)?;
    Ok(b.split_to(len))
}

fn get_str(b: &mut Bytes) -> Result<String, String> {
    String::from_utf8(get_bytes(b)?.to_vec()).map_err(|_| "string is not UTF-8".to_string())
}

fn get_opt_str(b: &mut Bytes) -> Result<Option<String>, String> {
    match get_u8(b)? {
        0 => Ok(None),
        _ => get_str(b).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_refused() {
        let records = [
            Record::Offset {
                group_id: "g".into(),
                topic: "t".into(),
                partition: 3,
                value: Some(CommittedOffset {
                    offset: 42,
                    leader_epoch: 1,
                    metadata: "m".into(),
                    commit_timestamp_ms: 9,
                }),
            },
            Record::Offset { group_id: "g".into(), topic: "t".into(), partition: 3, value: None },
            Record::Group {
                group_id: "g".into(),
                value: Some(GroupRecord {
                    protocol_type: "consumer".into(),
                    generation_id: 4,
                    protocol_name: Some("range".into()),
                    leader: Some("m-1".into()),
                    state_timestamp_ms: 5,
                    members: vec![MemberRecord {
                        member_id: "m-1".into(),
                        group_instance_id: Some("i".into()),
                        client_id: "c".into(),
                        client_host: "/127.0.0.1".into(),
                        session_timeout_ms: 10_000,
                        rebalance_timeout_ms: 30_000,
                        metadata: Bytes::from_static(b"meta"),
                        assignment: Bytes::from_static(b"assign"),
                    }],
                }),
            },
            Record::Group { group_id: "g".into(), value: None },
        ];
        for record in records {
            let (key, value) = record.encode();
            assert_eq!(Record::decode(key, value).unwrap(), record);
        }
        assert!(Record::decode(Bytes::from_static(&[9, 0, 0, 0, 0]), None).is_err());
        assert!(Record::decode(Bytes::from_static(&[2, 0, 0, 0, 9, b'g']), None).is_err());
        let (key, _) = Record::Group { group_id: "g".into(), value: None }.encode();
        let huge_count = Bytes::from_static(&[
            1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
        ]);
        assert!(Record::decode(key, Some(huge_count)).is_err());
    }
}
