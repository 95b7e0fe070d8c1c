//! The trace context that follows an event from the request that caused it to
//! the message it ends in: W3C `traceparent`. The payment (or a seat-expiration
//! run) takes its invocation's X-Ray trace when Lambda traces it, else starts
//! one; the outbox item keeps it, the relay puts it on the Kafka record as the
//! `traceparent` header, dead letters carry it with the other headers, and the
//! notifier and dlq-retry log its trace id with every line of the record. One
//! id (the X-Ray root, in W3C form) finds the whole story.

/// The Kafka header (and outbox attribute) that carries the context.
pub const HEADER: &str = "traceparent";

/// A W3C trace context: the trace, the span that caused this one, sampled or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits, never all zero.
    trace_id: String,
    /// 16 lowercase hex digits, never all zero.
    parent_id: String,
    sampled: bool,
}

fn is_hex_id(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && text.bytes().any(|b| b != b'0')
}

/// 16 random hex digits (a span id).
fn random_span_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_owned()
}

impl TraceContext {
    /// Reads a `traceparent` value (version 00); `None` when it is not one.
    pub fn parse(traceparent: &str) -> Option<Self> {
        let mut parts = traceparent.trim().split('-');
        let (version, trace_id, parent_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let valid = version == "00"
            && parts.next().is_none()
            && is_hex_id(trace_id, 32)
            && is_hex_id(parent_id, 16)
            && flags.len() == 2;
        let flags = u8::from_str_radix(flags, 16).ok().filter(|_| valid)?;
        Some(TraceContext {
            trace_id: trace_id.to_owned(),
            parent_id: parent_id.to_owned(),
            sampled: flags & 1 == 1,
        })
    }

    /// Reads Lambda's X-Ray trace header (`Root=1-<8 hex>-<24 hex>;Parent=<16
    /// hex>;Sampled=1`): its root becomes the trace id, as X-Ray's W3C form.
    pub fn from_xray(header: &str) -> Option<Self> {
        let field = |name: &str| {
            header
                .split(';')
                .filter_map(|part| part.trim().split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v)
        };
        let root = field("Root")?.strip_prefix("1-")?;
        let (time, random) = root.split_once('-')?;
        let trace_id = format!("{time}{random}").to_ascii_lowercase();
        let parent_id = field("Parent")
            .map(str::to_ascii_lowercase)
            .filter(|p| is_hex_id(p, 16))
            .unwrap_or_else(random_span_id);
        (time.len() == 8 && is_hex_id(&trace_id, 32)).then(|| TraceContext {
            trace_id,
            parent_id,
            sampled: field("Sampled") == Some("1"),
        })
    }

    /// A new trace, for work no trace reached.
    pub fn new_root() -> Self {
        TraceContext {
            trace_id: uuid::Uuid::new_v4().simple().to_string(),
            parent_id: random_span_id(),
            sampled: false,
        }
    }

    /// The invocation's trace: Lambda's X-Ray header when it has one, else a new one.
    pub fn for_invocation(xray_trace_id: Option<&str>) -> Self {
        xray_trace_id
            .and_then(Self::from_xray)
            .unwrap_or_else(Self::new_root)
    }

    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    /// The `traceparent` value.
    pub fn traceparent(&self) -> String {
        let flags = if self.sampled { "01" } else { "00" };
        format!("00-{}-{}-{flags}", self.trace_id, self.parent_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_xray_header_becomes_the_same_trace_in_w3c_form() {
        let xray = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
        let trace = TraceContext::from_xray(xray).unwrap();
        assert_eq!(trace.trace_id(), "5759e988bd862e3fe1be46a994272793");
        let traceparent = trace.traceparent();
        assert_eq!(
            traceparent,
            "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01"
        );
        assert_eq!(TraceContext::parse(&traceparent), Some(trace));
    }

    #[test]
    fn without_a_usable_xray_header_an_invocation_starts_its_own_trace() {
        for header in [None, Some("Root=nonsense"), Some("Parent=53995c3f42cd8ad8")] {
            let trace = TraceContext::for_invocation(header);
            let again = TraceContext::parse(&trace.traceparent()).unwrap();
            assert_eq!(again, trace, "{header:?}");
        }
        assert_ne!(
            TraceContext::new_root().trace_id(),
            TraceContext::new_root().trace_id()
        );
    }

    #[test]
    fn a_value_that_is_not_a_traceparent_is_refused() {
        let zero_trace = format!("00-{}-53995c3f42cd8ad8-01", "0".repeat(32));
        for bad in [
            "",
            "01-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01",
            "00-5759E988BD862E3FE1BE46A994272793-53995c3f42cd8ad8-01",
            "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8",
            "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01-x",
            zero_trace.as_str(),
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }
}
