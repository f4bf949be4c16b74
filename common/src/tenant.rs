//! The tenant of a request: `X-Scope-OrgID`, as Cortex and Mimir name it.

use axum::http::HeaderMap;

/// The header that names the tenant.
pub const TENANT_HEADER: &str = "X-Scope-OrgID";

/// The tenant a request belongs to: its `X-Scope-OrgID` header, or
/// `default` when the header is missing, empty or not text.
pub fn tenant_of(headers: &HeaderMap, default: &str) -> String {
    headers.get(TENANT_HEADER).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()).unwrap_or(default).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_or_default() {
        let mut h = HeaderMap::new();
        assert_eq!(tenant_of(&h, "anonymous"), "anonymous");
        h.insert(TENANT_HEADER, "".parse().expect("header"));
        assert_eq!(tenant_of(&h, "anonymous"), "anonymous");
        h.insert(TENANT_HEADER, "team-a".parse().expect("header"));
        assert_eq!(tenant_of(&h, "anonymous"), "team-a");
    }
}
