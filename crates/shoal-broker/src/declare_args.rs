//! RabbitMQ's checks of a new queue's `x-` arguments, in its order and with
//! its error texts (a channel close 406 PRECONDITION_FAILED), e.g.
//! `invalid arg 'x-max-priority' for queue 'q' in vhost '/':
//! {max_value_exceeded,256}`. Arguments RabbitMQ does not know are
//! accepted and ignored, as it does; arguments of its other queue types
//! (quorum, stream) are refused as a classic queue refuses them.

use crate::error::{AmqpError, AmqpResult};
use crate::message::{value_as_i64, value_as_str};
use crate::queue::type_name;
use amq_protocol::types::{AMQPValue, FieldTable};

/// Arguments of RabbitMQ's quorum and stream queues that a classic queue
/// refuses (`... of queue type rabbit_classic_queue`).
const NOT_CLASSIC: [&str; 9] = [
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-quorum-initial-group-size",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
    "x-delivery-limit",
    "x-dead-letter-strategy",
];

/// An integer of one of the types RabbitMQ takes for a numeric argument
/// (any width, not a timestamp).
fn int(v: &AMQPValue) -> Result<i64, String> {
    match (v, value_as_i64(v)) {
        (AMQPValue::Timestamp(_), _) | (_, None) => {
            Err(format!("\"expected integer, got {}\"", type_name(v)))
        }
        (_, Some(n)) => Ok(n),
    }
}

fn non_negative(v: &AMQPValue) -> Result<i64, String> {
    match int(v)? {
        n if n < 0 => Err(format!("{{value_negative,{n}}}")),
        n => Ok(n),
    }
}

/// A long string (the only string type RabbitMQ takes in an argument).
fn text(v: &AMQPValue) -> Result<&str, String> {
    match v {
        AMQPValue::LongString(_) => {
            value_as_str(v).ok_or_else(|| "{unacceptable_type,longstr}".to_string())
        }
        other => Err(format!("{{unacceptable_type,{}}}", type_name(other))),
    }
}

/// Why RabbitMQ refuses `v` as the value of `key`, if it does.
fn refusal(key: &str, v: &AMQPValue, args: &FieldTable) -> Option<String> {
    let checked: Result<(), String> = match key {
        "x-expires" => int(v).and_then(|n| match n {
            0 => Err("{value_zero,0}".to_string()),
            n if n < 0 => Err(format!("{{value_negative,{n}}}")),
            _ => Ok(()),
        }),
        "x-message-ttl" | "x-max-length" | "x-max-length-bytes" => non_negative(v).map(drop),
        "x-dead-letter-exchange" => text(v).map(drop),
        "x-dead-letter-routing-key" => text(v).and_then(|_| {
            if args.inner().contains_key("x-dead-letter-exchange") {
                Ok(())
            } else {
                Err("routing_key_but_no_dlx_defined".to_string())
            }
        }),
        "x-max-priority" => non_negative(v).and_then(|n| {
            if n > 255 {
                Err(format!("{{max_value_exceeded,{n}}}"))
            } else {
                Ok(())
            }
        }),
        "x-overflow" => text(v).and_then(|s| match crate::queue::Overflow::from_name(s) {
            Some(_) => Ok(()),
            None => Err("invalid_overflow".to_string()),
        }),
        "x-queue-mode" => text(v).and_then(|s| match s {
            "default" | "lazy" => Ok(()),
            other => Err(format!("\"unsupported queue mode '{other}'\"")),
        }),
        "x-queue-version" => int(v).and_then(|n| match n {
            1 | 2 => Ok(()),
            other => Err(format!("\"unsupported queue version '{other}'\"")),
        }),
        "x-single-active-consumer" => match v {
            AMQPValue::Boolean(_) => Ok(()),
            other => Err(format!("{{unacceptable_type,{}}}", type_name(other))),
        },
        _ => Ok(()),
    };
    checked.err()
}

