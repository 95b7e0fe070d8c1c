//! The Kafka event as Lambda's self-managed Kafka / MSK event source delivers it:
//! records grouped under `"<topic>-<partition>"`, key and value in base64, headers
//! as a list of one-entry maps of signed bytes.

use crate::Error;
use aws_lambda_events::kafka::{KafkaEvent, KafkaRecord};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::hash::Hash;

/// One record with its key, value and headers decoded to bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedRecord {
    pub topic: String,
    pub partition: i64,
    pub offset: i64,
    /// The record's timestamp, epoch milliseconds.
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl DecodedRecord {
    /// The first header called `name`, as UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// `topic-partition@offset`, for logs and error messages.
    pub fn coordinates(&self) -> String {
        format!("{}-{}@{}", self.topic, self.partition, self.offset)
    }
}

fn decode_base64(what: &str, text: &str) -> Result<Vec<u8>, Error> {
    STANDARD
        .decode(text)
        .map_err(|e| Error::malformed(format!("the record's {what} is not base64: {e}")))
}

fn headers_of(record: &KafkaRecord) -> Vec<(String, Vec<u8>)> {
    record
        .headers
        .iter()
        .flat_map(|map| map.iter())
        .map(|(name, bytes)| (name.clone(), bytes.iter().map(|b| *b as u8).collect()))
        .collect()
}

/// Decodes one record. A record that is not valid base64 is malformed.
pub fn decode_record(record: &KafkaRecord) -> Result<DecodedRecord, Error> {
    Ok(DecodedRecord {
        topic: record.topic.clone().unwrap_or_default(),
        partition: record.partition,
        offset: record.offset,
        timestamp_ms: record.timestamp.timestamp_millis(),
        key: record
            .key
            .as_deref()
            .map(|k| decode_base64("key", k))
            .transpose()?,
        value: record
            .value
            .as_deref()
            .map(|v| decode_base64("value", v))
            .transpose()?,
        headers: headers_of(record),
    })
}

/// `topic-partition@offset` of a record as Lambda delivers it, for logs.
pub fn coordinates(record: &KafkaRecord) -> String {
    format!(
        "{}-{}@{}",
        record.topic.as_deref().unwrap_or_default(),
        record.partition,
        record.offset
    )
}

/// A record's key as text (the reservation id, for the relay's records), when
/// it is base64 of UTF-8.
pub fn key_text(record: &KafkaRecord) -> Option<String> {
    let bytes = STANDARD.decode(record.key.as_deref()?).ok()?;
    String::from_utf8(bytes).ok()
}

/// Decodes what can be decoded: a key or value that is not base64 is kept as the
/// text it arrived as. For dead letters, which must carry even a poison record.
pub fn decode_lossy(record: &KafkaRecord) -> DecodedRecord {
    let lossy = |text: &Option<String>| {
        text.as_deref()
            .map(|t| STANDARD.decode(t).unwrap_or_else(|_| t.as_bytes().to_vec()))
    };
    DecodedRecord {
        topic: record.topic.clone().unwrap_or_default(),
        partition: record.partition,
        offset: record.offset,
        timestamp_ms: record.timestamp.timestamp_millis(),
        key: lossy(&record.key),
        value: lossy(&record.value),
        headers: headers_of(record),
    }
}

