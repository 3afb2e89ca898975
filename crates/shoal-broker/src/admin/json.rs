//! JSON conversions of the management API: AMQP field tables and message
//! properties to and from JSON as RabbitMQ's management plugin writes them,
//! lenient scalar fields (rabbitmqadmin sends `"durable": "true"` and
//! `"count": "1"`), and the query options of list views (`columns`,
//! `sort`, and RabbitMQ's pagination: `page`, `page_size`, `name`,
//! `use_regex`).

use super::ApiError;
use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use serde_json::{json, Map, Value};

/// A field-table value as JSON (RabbitMQ's management plugin shape:
/// numbers, strings, booleans, nested objects and arrays).
pub fn amqp_to_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(n) => json!(n),
        AMQPValue::ShortShortUInt(n) => json!(n),
        AMQPValue::ShortInt(n) => json!(n),
        AMQPValue::ShortUInt(n) => json!(n),
        AMQPValue::LongInt(n) => json!(n),
        AMQPValue::LongUInt(n) => json!(n),
        AMQPValue::LongLongInt(n) => json!(n),
        AMQPValue::Timestamp(n) => json!(n),
        AMQPValue::Float(f) => json!(f),
        AMQPValue::Double(f) => json!(f),
        AMQPValue::DecimalValue(d) => {
            json!(f64::from(d.value) / 10f64.powi(i32::from(d.scale)))
        }
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ByteArray(b) => json!(String::from_utf8_lossy(b.as_slice())),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(amqp_to_json).collect()),
        AMQPValue::FieldTable(t) => table_to_json(t),
        AMQPValue::Void => Value::Null,
    }
}

/// A field table as a JSON object.
pub fn table_to_json(t: &FieldTable) -> Value {
    Value::Object(
        t.inner()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), amqp_to_json(v)))
            .collect(),
    )
}

fn json_to_amqp(v: &Value) -> Result<AMQPValue, String> {
    Ok(match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        Value::Array(a) => AMQPValue::FieldArray(FieldArray::from(
            a.iter().map(json_to_amqp).collect::<Result<Vec<_>, _>>()?,
        )),
        Value::Object(_) => AMQPValue::FieldTable(json_to_table(v, "table")?),
    })
}

/// A JSON object (or null / absent) as a field table; `what` names it in errors.
pub fn json_to_table(v: &Value, what: &str) -> Result<FieldTable, String> {
    let mut t = FieldTable::default();
    match v {
        Value::Null => {}
        Value::Object(m) => {
            for (k, v) in m {
                let key = ShortString::try_new(k.as_str())
                    .map_err(|_| format!("{what}: key {k:?} is longer than 255 bytes"))?;
                t.insert(key, json_to_amqp(v)?);
            }
        }
        _ => return Err(format!("{what} must be a JSON object")),
    }
    Ok(t)
}

/// Message properties as the management API shows them.
pub fn props_to_json(p: &BasicProperties) -> Value {
    let mut m = Map::new();
    let mut s = |k: &str, v: &Option<ShortString>| {
        if let Some(v) = v {
            m.insert(k.to_string(), json!(v.as_str()));
        }
    };
    s("content_type", p.content_type());
    s("content_encoding", p.content_encoding());
    s("correlation_id", p.correlation_id());
    s("reply_to", p.reply_to());
    s("expiration", p.expiration());
    s("message_id", p.message_id());
    s("type", p.kind());
    s("user_id", p.user_id());
    s("app_id", p.app_id());
    s("cluster_id", p.cluster_id());
    if let Some(d) = p.delivery_mode() {
        m.insert("delivery_mode".into(), json!(d));
    }
    if let Some(d) = p.priority() {
        m.insert("priority".into(), json!(d));
    }
    if let Some(t) = p.timestamp() {
        m.insert("timestamp".into(), json!(t));
    }
    if let Some(h) = p.headers() {
        m.insert("headers".into(), table_to_json(h));
    }
    Value::Object(m)
}

/// Properties from the JSON a publish request carries; an unknown
/// property or a value of the wrong type is an error naming it.
pub fn json_to_props(v: &Value) -> Result<BasicProperties, String> {
    let mut p = BasicProperties::default();
    let m = match v {
        Value::Null => return Ok(p),
        Value::Object(m) => m,
        _ => return Err("properties must be a JSON object".into()),
    };
    for (k, v) in m {
        let text = || -> Result<ShortString, String> {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(format!("property {k} must be a string")),
            };
            ShortString::try_new(s).map_err(|_| format!("property {k} is longer than 255 bytes"))
        };
        let int = |max: u64| -> Result<u64, String> {
            match scalar_u64(v) {
                Some(n) if n <= max => Ok(n),
                _ => Err(format!("property {k} must be an integer from 0 to {max}")),
            }
        };
        p = match k.as_str() {
            "content_type" => p.with_content_type(text()?),
            "content_encoding" => p.with_content_encoding(text()?),
            "correlation_id" => p.with_correlation_id(text()?),
            "reply_to" => p.with_reply_to(text()?),
            "expiration" => p.with_expiration(text()?),
            "message_id" => p.with_message_id(text()?),
            "type" => p.with_type(text()?),
            "user_id" => p.with_user_id(text()?),
            "app_id" => p.with_app_id(text()?),
            "cluster_id" => p.with_cluster_id(text()?),
            "delivery_mode" => p.with_delivery_mode(int(2)? as u8),
            "priority" => p.with_priority(int(255)? as u8),
            "timestamp" => p.with_timestamp(int(u64::MAX)?),
            "headers" => p.with_headers(json_to_table(v, "headers")?),
            other => return Err(format!("unknown property {other:?}")),
        };
    }
    Ok(p)
}

