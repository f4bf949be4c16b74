//! `/api/v1/parse_query`'s JSON: a PromQL AST in the shape Prometheus 3's
//! `translateAST` gives its UI (objects with sorted keys, durations in
//! milliseconds), built from `promql-parser`'s AST.
//!
//! Where the two ASTs differ: `promql-parser` folds unary `+` away (Prometheus
//! keeps a `unaryExpr` with op `+`), and experimental fields of later
//! Prometheus releases (`anchored`, `smoothed`, `fillValues`,
//! `alignEvalTime`) are not emitted.

use std::fmt::Write;
use std::time::SystemTime;

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{AtModifier, Expr, LabelModifier, Offset, VectorMatchCardinality, VectorSelector};

use crate::json::write_str;

/// A JSON value whose objects are written with sorted keys, as Go's
/// `encoding/json` writes maps.
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(&'static str, Json)>),
}

impl Json {
    fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Json::Str(s) => write_str(out, s),
            Json::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
            Json::Obj(fields) => {
                let mut sorted: Vec<&(&str, Json)> = fields.iter().collect();
                sorted.sort_by_key(|(k, _)| *k);
                out.push('{');
                for (i, (k, v)) in sorted.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(out, k);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

fn str_list<S: AsRef<str>>(items: &[S]) -> Json {
    Json::Arr(items.iter().map(|s| Json::Str(s.as_ref().to_owned())).collect())
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn offset_ms(o: Option<&Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => millis(*d),
        Some(Offset::Neg(d)) => -millis(*d),
    }
}

/// `(timestamp, startOrEnd)` of an `@` modifier.
fn at_fields(at: Option<&AtModifier>) -> (Json, Json) {
    match at {
        None => (Json::Null, Json::Null),
        Some(AtModifier::Start) => (Json::Null, Json::Str("start".into())),
        Some(AtModifier::End) => (Json::Null, Json::Str("end".into())),
        Some(AtModifier::At(t)) => {
            let ms = match t.duration_since(SystemTime::UNIX_EPOCH) {
                Ok(d) => millis(d),
                Err(e) => -millis(e.duration()),
            };
            (Json::Int(ms), Json::Null)
        }
    }
}

fn matcher_json(m: &Matcher) -> Json {
    let op = match m.op {
        MatchOp::Equal => "=",
        MatchOp::NotEqual => "!=",
        MatchOp::Re(_) => "=~",
        MatchOp::NotRe(_) => "!~",
    };
    Json::Obj(vec![
        ("name", Json::Str(m.name.clone())),
        ("type", Json::Str(op.into())),
        ("value", Json::Str(m.value.clone())),
    ])
}

/// The selector's matchers as Prometheus lists them: the metric name (when
/// written outside the braces) first, then the matchers in the braces.
fn matchers_json(vs: &VectorSelector) -> Json {
    let mut out = Vec::new();
    if let Some(name) = &vs.name {
        let inside = vs.matchers.matchers.iter().any(|m| m.name == "__name__" && m.value == *name);
        if !inside {
            out.push(Json::Obj(vec![
                ("name", Json::Str("__name__".into())),
                ("type", Json::Str("=".into())),
                ("value", Json::Str(name.clone())),
            ]));
        }
    }
    out.extend(vs.matchers.matchers.iter().map(matcher_json));
    Json::Arr(out)
}

/// The name Prometheus' AST carries: only a name written outside braces.
fn selector_name(vs: &VectorSelector) -> Json {
    let inside = vs.matchers.matchers.iter().any(|m| m.name == "__name__");
    match &vs.name {
        Some(n) if !inside => Json::Str(n.clone()),
        _ => Json::Str(String::new()),
    }
}

fn value_type(t: ValueType) -> Json {
    Json::Str(t.to_string())
}

fn translate(e: &Expr) -> Json {
    match e {
        Expr::Aggregate(a) => {
            let (grouping, without) = match &a.modifier {
                Some(LabelModifier::Include(l)) => (str_list(&l.labels), false),
                Some(LabelModifier::Exclude(l)) => (str_list(&l.labels), true),
                None => (Json::Arr(Vec::new()), false),
            };
            Json::Obj(vec![
                ("type", Json::Str("aggregation".into())),
                ("op", Json::Str(a.op.to_string())),
                ("expr", translate(&a.expr)),
                ("param", a.param.as_deref().map_or(Json::Null, translate)),
                ("grouping", grouping),
                ("without", Json::Bool(without)),
            ])
        }
        Expr::Unary(u) => Json::Obj(vec![
            ("type", Json::Str("unaryExpr".into())),
            ("op", Json::Str("-".into())),
            ("expr", translate(&u.expr)),
        ]),
        Expr::Binary(b) => {
            let both_vectors = b.lhs.value_type() == ValueType::Vector && b.rhs.value_type() == ValueType::Vector;
            let matching = if both_vectors {
                let m = b.modifier.as_ref();
                let card = match m.map(|m| &m.card) {
                    Some(VectorMatchCardinality::ManyToOne(_)) => "many-to-one",
                    Some(VectorMatchCardinality::OneToMany(_)) => "one-to-many",
                    Some(VectorMatchCardinality::ManyToMany) => "many-to-many",
                    _ if b.op.is_set_operator() => "many-to-many",
                    _ => "one-to-one",
                };
                let (labels, on) = match m.and_then(|m| m.matching.as_ref()) {
                    Some(LabelModifier::Include(l)) => (str_list(&l.labels), true),
                    Some(LabelModifier::Exclude(l)) => (str_list(&l.labels), false),
                    None => (Json::Arr(Vec::new()), false),
                };
                let include = m.and_then(|m| m.card.labels()).map_or(Json::Arr(Vec::new()), |l| str_list(&l.labels));
                Json::Obj(vec![
                    ("card", Json::Str(card.into())),
                    ("labels", labels),
                    ("on", Json::Bool(on)),
                    ("include", include),
                ])
            } else {
                Json::Null
            };
            Json::Obj(vec![
                ("type", Json::Str("binaryExpr".into())),
                ("op", Json::Str(b.op.to_string())),
                ("lhs", translate(&b.lhs)),
                ("rhs", translate(&b.rhs)),
                ("matching", matching),
                ("bool", Json::Bool(b.return_bool())),
            ])
        }
        Expr::Paren(p) => Json::Obj(vec![("type", Json::Str("parenExpr".into())), ("expr", translate(&p.expr))]),
        Expr::Subquery(s) => {
            let (timestamp, start_or_end) = at_fields(s.at.as_ref());
            Json::Obj(vec![
                ("type", Json::Str("subquery".into())),
                ("expr", translate(&s.expr)),
                ("range", Json::Int(millis(s.range))),
                ("offset", Json::Int(offset_ms(s.offset.as_ref()))),
                ("step", Json::Int(s.step.map_or(0, millis))),
                ("timestamp", timestamp),
                ("startOrEnd", start_or_end),
            ])
        }
        Expr::NumberLiteral(n) => {
            let val = if n.val.is_nan() {
                "NaN".to_owned()
            } else if n.val == f64::INFINITY {
                "+Inf".to_owned()
            } else if n.val == f64::NEG_INFINITY {
                "-Inf".to_owned()
            } else {
                n.val.to_string()
            };
            Json::Obj(vec![("type", Json::Str("numberLiteral".into())), ("val", Json::Str(val))])
        }
        Expr::StringLiteral(s) => {
            Json::Obj(vec![("type", Json::Str("stringLiteral".into())), ("val", Json::Str(s.val.clone()))])
        }
        Expr::VectorSelector(vs) => {
            let (timestamp, start_or_end) = at_fields(vs.at.as_ref());
            Json::Obj(vec![
                ("type", Json::Str("vectorSelector".into())),
                ("name", selector_name(vs)),
                ("offset", Json::Int(offset_ms(vs.offset.as_ref()))),
                ("matchers", matchers_json(vs)),
                ("timestamp", timestamp),
                ("startOrEnd", start_or_end),
            ])
        }
        Expr::MatrixSelector(ms) => {
            let vs = &ms.vs;
            let (timestamp, start_or_end) = at_fields(vs.at.as_ref());
            Json::Obj(vec![
                ("type", Json::Str("matrixSelector".into())),
                ("name", selector_name(vs)),
                ("range", Json::Int(millis(ms.range))),
                ("offset", Json::Int(offset_ms(vs.offset.as_ref()))),
                ("matchers", matchers_json(vs)),
                ("timestamp", timestamp),
                ("startOrEnd", start_or_end),
            ])
        }
        Expr::Call(c) => Json::Obj(vec![
            ("type", Json::Str("call".into())),
            (
                "func",
                Json::Obj(vec![
                    ("name", Json::Str(c.func.name.to_owned())),
                    ("argTypes", Json::Arr(c.func.arg_types.iter().map(|t| value_type(*t)).collect())),
                    ("variadic", Json::Int(i64::from(c.func.variadic))),
                    ("returnType", value_type(c.func.return_type)),
                ]),
            ),
            ("args", Json::Arr(c.args.args.iter().map(|a| translate(a)).collect())),
        ]),
        Expr::Extension(_) => Json::Null,
    }
}

/// The `data` of a `parse_query` response for `expr`.
pub fn ast_json(expr: &Expr) -> String {
    let mut out = String::with_capacity(256);
    translate(expr).write(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ast(q: &str) -> String {
        ast_json(&promql_parser::parser::parse(q).expect("parses"))
    }

    #[test]
    fn vector_selector_like_prometheus() {
        assert_eq!(
            ast(r#"up{job="a<b"} offset 5m"#),
            r#"{"matchers":[{"name":"__name__","type":"=","value":"up"},{"name":"job","type":"=","value":"a\u003cb"}],"name":"up","offset":300000,"startOrEnd":null,"timestamp":null,"type":"vectorSelector"}"#
        );
    }

    #[test]
    fn aggregation_call_and_matrix() {
        assert_eq!(
            ast("sum by (job) (rate(x[5m] @ 10))"),
            concat!(
                r#"{"expr":{"args":[{"matchers":[{"name":"__name__","type":"=","value":"x"}],"name":"x","offset":0,"range":300000,"startOrEnd":null,"timestamp":10000,"type":"matrixSelector"}],"#,
                r#""func":{"argTypes":["matrix"],"name":"rate","returnType":"vector","variadic":0},"type":"call"},"#,
                r#""grouping":["job"],"op":"sum","param":null,"type":"aggregation","without":false}"#
            )
        );
    }

    #[test]
    fn binary_matching_and_literals() {
        assert_eq!(
            ast("a * on (i) group_left (n) b"),
            concat!(
                r#"{"bool":false,"lhs":{"matchers":[{"name":"__name__","type":"=","value":"a"}],"name":"a","offset":0,"startOrEnd":null,"timestamp":null,"type":"vectorSelector"},"#,
                r#""matching":{"card":"many-to-one","include":["n"],"labels":["i"],"on":true},"op":"*","#,
                r#""rhs":{"matchers":[{"name":"__name__","type":"=","value":"b"}],"name":"b","offset":0,"startOrEnd":null,"timestamp":null,"type":"vectorSelector"},"type":"binaryExpr"}"#
            )
        );
        assert_eq!(
            ast("1 > bool 0.5"),
            r#"{"bool":true,"lhs":{"type":"numberLiteral","val":"1"},"matching":null,"op":"\u003e","rhs":{"type":"numberLiteral","val":"0.5"},"type":"binaryExpr"}"#
        );
        assert!(ast("a and b").contains(r#""card":"many-to-many""#));
    }

    #[test]
    fn subquery_and_paren() {
        assert_eq!(
            ast(r#"(max_over_time(x[10m:1m] @ end()))"#),
            concat!(
                r#"{"expr":{"args":[{"expr":{"matchers":[{"name":"__name__","type":"=","value":"x"}],"name":"x","offset":0,"startOrEnd":null,"timestamp":null,"type":"vectorSelector"},"#,
                r#""offset":0,"range":600000,"startOrEnd":"end","step":60000,"timestamp":null,"type":"subquery"}],"#,
                r#""func":{"argTypes":["matrix"],"name":"max_over_time","returnType":"vector","variadic":0},"type":"call"},"type":"parenExpr"}"#
            )
        );
    }
}
