//! The spans the handlers' work runs in. Each carries the ids of its work, so
//! every log line of one request or record can be found by one id: Lambda's
//! request id, the event id, the reservation id, and a Kafka record's
//! `topic-partition@offset`. An id learnt later (the event id once a record's
//! value parsed, the reservation once a request's body did) is declared empty
//! here and recorded with `record_*` then.

use tracing::field::{Empty, display};
use tracing::{Span, info_span};

/// One invocation of a scheduled or stream-triggered `function`; a run that
/// writes events records the trace they carry (`trace_id`).
pub fn invocation(function: &'static str, request_id: &str) -> Span {
    info_span!("invocation", function, request_id, trace_id = Empty)
}

/// One HTTP request to `function`; its reservation is recorded once known,
/// and the trace it starts (`trace_id`) by the functions that write events.
pub fn http_request(function: &'static str, request_id: &str, method: &str, path: &str) -> Span {
    info_span!(
        "request",
        function,
        request_id,
        method,
        path,
        reservation_id = Empty,
        trace_id = Empty
    )
}

/// One Kafka record: `at` is `topic-partition@offset`, the key its
/// reservation; its event id and the trace its `traceparent` header carries
/// are recorded once the record decoded.
pub fn kafka_record(at: &str, reservation_id: Option<&str>) -> Span {
    info_span!(
        "record",
        at,
        reservation_id,
        event_id = Empty,
        trace_id = Empty
    )
}

/// One dead letter being retried: where its original record was, its event,
/// reservation, channel (`-` for the whole record) and retries so far.
pub fn dead_letter(
    at: &str,
    event_id: &str,
    reservation_id: Option<&str>,
    channel: &str,
    retry_count: u32,
) -> Span {
    info_span!(
        "dead_letter",
        at,
        event_id,
        reservation_id,
        channel,
        retry_count,
        trace_id = Empty
    )
}

/// One outbox item of a stream batch; the trace it carries is recorded once
/// its record is read.
pub fn outbox_item(sequence_number: &str, event_id: &str, reservation_id: &str) -> Span {
    info_span!(
        "outbox_item",
        sequence_number,
        event_id,
        reservation_id,
        trace_id = Empty
    )
}

/// One expired hold being released.
pub fn expired_hold(reservation_id: &str, seat_id: &str) -> Span {
    info_span!("expired_hold", reservation_id, seat_id)
}

/// Records the reservation of the current request or record.
pub fn record_reservation(reservation_id: impl std::fmt::Display) {
    Span::current().record("reservation_id", display(reservation_id));
}

/// Records the trace id of the current record (its `traceparent`), if it has one.
pub fn record_trace(traceparent: Option<&str>) {
    if let Some(trace) = traceparent.and_then(crate::trace::TraceContext::parse) {
        Span::current().record("trace_id", trace.trace_id());
    }
}

/// Records the event of the current record.
pub fn record_event(event_id: impl std::fmt::Display) {
    Span::current().record("event_id", display(event_id));
}
