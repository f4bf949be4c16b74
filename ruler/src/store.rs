//! Rule groups created through the rules API, kept in object storage:
//! one object per tenant and namespace, `<hex(tenant)>/<hex(namespace)>.json`,
//! holding the groups' YAML as posted (`{"groups": ["<yaml>", ...]}`).
//! Names are hex-encoded so any tenant or namespace is a valid path.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::RulerError;

/// The groups of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredNamespace {
    /// The tenant.
    pub tenant: String,
    /// The namespace.
    pub namespace: String,
    /// Each group's YAML, in order.
    pub groups: Vec<String>,
}

/// Rule groups in object storage.
#[derive(Debug, Clone)]
pub struct RuleStore {
    store: Arc<dyn ObjectStore>,
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

fn path(tenant: &str, namespace: &str) -> Path {
    Path::from(format!("{}/{}.json", hex(tenant), hex(namespace)))
}

fn store_err(e: impl std::fmt::Display) -> RulerError {
    RulerError::Store(e.to_string())
}

impl RuleStore {
    /// Rule groups kept in `store`.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store }
    }

    /// Every stored namespace of every tenant.
    pub async fn list_all(&self) -> Result<Vec<StoredNamespace>, RulerError> {
        let metas: Vec<object_store::ObjectMeta> = self.store.list(None).try_collect().await.map_err(store_err)?;
        let mut out = Vec::new();
        for m in metas {
            let parts: Vec<_> = m.location.parts().collect();
            let [t, f] = parts.as_slice() else { continue };
            let Some(ns_hex) = f.as_ref().strip_suffix(".json") else { continue };
            let (Some(tenant), Some(namespace)) = (unhex(t.as_ref()), unhex(ns_hex)) else { continue };
            if let Some(groups) = self.get(&tenant, &namespace).await? {
                out.push(StoredNamespace { tenant, namespace, groups });
            }
        }
        out.sort_by(|a, b| (&a.tenant, &a.namespace).cmp(&(&b.tenant, &b.namespace)));
        Ok(out)
    }

    /// The namespaces of one tenant.
    pub async fn list_tenant(&self, tenant: &str) -> Result<Vec<StoredNamespace>, RulerError> {
        Ok(self.list_all().await?.into_iter().filter(|n| n.tenant == tenant).collect())
    }

    /// One namespace's groups (`None` when it does not exist).
    pub async fn get(&self, tenant: &str, namespace: &str) -> Result<Option<Vec<String>>, RulerError> {
        match self.store.get(&path(tenant, namespace)).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(store_err)?;
                let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(store_err)?;
                let groups = v["groups"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|g| g.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                Ok(Some(groups))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_err(e)),
        }
    }

    /// Replaces a namespace's groups (deletes it when `groups` is empty).
    pub async fn put(&self, tenant: &str, namespace: &str, groups: &[String]) -> Result<(), RulerError> {
        if groups.is_empty() {
            return self.delete(tenant, namespace).await;
        }
        let body = serde_json::json!({ "groups": groups }).to_string();
        self.store.put(&path(tenant, namespace), PutPayload::from(body.into_bytes())).await.map_err(store_err)?;
        Ok(())
    }

    /// Deletes a namespace.
    pub async fn delete(&self, tenant: &str, namespace: &str) -> Result<(), RulerError> {
        match self.store.delete(&path(tenant, namespace)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_err(e)),
        }
    }
}

/// An object store on local disk under `dir` (created when missing), as
/// `strata standalone` keeps API rule groups under `<storage.path>/rules`.
pub fn local_store(dir: &std::path::Path) -> Result<Arc<dyn ObjectStore>, RulerError> {
    std::fs::create_dir_all(dir).map_err(|e| RulerError::Store(format!("creating {}: {e}", dir.display())))?;
    let fs = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(store_err)?;
    Ok(Arc::new(fs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        assert_eq!(unhex(&hex("team/a b")).as_deref(), Some("team/a b"));
        assert_eq!(unhex("zz"), None);
    }

    #[tokio::test]
    async fn put_get_list_delete() {
        let dir = tempfile::tempdir().expect("tmp");
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).expect("fs");
        let s = RuleStore::new(Arc::new(fs));
        s.put("t", "ns/1", &["name: g\nrules: []\n".to_owned()]).await.expect("put");
        assert_eq!(s.get("t", "ns/1").await.expect("get"), Some(vec!["name: g\nrules: []\n".to_owned()]));
        let all = s.list_all().await.expect("list");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].namespace, "ns/1");
        s.delete("t", "ns/1").await.expect("delete");
        assert_eq!(s.get("t", "ns/1").await.expect("get"), None);
    }
}