/// A boolean field: JSON true/false or the strings "true"/"false"
/// (rabbitmqadmin's form); absent gives `default`.
pub fn field_bool(body: &Value, key: &str, default: bool) -> Result<bool, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(v) => Err(ApiError::bad_request(format!(
            "{key} must be true or false, not {v}"
        ))),
    }
}

fn scalar_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A non-negative integer field (a JSON number or a numeric string).
pub fn field_u64(body: &Value, key: &str) -> Result<Option<u64>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => scalar_u64(v).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!("{key} must be a non-negative integer, not {v}"))
        }),
    }
}

/// A string field.
pub fn field_str<'a>(body: &'a Value, key: &str) -> Result<Option<&'a str>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(ApiError::bad_request(format!(
            "{key} must be a string, not {v}"
        ))),
    }
}

/// The `arguments` field as a field table.
pub fn field_args(body: &Value) -> Result<FieldTable, ApiError> {
    json_to_table(body.get("arguments").unwrap_or(&Value::Null), "arguments")
        .map_err(ApiError::bad_request)
}

fn lookup<'a>(v: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(v, |v, k| v.get(k))
}

/// Keep only `columns` (comma-separated, dotted for nested fields, as
/// rabbitmqadmin asks for `queue_totals.messages`) of an object.
fn pick(v: &Value, columns: &[&str]) -> Value {
    let mut out = Value::Object(Map::new());
    for c in columns {
        let Some(found) = lookup(v, c) else { continue };
        let mut at = &mut out;
        let parts: Vec<&str> = c.split('.').collect();
        for (i, p) in parts.iter().enumerate() {
            let Some(obj) = at.as_object_mut() else { break };
            if i + 1 == parts.len() {
                obj.insert(p.to_string(), found.clone());
                break;
            }
            at = obj
                .entry(p.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    out
}

/// Largest `page_size` a paginated list answers, as RabbitMQ's.
pub const MAX_PAGE_SIZE: usize = 500;
/// `page_size` when a paginated request leaves it out, as RabbitMQ's.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Longest `name` filter accepted (a regex with `use_regex=true`).
pub const MAX_NAME_FILTER: usize = 4096;

/// Apply the list query options RabbitMQ's list endpoints take: `columns`,
/// `sort` (a dotted field) and `sort_reverse`; and, when `page` is given,
/// its pagination: `name` keeps the rows whose `name` contains it (a
/// case-insensitive substring, or a regex with `use_regex=true`), then the
/// rows are sorted and cut to page `page` of `page_size` (at most
/// [`MAX_PAGE_SIZE`]), answered as `{"filtered_count", "item_count",
/// "items", "page", "page_count", "page_size", "total_count"}`.
pub fn shape_list(mut rows: Vec<Value>, query: &[(String, String)]) -> Result<Value, ApiError> {
    let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let page = match get("page") {
        None => None,
        Some(p) => Some(p.parse::<usize>().ok().filter(|&p| p >= 1).ok_or_else(|| {
            ApiError::bad_request(format!("page must be a number from 1 up, not {p:?}"))
        })?),
    };
    let total = rows.len();
    if page.is_some() {
        if let Some(name) = get("name").filter(|n| !n.is_empty()) {
            let keep = name_filter(name, get("use_regex") == Some("true"))?;
            rows.retain(|r| r.get("name").and_then(Value::as_str).is_some_and(&keep));
        }
    }
    if let Some(field) = get("sort").filter(|s| !s.is_empty()) {
        rows.sort_by(|a, b| cmp_values(lookup(a, field), lookup(b, field)));
    }
    if get("sort_reverse") == Some("true") {
        rows.reverse();
    }
    let paged = match page {
        None => None,
        Some(page) => {
            let size = match get("page_size") {
                None => DEFAULT_PAGE_SIZE,
                Some(s) => s
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| (1..=MAX_PAGE_SIZE).contains(&n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "page_size must be a number from 1 to {MAX_PAGE_SIZE}, not {s:?}"
                        ))
                    })?,
            };
            let filtered = rows.len();
            let pages = filtered.div_ceil(size);
            if page > pages.max(1) {
                return Err(ApiError::bad_request(format!(
                    "Page out of range: page {page} of {pages}"
                )));
            }
            rows = rows
                .into_iter()
                .skip((page - 1) * size)
                .take(size)
                .collect();
            Some((page, size, filtered, pages))
        }
    };
    if let Some(cols) = get("columns").filter(|s| !s.is_empty()) {
        let cols: Vec<&str> = cols.split(',').collect();
        rows = rows.iter().map(|r| pick(r, &cols)).collect();
    }
    Ok(match paged {
        None => Value::Array(rows),
        Some((page, size, filtered, pages)) => json!({
            "filtered_count": filtered,
            "item_count": rows.len(),
            "items": rows,
            "page": page,
            "page_count": pages,
            "page_size": size,
            "total_count": total,
        }),
    })
}