/// The partial-batch answer of a Kafka-triggered function (the upstream crate has
/// none yet): `{"batchItemFailures": [{"itemIdentifier": {"partition":
/// "<topic>-<n>", "offset": n}}]}`. Lambda then resumes each listed partition from
/// its failed offset. An empty list means the whole batch succeeded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaBatchResponse {
    pub batch_item_failures: Vec<KafkaBatchItemFailure>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaBatchItemFailure {
    pub item_identifier: KafkaItemIdentifier,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaItemIdentifier {
    /// `"<topic>-<partition>"`, as the event's record keys.
    pub partition: String,
    pub offset: i64,
}

impl KafkaBatchResponse {
    pub fn fail(&mut self, topic: &str, partition: i64, offset: i64) {
        self.batch_item_failures.push(KafkaBatchItemFailure {
            item_identifier: KafkaItemIdentifier {
                partition: format!("{topic}-{partition}"),
                offset,
            },
        });
    }

    /// The lowest failed offset of each `"<topic>-<partition>"`.
    pub fn resume_points(&self) -> HashMap<String, i64> {
        let mut points: HashMap<String, i64> = HashMap::new();
        for f in &self.batch_item_failures {
            let id = &f.item_identifier;
            let entry = points.entry(id.partition.clone()).or_insert(id.offset);
            *entry = (*entry).min(id.offset);
        }
        points
    }
}

/// The record as Lambda's Kafka event carries it: base64 key and value, headers
/// as signed bytes.
pub fn encode_record(record: &DecodedRecord) -> KafkaRecord {
    let mut out = KafkaRecord::default();
    out.topic = Some(record.topic.clone());
    out.partition = record.partition;
    out.offset = record.offset;
    out.timestamp = aws_lambda_events::encodings::MillisecondTimestamp(
        chrono::DateTime::from_timestamp_millis(record.timestamp_ms).unwrap_or_default(),
    );
    out.timestamp_type = Some("CREATE_TIME".into());
    out.key = record.key.as_ref().map(|k| STANDARD.encode(k));
    out.value = record.value.as_ref().map(|v| STANDARD.encode(v));
    out.headers = encode_headers(
        record
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice())),
    );
    out
}

/// The headers as Lambda sends them: one map per header, bytes as signed numbers.
pub fn encode_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Vec<HashMap<String, Vec<i8>>> {
    headers
        .into_iter()
        .map(|(name, value)| {
            HashMap::from([(
                name.to_owned(),
                value.iter().map(|b| *b as i8).collect::<Vec<i8>>(),
            )])
        })
        .collect()
}

/// Every record of the event, partition by partition, each partition in offset
/// order: the order in which they must be handled.
pub fn records_in_order(event: &KafkaEvent) -> Vec<&KafkaRecord> {
    let mut partitions: Vec<(&String, &Vec<KafkaRecord>)> = event.records.iter().collect();
    partitions.sort_by(|a, b| a.0.cmp(b.0));
    partitions
        .into_iter()
        .flat_map(|(_, records)| {
            let mut sorted: Vec<&KafkaRecord> = records.iter().collect();
            sorted.sort_by_key(|r| r.offset);
            sorted
        })
        .collect()
}

/// The records of the event in groups that may be handled concurrently: one group
/// per partition and key (the reservation, for the pipeline's topics), each in
/// offset order, so the events of one key keep their order. A partition's
/// records without a key form one group. Groups come in partition order, then
/// by their first offset.
pub fn records_by_key(event: &KafkaEvent) -> Vec<Vec<&KafkaRecord>> {
    group_by_key(records_in_order(event), |record| {
        (
            record.topic.as_deref(),
            record.partition,
            record.key.as_deref(),
        )
    })
}