/// Check the arguments of a queue about to be declared (not one that
/// exists: a declare of an existing queue is checked for equivalence).
pub fn check(args: &FieldTable, queue: &str, vhost: &str) -> AmqpResult<()> {
    // The dead-letter exchange's type is checked first, with its own words.
    if let Some(v) = args.inner().get("x-dead-letter-exchange") {
        if !matches!(v, AMQPValue::LongString(_)) {
            return Err(AmqpError::precondition_failed(format!(
                "invalid type '{}' for arg 'x-dead-letter-exchange' in queue '{queue}' in vhost '{vhost}'",
                type_name(v)
            )));
        }
    }
    // The arguments a redeclare compares, in RabbitMQ's order of checks,
    // and x-queue-version.
    for &key in crate::queue::EQUIVALENCE_ARGS
        .iter()
        .chain(&["x-queue-version"])
    {
        if key == "x-queue-type" {
            crate::queue::check_queue_type(args, queue, vhost)?;
            continue;
        }
        let Some(v) = args.inner().get(key) else {
            continue;
        };
        if let Some(why) = refusal(key, v, args) {
            return Err(AmqpError::precondition_failed(format!(
                "invalid arg '{key}' for queue '{queue}' in vhost '{vhost}': {why}"
            )));
        }
    }
    if let Some(key) = NOT_CLASSIC.iter().find(|k| args.inner().contains_key(**k)) {
        return Err(AmqpError::precondition_failed(format!(
            "invalid arg '{key}' for queue '{queue}' in vhost '{vhost}' of queue type rabbit_classic_queue"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::LongString;

    fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    fn refused(pairs: &[(&str, AMQPValue)]) -> String {
        let text = check(&table(pairs), "q", "/").unwrap_err().text;
        text.trim_start_matches("PRECONDITION_FAILED - ")
            .to_string()
    }

    fn s(v: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(v))
    }

    #[test]
    fn rabbitmq_words_for_bad_arguments() {
        let int = AMQPValue::LongInt;
        assert_eq!(
            refused(&[("x-max-priority", int(256))]),
            "invalid arg 'x-max-priority' for queue 'q' in vhost '/': {max_value_exceeded,256}"
        );
        assert_eq!(
            refused(&[("x-max-length", s("abc"))]),
            "invalid arg 'x-max-length' for queue 'q' in vhost '/': \"expected integer, got longstr\""
        );
        assert_eq!(
            refused(&[("x-expires", int(0))]),
            "invalid arg 'x-expires' for queue 'q' in vhost '/': {value_zero,0}"
        );
        assert_eq!(
            refused(&[("x-message-ttl", int(-5))]),
            "invalid arg 'x-message-ttl' for queue 'q' in vhost '/': {value_negative,-5}"
        );
        assert_eq!(
            refused(&[("x-dead-letter-routing-key", s("k"))]),
            "invalid arg 'x-dead-letter-routing-key' for queue 'q' in vhost '/': routing_key_but_no_dlx_defined"
        );
        assert_eq!(
            refused(&[("x-overflow", s("foo"))]),
            "invalid arg 'x-overflow' for queue 'q' in vhost '/': invalid_overflow"
        );
        assert_eq!(
            refused(&[("x-queue-mode", s("foo"))]),
            "invalid arg 'x-queue-mode' for queue 'q' in vhost '/': \"unsupported queue mode 'foo'\""
        );
        assert_eq!(
            refused(&[("x-single-active-consumer", s("yes"))]),
            "invalid arg 'x-single-active-consumer' for queue 'q' in vhost '/': {unacceptable_type,longstr}"
        );
        assert_eq!(
            refused(&[("x-dead-letter-exchange", AMQPValue::ShortShortInt(5))]),
            "invalid type 'byte' for arg 'x-dead-letter-exchange' in queue 'q' in vhost '/'"
        );
        assert_eq!(
            refused(&[("x-delivery-limit", int(1))]),
            "invalid arg 'x-delivery-limit' for queue 'q' in vhost '/' of queue type rabbit_classic_queue"
        );
    }

    #[test]
    fn good_and_unknown_arguments_pass() {
        let ok = table(&[
            ("x-max-priority", AMQPValue::LongInt(255)),
            ("x-queue-mode", s("lazy")),
            ("x-queue-version", AMQPValue::ShortShortUInt(2)),
            ("x-dead-letter-exchange", s("")),
            ("x-dead-letter-routing-key", s("k")),
            ("x-queue-master-locator", s("min-masters")),
            ("x-whatever", AMQPValue::Boolean(true)),
        ]);
        assert!(check(&ok, "q", "/").is_ok());
    }
}