/// Whether a row's name passes a pagination `name` filter.
type NameTest = Box<dyn Fn(&str) -> bool>;

/// The test of a pagination `name` filter: a case-insensitive substring,
/// or (with `use_regex`) a regex, unanchored as RabbitMQ's.
fn name_filter(name: &str, regex: bool) -> Result<NameTest, ApiError> {
    if name.len() > MAX_NAME_FILTER {
        return Err(ApiError::bad_request(format!(
            "name filter longer than {MAX_NAME_FILTER} bytes"
        )));
    }
    if !regex {
        let needle = name.to_lowercase();
        return Ok(Box::new(move |s: &str| s.to_lowercase().contains(&needle)));
    }
    let re = regex_automata::meta::Regex::new(name)
        .map_err(|e| ApiError::bad_request(format!("invalid name regex {name:?}: {e}")))?;
    Ok(Box::new(move |s: &str| re.is_match(s)))
}

/// Apply `columns` to a single object (`show overview`).
pub fn shape_one(v: Value, query: &[(String, String)]) -> Value {
    match query.iter().find(|(n, _)| n == "columns") {
        Some((_, cols)) if !cols.is_empty() => pick(&v, &cols.split(',').collect::<Vec<_>>()),
        _ => v,
    }
}

fn cmp_values(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        _ => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pagination_filters_sorts_and_cuts_as_rabbitmq() {
        let rows: Vec<Value> = ["orders", "Orders.dlq", "mail", "ORDERS.retry", "audit"]
            .iter()
            .enumerate()
            .map(|(i, n)| json!({"name": n, "messages": i}))
            .collect();
        // Without `page`: a plain list, `name` ignored.
        let plain = shape_list(rows.clone(), &q(&[("name", "orders")])).unwrap();
        assert_eq!(plain.as_array().unwrap().len(), 5);
        let p = shape_list(
            rows.clone(),
            &q(&[
                ("page", "2"),
                ("page_size", "2"),
                ("name", "orders"),
                ("sort", "name"),
            ]),
        )
        .unwrap();
        assert_eq!(p["total_count"], 5);
        assert_eq!(p["filtered_count"], 3);
        assert_eq!(p["page_count"], 2);
        assert_eq!(p["page"], 2);
        assert_eq!(p["page_size"], 2);
        assert_eq!(p["item_count"], 1);
        assert_eq!(p["items"][0]["name"], "orders");
        let r = shape_list(
            rows.clone(),
            &q(&[
                ("page", "1"),
                ("name", "^(mail|audit)$"),
                ("use_regex", "true"),
                ("columns", "name"),
            ]),
        )
        .unwrap();
        assert_eq!(r["items"], json!([{"name": "mail"}, {"name": "audit"}]));
        assert_eq!(r["page_size"], DEFAULT_PAGE_SIZE);
        // Page 1 of nothing is an empty page; past the end, a bad request.
        let none = shape_list(vec![], &q(&[("page", "1")])).unwrap();
        assert_eq!(
            (none["page_count"].clone(), none["item_count"].clone()),
            (json!(0), json!(0))
        );
        for bad in [
            q(&[("page", "4"), ("page_size", "2")]),
            q(&[("page", "0")]),
            q(&[("page", "x")]),
            q(&[("page", "1"), ("page_size", "501")]),
            q(&[("page", "1"), ("name", "("), ("use_regex", "true")]),
        ] {
            let e = shape_list(rows.clone(), &bad).unwrap_err();
            assert_eq!(e.status, hyper::StatusCode::BAD_REQUEST, "{bad:?}");
        }
    }

    #[test]
    fn tables_round_trip_through_json() {
        let v = json!({"x-max-length": 10, "s": "text", "b": true, "nested": {"a": [1, "two"]}});
        let t = json_to_table(&v, "arguments").unwrap();
        assert_eq!(table_to_json(&t), v);
    }

    #[test]
    fn columns_pick_nested_fields() {
        let v = json!({"a": 1, "q": {"m": 2, "n": 3}});
        let shaped = shape_one(v, &[("columns".into(), "q.m".into())]);
        assert_eq!(shaped, json!({"q": {"m": 2}}));
    }

    #[test]
    fn long_property_strings_are_errors_not_panics() {
        let long = "x".repeat(300);
        let e = json_to_props(&json!({"message_id": long})).unwrap_err();
        assert!(e.contains("message_id"), "{e}");
        let e = json_to_props(&json!({"colour": "red"})).unwrap_err();
        assert!(e.contains("colour"), "{e}");
    }
}
