//! Config history on both catalog backends: versions record added/modified/deleted keys, identical
//! configurations are not new versions, pages go newest first, and the diff survives reopening.

mod common;

use common::{Backend, TestEnv};
use meshlens_store::Store;
use meshlens_store::config_history::{ConfigHistory, Digests, Recorded, content_hash};

fn digests(pairs: &[(&str, &str)]) -> Digests {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

async fn records_changes_and_pages(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let store = Store::open(env.config()).await.unwrap();
    let history = ConfigHistory::new(store.catalog().clone());
    assert_eq!(history.latest_version().await.unwrap(), None);

    let first = digests(&[("Service default/a", "h1"), ("Pod default/p", "h2")]);
    let Recorded::New(v1) = history.record("files", &first).await.unwrap() else { panic!("first is new") };
    assert_eq!(v1.changes.added, ["Pod default/p", "Service default/a"]);
    assert_eq!((v1.resource_count, v1.source.as_str()), (2, "files"));
    assert_eq!(v1.content_hash, content_hash(&first));

    let Recorded::Unchanged(same) = history.record("kube", &first).await.unwrap() else { panic!("unchanged") };
    assert_eq!(same.id, v1.id);

    let second = digests(&[("Service default/a", "h1b"), ("VirtualService default/r", "h3")]);
    let Recorded::New(v2) = history.record("kube", &second).await.unwrap() else { panic!("second is new") };
    assert!(v2.id > v1.id);
    assert_eq!(v2.changes.added, ["VirtualService default/r"]);
    assert_eq!(v2.changes.modified, ["Service default/a"]);
    assert_eq!(v2.changes.deleted, ["Pod default/p"]);
    assert!(v2.recorded_at >= v1.recorded_at);

    let page = history.list(1, None).await.unwrap();
    assert_eq!(page.iter().map(|v| v.id).collect::<Vec<_>>(), [v2.id]);
    let next = history.list(1, Some(v2.id)).await.unwrap();
    assert_eq!(next.as_slice(), std::slice::from_ref(&v1));
    assert!(history.list(10, Some(v1.id)).await.unwrap().is_empty());
    assert_eq!(history.get(v2.id).await.unwrap().as_ref(), Some(&v2));

    // A new process diffs against what the last version left in `config_resources`.
    store.close().await.unwrap();
    let store = Store::open(env.config()).await.unwrap();
    let history = ConfigHistory::new(store.catalog().clone());
    let Recorded::Unchanged(after_restart) = history.record("kube", &second).await.unwrap() else {
        panic!("the same configuration after a restart is not a new version")
    };
    assert_eq!(after_restart.id, v2.id);
    let third = digests(&[("VirtualService default/r", "h3")]);
    let Recorded::New(v3) = history.record("kube", &third).await.unwrap() else { panic!("third is new") };
    assert_eq!(v3.changes.deleted, ["Service default/a"]);
    assert!(v3.changes.added.is_empty() && v3.changes.modified.is_empty());
    store.close().await.unwrap();
    env.cleanup().await;
}

async fn large_configurations_record_in_chunks(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let store = Store::open(env.config()).await.unwrap();
    let history = ConfigHistory::new(store.catalog().clone());
    let many: Digests = (0..1_234).map(|i| (format!("Pod ns/p{i:04}"), format!("h{i}"))).collect();
    let v1 = history.record("kube", &many).await.unwrap();
    assert_eq!(v1.version().changes.added.len(), 1_234);
    let fewer: Digests = many.iter().skip(600).map(|(k, v)| (k.clone(), v.clone())).collect();
    let Recorded::New(v2) = history.record("kube", &fewer).await.unwrap() else { panic!("new") };
    assert_eq!(v2.changes.deleted.len(), 600);
    store.close().await.unwrap();
    let store = Store::open(env.config()).await.unwrap();
    let history = ConfigHistory::new(store.catalog().clone());
    assert!(matches!(history.record("kube", &fewer).await.unwrap(), Recorded::Unchanged(_)));
    store.close().await.unwrap();
    env.cleanup().await;
}

on_both_backends!(records_changes_and_pages, large_configurations_record_in_chunks);
