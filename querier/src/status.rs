//! `/api/v1/status/buildinfo` and `/api/v1/status/flags`, in Prometheus'
//! JSON shape.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::api::ApiState;
use crate::json::{success_body, write_str};

/// The `data` of `/api/v1/status/buildinfo`: Prometheus' fields, in its
/// order, describing this build (`goVersion` names the Rust toolchain
/// family, there being no Go).
pub fn buildinfo_json() -> String {
    let fields = [
        ("version", env!("CARGO_PKG_VERSION")),
        ("revision", option_env!("STRATA_REVISION").unwrap_or("unknown")),
        ("branch", option_env!("STRATA_BRANCH").unwrap_or("unknown")),
        ("buildUser", option_env!("STRATA_BUILD_USER").unwrap_or("unknown")),
        ("buildDate", option_env!("STRATA_BUILD_DATE").unwrap_or("unknown")),
        ("goVersion", concat!("rust (strata ", env!("CARGO_PKG_VERSION"), ")")),
    ];
    object(fields.iter().map(|(k, v)| (*k, *v)))
}

fn object<'a>(fields: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in fields.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(&mut out, k);
        out.push(':');
        write_str(&mut out, v);
    }
    out.push('}');
    out
}

fn json(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `GET /api/v1/status/buildinfo`.
pub(crate) async fn buildinfo() -> Response {
    json(success_body(&buildinfo_json(), &[], &[]))
}

/// `GET /api/v1/status/flags`: the process' flags, sorted by name.
pub(crate) async fn flags(State(state): State<ApiState>) -> Response {
    let data = object(state.deps.flags.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    json(success_body(&data, &[], &[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildinfo_has_prometheus_fields_in_order() {
        let b = buildinfo_json();
        let keys = ["\"version\"", "\"revision\"", "\"branch\"", "\"buildUser\"", "\"buildDate\"", "\"goVersion\""];
        let pos: Vec<usize> = keys.iter().map(|k| b.find(k).expect("field present")).collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{b}");
        assert!(b.starts_with(&format!("{{\"version\":\"{}\"", env!("CARGO_PKG_VERSION"))));
    }
}