/// Groups `items` by `key`: each group keeps its items in the order they came,
/// and the groups come in the order of their first item. What lets the events
/// of different keys run at once while one key's stay in order.
pub fn group_by_key<T, K: Hash + Eq>(
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> K,
) -> Vec<Vec<T>> {
    let mut groups: Vec<Vec<T>> = Vec::new();
    let mut index: HashMap<K, usize> = HashMap::new();
    for item in items {
        let at = *index.entry(key(&item)).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[at].push(item);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAMBDA_KAFKA_EVENT: &str = r#"{
      "eventSource": "SelfManagedKafka",
      "bootstrapServers": "127.0.0.1:9092",
      "records": {
        "payment.completed-0": [
          {"topic": "payment.completed", "partition": 0, "offset": 16,
           "timestamp": 1545084650987, "timestampType": "CREATE_TIME",
           "key": "cmVzLTE=", "value": "eyJhIjoxfQ==",
           "headers": [{"event-id": [101, 45, 49]}, {"neg": [-1, 0]}]},
          {"topic": "payment.completed", "partition": 0, "offset": 15,
           "timestamp": 1545084650986, "timestampType": "CREATE_TIME",
           "key": null, "value": "e30=", "headers": []}
        ]
      }
    }"#;

    #[test]
    fn a_lambda_kafka_event_decodes_key_value_and_signed_byte_headers() {
        let event: KafkaEvent = serde_json::from_str(LAMBDA_KAFKA_EVENT).unwrap();
        let ordered = records_in_order(&event);
        assert_eq!(
            ordered.iter().map(|r| r.offset).collect::<Vec<_>>(),
            [15, 16]
        );
        let record = decode_record(ordered[1]).unwrap();
        assert_eq!(record.key.as_deref(), Some(&b"res-1"[..]));
        assert_eq!(record.value.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(record.header("event-id"), Some("e-1"));
        assert_eq!(record.headers[1].1, vec![255u8, 0]);
        assert_eq!(record.coordinates(), "payment.completed-0@16");
        assert_eq!(decode_record(ordered[0]).unwrap().key, None);
    }

    #[test]
    fn records_group_by_partition_and_key_each_in_offset_order() {
        let record = |partition: i64, offset: i64, key: Option<&str>| {
            serde_json::json!({"topic": "t", "partition": partition, "offset": offset,
                "timestamp": 0, "timestampType": "CREATE_TIME",
                "key": key.map(|k| STANDARD.encode(k)), "value": "e30=", "headers": []})
        };
        let event: KafkaEvent = serde_json::from_value(serde_json::json!({
            "eventSource": "SelfManagedKafka",
            "records": {
                "t-1": [record(1, 7, Some("a")), record(1, 5, Some("a"))],
                "t-0": [record(0, 3, Some("b")), record(0, 1, Some("a")),
                        record(0, 2, None), record(0, 4, Some("a")), record(0, 6, None)],
            }
        }))
        .unwrap();
        let groups: Vec<Vec<(i64, i64)>> = records_by_key(&event)
            .iter()
            .map(|g| g.iter().map(|r| (r.partition, r.offset)).collect())
            .collect();
        // The same key on another partition is another group.
        assert_eq!(
            groups,
            vec![
                vec![(0, 1), (0, 4)],
                vec![(0, 2), (0, 6)],
                vec![(0, 3)],
                vec![(1, 5), (1, 7)],
            ]
        );
    }

    #[test]
    fn groups_keep_their_items_in_order_and_come_in_first_seen_order() {
        let groups = group_by_key(["b1", "a1", "b2", "c1", "a2", "b3"], |s| s.as_bytes()[0]);
        assert_eq!(
            groups,
            vec![vec!["b1", "b2", "b3"], vec!["a1", "a2"], vec!["c1"]]
        );
    }

    #[test]
    fn an_encoded_record_decodes_back_to_itself() {
        let record = DecodedRecord {
            topic: "t".into(),
            partition: 1,
            offset: 9,
            timestamp_ms: 1_800_000_000_123,
            key: Some(b"k".to_vec()),
            value: None,
            headers: vec![("h".into(), vec![0, 255])],
        };
        assert_eq!(decode_record(&encode_record(&record)).unwrap(), record);
    }

    #[test]
    fn a_value_that_is_not_base64_is_malformed() {
        let mut record = KafkaRecord::default();
        record.value = Some("%%%".into());
        assert!(matches!(decode_record(&record), Err(Error::Malformed(_))));
    }

    #[test]
    fn a_lossy_decode_keeps_text_that_is_not_base64() {
        let mut record = KafkaRecord::default();
        record.value = Some("%%%".into());
        record.key = Some("cmVzLTE=".into());
        let decoded = decode_lossy(&record);
        assert_eq!(decoded.value.as_deref(), Some(&b"%%%"[..]));
        assert_eq!(decoded.key.as_deref(), Some(&b"res-1"[..]));
    }

    #[test]
    fn the_batch_response_serialises_as_lambda_reads_it() {
        let mut response = KafkaBatchResponse::default();
        response.fail("payment.completed", 2, 40);
        response.fail("payment.completed", 2, 38);
        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"batchItemFailures": [
                {"itemIdentifier": {"partition": "payment.completed-2", "offset": 40}},
                {"itemIdentifier": {"partition": "payment.completed-2", "offset": 38}},
            ]})
        );
        assert_eq!(response.resume_points()["payment.completed-2"], 38);
        let empty: KafkaBatchResponse =
            serde_json::from_str(r#"{"batchItemFailures": []}"#).unwrap();
        assert!(empty.resume_points().is_empty());
    }

    #[test]
    fn encoded_headers_decode_back_to_the_same_bytes() {
        let mut record = KafkaRecord::default();
        record.headers = encode_headers([("h", &[0u8, 127, 128, 255][..])]);
        assert_eq!(
            decode_record(&record).unwrap().headers,
            vec![("h".to_owned(), vec![0u8, 127, 128, 255])]
        );
    }
}
